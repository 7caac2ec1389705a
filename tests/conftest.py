"""Shared test fixtures.

Behaviour tests run on tiny biLMs written here with random weights in the published HDF5
layout (``tiny_model``, ``model_dir``), so they need nothing outside the repository. Only
comparisons with AllenNLP's regression fixtures and checks on real corpora use the
read-only ``shared/`` data (``shared``, ``fixture_model``); they skip without it, or fail
when ``SPACY_ELMO_REQUIRE_SHARED=1``.
"""

import json
import os
import random
import shutil
import threading
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

from spacy_elmo.bilm.options import ElmoOptions
from spacy_elmo.bilm.weights_io import write_weights

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def private_layer_store(tmp_path_factory):
    """Every test (and every ``spacy train`` it starts) stores frozen biLM layers in a
    temporary directory, never in the user's cache; tests that need their own pass a
    ``layer_store_dir``."""
    from spacy_elmo.layers.layer_store import STORE_ENV

    previous = os.environ.get(STORE_ENV)
    os.environ[STORE_ENV] = str(tmp_path_factory.mktemp("layer-store"))
    yield
    if previous is None:
        del os.environ[STORE_ENV]
    else:
        os.environ[STORE_ENV] = previous


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
    streams = json.loads((shared / "fixtures" / "allennlp_elmo" / "sentences.json").read_text(encoding="utf-8"))
    return [[sentence.split() for sentence in stream] for stream in streams]


# ---------------------------------------------------------------------------- tiny biLMs

TINY_OPTIONS = {
    "lstm": {"dim": 32, "projection_dim": 16, "n_layers": 2, "cell_clip": 3, "proj_clip": 3, "use_skip_connections": True},
    "char_cnn": {
        "embedding": {"dim": 4},
        "filters": [[1, 8], [2, 8], [3, 12]],
        "n_highway": 1,
        "activation": "relu",
        "max_characters_per_token": 50,
        "n_characters": 262,
    },
}


def tiny_options(**lstm) -> Dict:
    """``TINY_OPTIONS`` (output width 2P = 32, F = 28 filters) with some ``lstm`` fields changed."""
    options = json.loads(json.dumps(TINY_OPTIONS))
    options["lstm"].update(lstm)
    return options


