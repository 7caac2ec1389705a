"""Write tiny random ELMoForManyLangs models and what the reference package computes for them.

Run with a Python that has the reference package installed (``pip install elmoformanylangs
'overrides<4'`` beside a CPU torch), never the project's own environment:

    ~/efml/bin/python scripts/make_manylangs_fixtures.py tests/fixtures/manylangs

Each model directory has the published layout (``config.json`` naming the network config,
the network config, ``char.dic``, ``word.dic``, ``token_embedder.pkl``, ``encoder.pkl``),
with random weights of a tiny shape, and ``expected.npz``: the reference's
``Embedder(DIR, batch_size=64).sents2elmo(SENTENCES, output_layer=-2)`` for the sentences in
``sentences.json`` (one batch from a fresh Embedder, so its stateful encoder starts from
zeros). The lexicons exercise the parser's quirks: a lone id on a line (its token is taken
to be U+3000), ids out of line order, a word listed twice (the later id wins), words that
only match once truncated. The sentences mix Latin with diacritics, CJK, Cyrillic and
Arabic, characters and words outside the lexicons, a token longer than the maximum, a user
token spelled ``<bos>`` and an empty sentence.
"""

import json
import random
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from elmoformanylangs import Embedder

SEED = 20221

SENTENCES: List[List[str]] = [
    ["Die", "Straße", "ist", "schön", "."],
    ["Café", "crème", ",", "s'il", "vous", "plaît", "!"],
    ["中文", "很", "好", "。"],
    ["Привет", ",", "мир", "!"],
    ["مرحبا", "بالعالم"],
    ["Donaudampfschifffahrt", "und", "Kapitänsmütze", "ü"],
    ["snow", "☃", "ñandú", "😀", "<bos>", "Straße"],
    [],
    ["好", "好", "中文中文中文中文中文", "."],
]

CHARS_SEEN = sorted(set("".join(token for sentence in SENTENCES[:6] for token in sentence)) - set("ñ☃😀"))
"""The characters of the char lexicon: those of the first sentences, less a few left out on purpose."""

WORDS = [
    "Die",
    "Straße",
    "ist",
    ".",
    "Café",
    ",",
    "!",
    "中文",
    "好",
    "Привет",
    "мир",
    "مرحبا",
    "und",
    "Donaudam",
    "中文中文中文中文",
]
"""Words of the word lexicon; ``Donaudam`` and ``中文中文中文中文`` are what long tokens are cut to."""

SPECIAL = ["<oov>", "<bos>", "<eos>", "<pad>"]
CHAR_SPECIAL = ["<bos>", "<eos>", "<oov>", "<pad>", "<bow>", "<eow>"]


def network_config(word_dim: int, activation: str, cell_clip: float, proj_clip: float) -> Dict:
    """A network config in the published layout, at a tiny size."""
    return {
        "encoder": {
            "name": "elmo",
            "projection_dim": 6,
            "cell_clip": cell_clip,
            "proj_clip": proj_clip,
            "dim": 10,
            "n_layers": 2,
        },
        "token_embedder": {
            "name": "cnn",
            "activation": activation,
            "filters": [[1, 4], [2, 4], [3, 6]],
            "n_highway": 2,
            "word_dim": word_dim,
            "char_dim": 5,
            "max_characters_per_token": 10,
        },
        "classifier": {"name": "sampled_softmax", "n_samples": 8192},
        "dropout": 0.1,
    }


def char_lexicon_lines(rng: random.Random) -> List[str]:
    """``char.dic``: every character and special symbol with a shuffled id; U+3000 as a lone id."""
    entries = [*CHARS_SEEN, *CHAR_SPECIAL, "\u3000"]
    ids = list(range(len(entries)))
    rng.shuffle(ids)
    return [f"{i}" if token == "\u3000" else f"{token}\t{i}" for token, i in zip(entries, ids)]


def word_lexicon_lines(rng: random.Random) -> List[str]:
    """``word.dic``: special words, the words, and ``ist`` listed twice (the second id counts,
    the first id is then used by no word: rows stay one per distinct word)."""
    entries = [*SPECIAL, *WORDS]
    ids = list(range(len(entries)))
    rng.shuffle(ids)
    lines = [f"{token}\t{i}" for token, i in zip(entries, ids)]
    position = entries.index("ist")
    later = ids[entries.index("und")]
    lines[position] = f"ist\t{ids[position]}"
    lines.append(f"ist\t{later}")
    return lines


def randomize(state: Dict[str, torch.Tensor], generator: torch.Generator) -> Dict[str, torch.Tensor]:
    """Every tensor of a state dict replaced by normal noise of the same shape (std 0.4)."""
    return {name: torch.randn(tensor.shape, generator=generator) * 0.4 for name, tensor in state.items()}


def write_model(directory: Path, config: Dict, config_path: str, legacy_format: bool, seed: int) -> None:
    """One model directory with random weights, its sentences and the reference's outputs."""
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    network_name = Path(config_path).name
    (directory / network_name).write_text(json.dumps(config, indent=1), encoding="utf-8")
    run_config = {"seed": 1, "gpu": -1, "config_path": config_path, "word_embedding": None, "model": "output"}
    (directory / "config.json").write_text(json.dumps(run_config, indent=1), encoding="utf-8")
    (directory / "char.dic").write_text("\n".join(char_lexicon_lines(rng)) + "\n", encoding="utf-8")
    if config["token_embedder"]["word_dim"] > 0:
        (directory / "word.dic").write_text("\n".join(word_lexicon_lines(rng)) + "\n", encoding="utf-8")

    # A first Embedder fails to load the missing weights; build the network from its pieces.
    (directory / "token_embedder.pkl").touch()
    (directory / "encoder.pkl").touch()
    reference = Embedder.__new__(Embedder)
    reference.model_dir = str(directory)
    reference.batch_size = 64
    model_class = sys.modules["elmoformanylangs.elmo"].Model
    original_load = model_class.load_model
    model_class.load_model = lambda self, path: None
    try:
        model, _ = reference.get_model()
    finally:
        model_class.load_model = original_load
    save_options = {"_use_new_zipfile_serialization": not legacy_format}
    torch.save(randomize(model.token_embedder.state_dict(), generator), directory / "token_embedder.pkl", **save_options)
    torch.save(randomize(model.encoder.state_dict(), generator), directory / "encoder.pkl", **save_options)

    embedder = Embedder(str(directory), batch_size=64)
    outputs = embedder.sents2elmo(SENTENCES, output_layer=-2)
    (directory / "sentences.json").write_text(json.dumps(SENTENCES, ensure_ascii=False, indent=0), encoding="utf-8")
    np.savez_compressed(
        directory / "expected.npz", **{f"sentence_{i}": np.asarray(o, dtype=np.float32) for i, o in enumerate(outputs)}
    )


def main(root: str) -> None:
    """Write every fixture model under ``root``."""
    torch.set_num_threads(1)
    base = Path(root)
    # Words and characters, relu, clipping on; weights in torch's zip format.
    write_model(base / "cnn_words", network_config(7, "relu", 1.0, 0.8), "cnn_tiny.json", legacy_format=False, seed=SEED)
    # Characters only (word_dim 0: no word.dic), tanh, clip values 0 (which the reference reads
    # as "no clipping"), an absolute config path that only its file name finds, and weights in
    # torch's legacy (pre-zip) format, like the published 2018 models.
    write_model(
        base / "cnn_chars",
        network_config(0, "tanh", 0, 0),
        "/srv/elmo/configs/cnn_tiny_chars.json",
        legacy_format=True,
        seed=SEED + 1,
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/manylangs")
