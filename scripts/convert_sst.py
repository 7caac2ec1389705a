"""Convert the sentence-level SST-5 and SST-2 TSVs (``label<TAB>text``) to ``.spacy`` files.

Each line becomes one Doc whose ``cats`` hold every class of the task, 1.0 for the gold
class and 0.0 for the others (exclusive classes, as the textcat configs expect). The text
is PTB-tokenized and contains a no-break space inside one token, so it is split on ``' '``
only (shared/data/README.md, section 3a). The tokens are kept, except that the treebank's
escapes become the characters they stand for (-LRB- -> "(", \\/ -> "/", the quote pairs
`` and '' -> '"', an opening ` -> "'"): running text, which the biLM was trained on and users will annotate, has
the characters, and a biLM reads ``-LRB-`` as an unknown word.
"""

from pathlib import Path
from typing import Dict, List

import spacy
import typer
from spacy.tokens import Doc, DocBin
from wasabi import msg

LABELS: Dict[str, List[str]] = {
    "sst5": ["very_negative", "negative", "neutral", "positive", "very_positive"],
    "sst2": ["negative", "positive"],
}
SPLITS = ("train", "dev", "test")
BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}
PTB_ESCAPES: Dict[str, str] = dict(BRACKETS, **{"``": '"', "''": '"', "`": "'"})


def unescape(token: str) -> str:
    """The text a Penn Treebank token stands for: brackets and quotes from their escapes, ``\\/`` and ``\\*`` unescaped."""
    return PTB_ESCAPES.get(token, token.replace("\\/", "/").replace("\\*", "*"))


def read_tsv(path: Path, labels: List[str], nlp: spacy.Language) -> DocBin:
    """One Doc per line, with one-hot ``cats`` over ``labels`` (the TSV's label is an index into them)."""
    doc_bin = DocBin()
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        label, _, text = line.partition("\t")
        if not label.isdigit() or int(label) >= len(labels) or not text:
            msg.fail(
                f"{path}:{line_no}: expected 'LABEL<TAB>text' with LABEL in 0..{len(labels) - 1}, got {line[:60]!r}", exits=1
            )
        words = [unescape(word) for word in text.split(" ")]
        doc = Doc(nlp.vocab, words=words, spaces=[True] * (len(words) - 1) + [False])
        doc.cats = {name: float(i == int(label)) for i, name in enumerate(labels)}
        doc_bin.add(doc)
    return doc_bin


def main(
    input_dir: Path = typer.Argument(..., help="Folder with sst5_{train,dev,test}.tsv and sst2_*.tsv"),
    output_dir: Path = typer.Argument(..., help="Folder for the .spacy files"),
    lang: str = typer.Option("en", "--lang", help="Language of the blank pipeline whose vocab the docs use"),
) -> None:
    """Write ``{task}_{split}.spacy`` for both tasks and all three splits."""
    paths = {(task, split): input_dir / f"{task}_{split}.tsv" for task in LABELS for split in SPLITS}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        msg.fail(
            f"SST file(s) not found: {', '.join(missing)}",
            "Point the project at your data directory with --vars.data_dir PATH; it must "
            "contain textcat/sst/sst5_{train,dev,test}.tsv and sst2_{train,dev,test}.tsv.",
            exits=1,
        )
    nlp = spacy.blank(lang)
    output_dir.mkdir(parents=True, exist_ok=True)
    for (task, split), path in paths.items():
        doc_bin = read_tsv(path, LABELS[task], nlp)
        doc_bin.to_disk(output_dir / f"{task}_{split}.spacy")
        msg.good(f"{task} {split}: {len(doc_bin)} sentences -> {output_dir / f'{task}_{split}.spacy'}")


if __name__ == "__main__":
    typer.run(main)
