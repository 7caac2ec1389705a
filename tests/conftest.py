"""Shared test fixtures: where the read-only regression data (``shared/``) lives."""

import os
from pathlib import Path
from typing import Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``$SPACY_ELMO_SHARED``, else ``<repo>/../shared``; the data is never copied into the repo."""
    return Path(os.environ.get("SPACY_ELMO_SHARED") or REPO_ROOT.parent / "shared")


def _unavailable(reason: str) -> None:
    """Skip locally, but fail in CI (``SPACY_ELMO_REQUIRE_SHARED=1``) so data tests cannot silently vanish."""
    if os.environ.get("SPACY_ELMO_REQUIRE_SHARED") == "1":
        pytest.fail(f"{reason} (SPACY_ELMO_REQUIRE_SHARED=1 requires it)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared data folder; skips (or fails in CI) when it is missing."""
    path = shared_dir()
    if not path.is_dir():
        _unavailable(f"shared test data not found at {path}; set SPACY_ELMO_SHARED to its location")
    return path


@pytest.fixture(scope="session")
def fixture_model(shared: Path) -> Tuple[Path, Path]:
    """(options.json, lm_weights.hdf5) of AllenNLP's tiny ELMo test model."""
    folder = shared / "fixtures" / "allennlp_elmo"
    options_path, weights_path = folder / "options.json", folder / "lm_weights.hdf5"
    for path in (options_path, weights_path):
        if not path.is_file():
            _unavailable(f"fixture file not found: {path}")
    return options_path, weights_path


@pytest.fixture(scope="session")
def fixture_sentences(shared: Path):
    """The fixture's 3 streams of 10 whitespace-tokenised sentences."""
    import json

    streams = json.loads((shared / "fixtures" / "allennlp_elmo" / "sentences.json").read_text(encoding="utf-8"))
    return [[sentence.split() for sentence in stream] for stream in streams]


@pytest.fixture()
def model_dir(fixture_model, tmp_path: Path) -> Path:
    """A private copy of the fixture model as a directory (options.json + weights.hdf5)."""
    import shutil

    options_path, weights_path = fixture_model
    folder = tmp_path / "fixture-model"
    folder.mkdir()
    shutil.copy(options_path, folder / "options.json")
    shutil.copy(weights_path, folder / "weights.hdf5")
    return folder
