"""python -m spacy_elmo config: the package ships the repository's configs and writes them out."""

import subprocess
import sys
from pathlib import Path

import pytest

from spacy_elmo.errors import ElmoError
from spacy_elmo.shipped_configs import DESCRIPTIONS, ElmoConfigNotFoundError, config_names, config_text, write_config

REPO = Path(__file__).resolve().parents[1]


def test_the_package_ships_every_config_of_the_repository():
    assert config_names() == sorted(path.stem for path in (REPO / "configs").glob("*.cfg"))
    for name in config_names():
        assert config_text(name) == (REPO / "configs" / f"{name}.cfg").read_text(encoding="utf-8")


def test_every_shipped_config_is_described_in_the_list():
    assert sorted(DESCRIPTIONS) == config_names()


def test_write_config_keeps_an_existing_file_unless_forced(tmp_path: Path) -> None:
    target = write_config("ner_elmo", tmp_path / "ner.cfg")
    assert target.read_text(encoding="utf-8") == config_text("ner_elmo.cfg")
    target.write_text("mine", encoding="utf-8")
    with pytest.raises(ElmoError, match="--force"):
        write_config("ner_elmo", target)
    assert target.read_text(encoding="utf-8") == "mine"
    write_config("ner_elmo", target, force=True)
    assert target.read_text(encoding="utf-8") == config_text("ner_elmo")
    assert write_config("pretrain_tiny", tmp_path) == tmp_path / "pretrain_tiny.cfg"


def test_an_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ElmoConfigNotFoundError, match="ner_elmo, ner_elmo_vectors, pretrain_small"):
        config_text("ner_bert")


def test_the_command_writes_and_lists(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "spacy_elmo", "config", *args], capture_output=True, text=True, cwd=tmp_path)

    listed = run("--list")
    assert listed.returncode == 0 and all(name in listed.stdout for name in config_names())
    assert run("textcat_elmo", "textcat.cfg").returncode == 0
    assert (tmp_path / "textcat.cfg").read_text(encoding="utf-8") == config_text("textcat_elmo")
    again = run("textcat_elmo", "textcat.cfg")
    assert again.returncode == 1 and "--force" in again.stderr
