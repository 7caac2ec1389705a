"""scripts/lm_sentences.py: paragraphs tokenised once read back as the same sentences."""

import gzip
import subprocess
import sys
from pathlib import Path

from spacy_elmo.pretrain.config import load_config
from spacy_elmo.pretrain.data import SentenceReader

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "lm_sentences.py"
CONFIG = ROOT / "configs" / "pretrain_small.cfg"
PARAGRAPHS = [
    "The cat sat on the mat. It was happy (mostly), wasn't it? Yes.",
    "Too short.",
    " ".join(f"w{i}" for i in range(130)) + ".",
]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


def test_written_sentences_read_back_as_the_paragraph_reader_splits_them(tmp_path: Path) -> None:
    source = tmp_path / "train.00.txt.gz"
    with gzip.open(source, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(PARAGRAPHS) + "\n")
    done = run(str(CONFIG), str(tmp_path / "*.txt.gz"), str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    written = tmp_path / "out" / "train.00.txt"
    expected = list(SentenceReader(load_config(CONFIG).data).sentences([source]))
    read_back = list(SentenceReader(load_config(CONFIG, {"data.format": "sentences"}).data).sentences([written]))
    assert read_back == expected
    assert ["It", "was", "happy", "(", "mostly", ")", ",", "was", "n't", "it", "?"] in expected
    assert [len(s) for s in expected if s[0] == "w0" or s[0] == "w100"] == [100, 31]  # cut at max_sentence_length


def test_an_existing_output_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "valid.txt.gz").write_bytes(gzip.compress(b"One two three four.\n"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "valid.txt").write_text("keep me\n", encoding="utf-8")
    done = run(str(CONFIG), str(tmp_path / "valid.txt.gz"), str(out))
    assert done.returncode != 0
    assert "Not replacing existing files" in done.stdout + done.stderr
    assert (out / "valid.txt").read_text(encoding="utf-8") == "keep me\n"
    (tmp_path / "train.txt.gz").write_bytes(gzip.compress(b"Five six seven eight.\n"))
    done = run(str(CONFIG), str(tmp_path / "*.txt.gz"), str(out), "--skip-done")
    assert done.returncode == 0, done.stderr
    assert (out / "valid.txt").read_text(encoding="utf-8") == "keep me\n"
    assert (out / "train.txt").read_text(encoding="utf-8") == "Five six seven eight .\n"


def test_inputs_that_match_nothing_are_named_as_the_script_names_them(tmp_path: Path) -> None:
    done = run(str(CONFIG), str(tmp_path / "missing-*.txt.gz"), str(tmp_path / "out"))
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "INPUTS:" in output and "matches no file" in output
    assert "--paths.train" not in output and "Traceback" not in output
    assert not (tmp_path / "out").exists()