def random_weights(options: ElmoOptions, seed: int = 0) -> Dict[str, np.ndarray]:
    """Every dataset of the published layout, random with std ~ 1/sqrt(fan-in), so that
    activations keep unit scale and some LSTM cells reach the clip value."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in options.expected_shapes().items():
        if name == "char_embed":
            arrays[name] = rng.uniform(-1.0, 1.0, shape)
        elif len(shape) == 1:
            arrays[name] = rng.normal(-2.0 if name.endswith("b_carry") else 0.0, 0.1, shape)
        else:
            fan_in = int(np.prod(shape[:-1]))
            gain = 2.0 if name.endswith(("W_P_0", "W_proj")) else 1.0
            arrays[name] = rng.normal(0.0, gain / np.sqrt(fan_in), shape)
    return {name: array.astype(np.float32) for name, array in arrays.items()}


def write_tiny_model(folder: Path, options: Dict, seed: int = 0) -> Path:
    """``folder/options.json`` + ``folder/weights.hdf5`` (the package's own writer), returned as a model directory."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "options.json").write_text(json.dumps(options), encoding="utf-8")
    write_weights(folder / "weights.hdf5", random_weights(ElmoOptions.from_dict(options), seed))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Tuple[Path, Path]:
    """(options.json, weights.hdf5) of a random 2-layer biLM with residual connections."""
    folder = write_tiny_model(tmp_path_factory.mktemp("tiny-bilm"), tiny_options())
    return folder / "options.json", folder / "weights.hdf5"


@pytest.fixture(scope="session")
def tiny_model_no_skip(tiny_model, tmp_path_factory) -> Tuple[Path, Path]:
    """The same weights as ``tiny_model``, read without residual connections."""
    folder = tmp_path_factory.mktemp("tiny-bilm-no-skip")
    (folder / "options.json").write_text(json.dumps(tiny_options(use_skip_connections=False)), encoding="utf-8")
    shutil.copy(tiny_model[1], folder / "weights.hdf5")
    return folder / "options.json", folder / "weights.hdf5"


WORDS = (
    "the a of and to in is was for on with as by at from his her their it that this which he she they "
    "river bank money city year people government company market school water music history world "
    "sat ran said found made took gave saw went came wrote built sold grew opened closed "
    "old new small large early late red green quiet famous local national . , ; ? ! 1990 2014 42 "
    "London Paris John Mary Smith Berlin Apple Google Thames Monday"
).split()


@pytest.fixture(scope="session")
def tiny_sentences() -> List[List[List[str]]]:
    """3 streams of 10 tokenised sentences (1-16 tokens, over 64 distinct tokens), like the fixture's."""
    rng = random.Random(0)
    return [[rng.choices(WORDS, k=rng.randint(1, 16)) for _ in range(10)] for _ in range(3)]


@pytest.fixture
def model_dir(tiny_model, tmp_path: Path) -> Path:
    """A private copy of the tiny biLM as a directory (options.json + weights.hdf5)."""
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    shutil.copy(tiny_model[0], folder / "options.json")
    shutil.copy(tiny_model[1], folder / "weights.hdf5")
    return folder


# ---------------------------------------------------------------------------- a tiny annotated corpus

ENTITIES = {
    "PER": ["John Smith", "Mary", "Anna Berg", "Peter", "Li Wei", "Maria Lopez"],
    "LOC": ["London", "Paris", "New York", "Berlin", "Lagos", "Lima"],
    "ORG": ["Google", "Reuters", "Siemens", "the United Nations", "Apple", "Oxfam"],
}
TEMPLATES = [
    "{PER} works for {ORG} in {LOC} .",
    "{ORG} opened an office in {LOC} on Monday .",
    "{PER} met {PER} in {LOC} .",
    "Shares of {ORG} fell 3 percent .",
    "{PER} said the weather in {LOC} was fine , and then {PER} went home early .",
    "After the meeting with {ORG} , {PER} flew from {LOC} to {LOC} on a small plane .",
]


def synthetic_docs(vocab, n: int = 40, seed: int = 0) -> list:
    """``n`` Docs from templates, with entities (PER/LOC/ORG), fine-grained tags (ENT for
    entity tokens, PUNCT, NUM, WORD) and exclusive cats (LONG: more than 10 tokens, else SHORT)."""
    from spacy.tokens import Doc

    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        words, iob, tags = [], [], []
        for piece in rng.choice(TEMPLATES).split():
            if piece.startswith("{"):
                label = piece[1:-1]
                name = rng.choice(ENTITIES[label]).split()
                words += name
                iob += [f"B-{label}"] + [f"I-{label}"] * (len(name) - 1)
                tags += ["ENT"] * len(name)
            else:
                words.append(piece)
                iob.append("O")
                tags.append("PUNCT" if piece in ".," else "NUM" if piece.isdigit() else "WORD")
        doc = Doc(vocab, words=words, ents=iob, tags=tags)
        long = len(doc) > 10
        doc.cats = {"LONG": float(long), "SHORT": float(not long)}
        docs.append(doc)
    return docs


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> Path:
    """``train.spacy``: 40 synthetic docs (see :func:`synthetic_docs`), for NER, tagger and textcat."""
    import spacy
    from spacy.tokens import DocBin

    path = tmp_path_factory.mktemp("synthetic-corpus") / "train.spacy"
    DocBin(docs=synthetic_docs(spacy.blank("en").vocab), store_user_data=True).to_disk(path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    tiny models gain nothing from threads, and on busy shared cores threads that wait for each other cost 10x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_threads(n_threads: int, work) -> None:
    """Run ``work(k)`` in ``n_threads`` threads started together; re-raise the first error here."""
    errors: List[BaseException] = []
    start = threading.Barrier(n_threads)

    def target(k: int) -> None:
        try:
            start.wait()
            work(k)
        except BaseException as err:  # re-raised in the main thread
            errors.append(err)

    threads = [threading.Thread(target=target, args=(k,)) for k in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@pytest.fixture(scope="session")
def floret_vectors(tmp_path_factory) -> Path:
    """A tiny floret table (50 rows of 8, n-grams 4-5, 2 hashes) made into a spaCy vectors
    directory with ``spacy init vectors --mode floret``, as the project's vectors step does."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("floret")
    rng = np.random.default_rng(0)
    rows = ["50 8 4 5 2 2166136261 < >"] + [f"{i} " + " ".join(f"{v:.4f}" for v in rng.normal(0, 1, 8)) for i in range(50)]
    (folder / "tiny.floret").write_text("\n".join(rows) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "spacy", "init", "vectors", "en", str(folder / "tiny.floret"), str(folder / "vectors")]
    subprocess.run([*command, "--mode", "floret"], check=True, capture_output=True)
    return folder / "vectors"
