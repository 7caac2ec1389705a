"""What the pretraining tests share: a tiny config, a synthetic corpus and the command lines
that run ``python -m spacy_elmo pretrain`` in a child process (alone or under torchrun)."""

import gzip
import json
import os
import random
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Mapping

TINY_SECTIONS: Dict[str, Dict[str, object]] = {
    "paths": {"train": None, "dev": None},
    "data": {"format": "sentences", "max_sentence_length": 30, "shuffle_buffer": 200, "sort_pool": 100},
    "vocab": {"size": 300},
    "model": {},
    "model.lstm": {"dim": 32, "projection_dim": 16, "n_layers": 2},
    "model.char_cnn": {"embedding_dim": 4, "filters": [[1, 8], [2, 8], [3, 16]], "n_highway": 1},
}

SUBJECTS = ["the cat", "a dog", "my friend", "the old teacher", "John", "Mary", "the children"]
VERBS = ["sees", "likes", "finds", "eats", "paints", "follows"]
OBJECTS = ["a bird", "the red ball", "an apple", "the river", "some bread", "a small house"]
PLACES = ["", "in the garden", "at home", "near the river", "every morning"]


def tiny_config(training: Mapping[str, object], **changes: Mapping[str, object]) -> str:
    """The text of a pretraining config with a tiny architecture (``TINY_SECTIONS``) and this
    ``[training]`` section; ``changes`` update single settings of other sections, named as in
    the overrides with ``__`` for a dot (``model__lstm={"dim": 16}``)."""
    sections = {name: dict(settings) for name, settings in TINY_SECTIONS.items()}
    for name, settings in changes.items():
        sections[name.replace("__", ".")].update(settings)
    sections["training"] = dict(training)
    return "".join(
        f"\n[{name}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
        for name, settings in sections.items()
    )


def synthetic_sentences(n: int, seed: int) -> List[str]:
    """``n`` simple English sentences (subject, verb, object, sometimes a place, full stop)."""
    rng = random.Random(seed)
    return [
        " ".join(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)} .".split())
        for _ in range(n)
    ]


def write_lines(path: Path, lines: Iterable[str]) -> Path:
    """One line per item, UTF-8, gzip-compressed when ``path`` ends in ``.gz``."""
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def cli_args(overrides: Mapping[str, object]) -> List[str]:
    """Config overrides as command-line options (``--training.max_steps 4``)."""
    return [arg for key, value in overrides.items() for arg in (f"--{key}", json.dumps(value))]


def pretrain_command(config: Path, output_dir: Path, *args: str, processes: int = 1) -> List[str]:
    """``python -m spacy_elmo pretrain CONFIG OUTPUT_DIR --no-progress ARGS``, under torchrun
    (gloo on CPU, one machine) when ``processes`` > 1."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else []
    return [sys.executable, *launcher, "-m", "spacy_elmo", "pretrain", str(config), str(output_dir), "--no-progress", *args]


def one_thread_env() -> Dict[str, str]:
    """This process's environment for a child process that should use one thread."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}
