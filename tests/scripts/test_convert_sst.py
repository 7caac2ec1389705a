"""scripts/convert_sst.py: SST lines become one-hot docs with the treebank's escapes undone."""

import subprocess
import sys
from pathlib import Path

import spacy
from spacy.tokens import DocBin

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "convert_sst.py"
LINES = {
    "sst5": ["4\tA -LRB- very -RRB- `` fine '' co-writer\\/director 's film .", "0\tUgh\u00a0. Bad \\* ` so '"],
    "sst2": ["1\tA -LRB- very -RRB- `` fine '' co-writer\\/director 's film ."],
}


def test_escapes_become_characters_and_labels_one_hot(tmp_path: Path) -> None:
    source = tmp_path / "sst"
    source.mkdir()
    for task, lines in LINES.items():
        for split in ("train", "dev", "test"):
            (source / f"{task}_{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(SCRIPT), str(source), str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    docs = list(DocBin().from_disk(tmp_path / "out" / "sst5_dev.spacy").get_docs(spacy.blank("en").vocab))
    assert [t.text for t in docs[0]] == ["A", "(", "very", ")", '"', "fine", '"', "co-writer/director", "'s", "film", "."]
    assert [t.text for t in docs[1]] == ["Ugh\u00a0.", "Bad", "*", "'", "so", "'"]
    assert docs[0].cats == {"very_negative": 0.0, "negative": 0.0, "neutral": 0.0, "positive": 0.0, "very_positive": 1.0}
    assert docs[1].cats["very_negative"] == 1.0


def test_a_bad_label_names_the_file_and_line(tmp_path: Path) -> None:
    source = tmp_path / "sst"
    source.mkdir()
    for task in LINES:
        for split in ("train", "dev", "test"):
            (source / f"{task}_{split}.tsv").write_text("1\tfine .\n7\tbroken .\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(SCRIPT), str(source), str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 1
    assert "sst5_train.tsv:2" in done.stdout + done.stderr
