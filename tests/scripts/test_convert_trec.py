"""scripts/convert_trec.py: TREC-6 docs, and a dev split held out from train that no line order changes."""

import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import spacy
from spacy.tokens import DocBin

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "convert_trec.py"
spec = importlib.util.spec_from_file_location("convert_trec", SCRIPT)
convert_trec = importlib.util.module_from_spec(spec)
spec.loader.exec_module(convert_trec)


def _docs(path: Path):
    return list(DocBin().from_disk(path).get_docs(spacy.blank("en").vocab))


def _write(folder: Path, train_lines, test_lines) -> Path:
    folder.mkdir()
    (folder / "train_5500.label").write_bytes(("\n".join(train_lines) + "\n").encode("latin-1"))
    (folder / "TREC_10.label").write_bytes(("\n".join(test_lines) + "\n").encode("latin-1"))
    return folder


def test_questions_become_coarse_one_hot_docs_and_dev_is_held_out(tmp_path: Path) -> None:
    labels = convert_trec.LABELS
    train = [f"{labels[i % 6]}:x Question number {i} about sister\u00f0city ?" for i in range(620)]
    source = _write(tmp_path / "trec", train, ["HUM:ind Who was Galileo ?"])
    done = subprocess.run([sys.executable, str(SCRIPT), str(source), str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    train_docs, dev_docs = _docs(tmp_path / "out" / "trec_train.spacy"), _docs(tmp_path / "out" / "trec_dev.spacy")
    (test_doc,) = _docs(tmp_path / "out" / "trec_test.spacy")
    assert [t.text for t in test_doc] == ["Who", "was", "Galileo", "?"]
    assert test_doc.cats == {"ABBR": 0.0, "DESC": 0.0, "ENTY": 0.0, "HUM": 1.0, "LOC": 0.0, "NUM": 0.0}
    assert (len(train_docs), len(dev_docs)) == (120, convert_trec.DEV_SIZE)
    assert {d.text for d in train_docs}.isdisjoint(d.text for d in dev_docs)
    assert "sister\u00f0city" in train_docs[0].text or "sister\u00f0city" in dev_docs[0].text


def test_the_dev_split_does_not_depend_on_line_order() -> None:
    questions = [(convert_trec.LABELS[i % 6], f"question {i} ?") for i in range(900)]
    _, dev = convert_trec.split_dev(questions)
    shuffled = list(questions)
    random.Random(1).shuffle(shuffled)
    _, dev_shuffled = convert_trec.split_dev(shuffled)
    assert sorted(dev) == sorted(dev_shuffled) and len(dev) == convert_trec.DEV_SIZE


def test_a_malformed_line_names_the_file_and_line(tmp_path: Path) -> None:
    source = _write(tmp_path / "trec", ["HUM:ind Who ?", "nonsense without a label"], ["HUM:ind Who ?"])
    done = subprocess.run([sys.executable, str(SCRIPT), str(source), str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 1 and "train_5500.label:2" in done.stdout + done.stderr


def test_the_shared_trec_files_give_the_documented_sizes(shared: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(shared / "data" / "textcat" / "trec"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    sizes = {split: len(_docs(tmp_path / "out" / f"trec_{split}.spacy")) for split in ("train", "dev", "test")}
    assert sizes == {"train": 4952, "dev": 500, "test": 500}
