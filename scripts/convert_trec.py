"""Convert TREC question classification (Li & Roth) to ``.spacy`` files, with a fixed dev split.

Input: ``train_5500.label`` and ``TREC_10.label``, one question per line as
``COARSE:fine tokenised question``. Each question becomes one Doc (its tokens split on
whitespace) whose ``cats`` hold the six coarse classes (TREC-6: ABBR, DESC, ENTY, HUM, LOC, NUM),
1.0 for the gold one. The files are Latin-1 (one byte of train is not ASCII).

TREC has no dev set, so one is held out from train, the same on every machine and for any
line order: the ``DEV_SIZE`` questions whose label and text have the smallest SHA-256.
``trec_train.spacy`` holds the rest, ``trec_test.spacy`` the 500 test questions. Model
selection uses dev only.

    python scripts/convert_trec.py DATA/textcat/trec OUT_DIR
"""

import hashlib
from pathlib import Path
from typing import List, Tuple

import spacy
import typer
from spacy.tokens import Doc, DocBin
from wasabi import msg

LABELS = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
FILES = {"train": "train_5500.label", "test": "TREC_10.label"}
DEV_SIZE = 500
"""Questions held out from train for dev: as many as the test set has."""


def read_questions(path: Path) -> List[Tuple[str, str]]:
    """(coarse label, question text) for every line of a TREC file; a malformed line names itself."""
    questions = []
    for line_no, line in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        label, _, text = line.partition(" ")
        coarse = label.split(":", 1)[0]
        if ":" not in label or coarse not in LABELS or not text.strip():
            msg.fail(f"{path}:{line_no}: expected 'COARSE:fine question' with COARSE one of {LABELS}, got {line[:60]!r}", exits=1)
        questions.append((coarse, text.strip()))
    return questions


def split_dev(questions: List[Tuple[str, str]], size: int = DEV_SIZE) -> Tuple[List[Tuple[str, str]], List[Tuple[str, str]]]:
    """(train, dev): dev is the ``size`` questions with the smallest SHA-256 of label and text."""

    def digest(question: Tuple[str, str]) -> str:
        return hashlib.sha256(f"{question[0]} {question[1]}".encode()).hexdigest()

    ranked = sorted(range(len(questions)), key=lambda i: (digest(questions[i]), i))
    dev_ids = set(ranked[:size])
    train = [q for i, q in enumerate(questions) if i not in dev_ids]
    dev = [q for i, q in enumerate(questions) if i in dev_ids]
    return train, dev


def to_doc_bin(questions: List[Tuple[str, str]], nlp: spacy.Language) -> DocBin:
    doc_bin = DocBin()
    for label, text in questions:
        words = text.split()
        doc = Doc(nlp.vocab, words=words, spaces=[True] * (len(words) - 1) + [False])
        doc.cats = {name: float(name == label) for name in LABELS}
        doc_bin.add(doc)
    return doc_bin


def main(
    input_dir: Path = typer.Argument(..., help="Folder with train_5500.label and TREC_10.label"),
    output_dir: Path = typer.Argument(..., help="Folder for trec_{train,dev,test}.spacy"),
    lang: str = typer.Option("en", "--lang", help="Language of the blank pipeline whose vocab the docs use"),
) -> None:
    """Write ``trec_train.spacy``, ``trec_dev.spacy`` (held out from train) and ``trec_test.spacy``."""
    paths = {split: input_dir / name for split, name in FILES.items()}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        msg.fail(
            f"TREC file(s) not found: {', '.join(missing)}",
            "Point the project at your data directory with --vars.data_dir PATH; it must contain "
            "textcat/trec/train_5500.label and textcat/trec/TREC_10.label.",
            exits=1,
        )
    train, dev = split_dev(read_questions(paths["train"]))
    splits = {"train": train, "dev": dev, "test": read_questions(paths["test"])}
    nlp = spacy.blank(lang)
    output_dir.mkdir(parents=True, exist_ok=True)
    for split, questions in splits.items():
        target = output_dir / f"trec_{split}.spacy"
        to_doc_bin(questions, nlp).to_disk(target)
        msg.good(f"trec {split}: {len(questions)} questions -> {target}")


if __name__ == "__main__":
    typer.run(main)
