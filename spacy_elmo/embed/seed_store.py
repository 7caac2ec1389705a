"""Seed the frozen biLM's layer store (:mod:`spacy_elmo.layers.layer_store`) from an
``embed --all`` HDF5 file, so that training on the same sentences never runs the biLM.

``python -m spacy_elmo embed-seed FILE.hdf5 --weights W`` reads each line's text from the
file's ``sentence_to_index``, tokenizes it as ``embed`` did (the tokenizer recorded in the
file) and stores the line's layers under the fingerprint of the biLM that ``--weights``
names. The file must have been written by those weights at that precision (the
``model_sha256`` that ``embed`` records is compared), so a store is never seeded with layers
of other weights. Training looks layers up by the tokens its pipeline makes, so an entry is
used when the training docs tokenize a sentence as ``embed`` did.
"""

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

import h5py
import numpy as np

from ..errors import ElmoError
from ..layers.layer_store import LayerStore, bilm_fingerprint, default_store_dir, sequence_key
from ..layers.settings import LAYER_DEFAULTS
from .corpus import make_tokenizer
from .embedder import load_embedding_bilm, model_fingerprint
from .errors import EmbedInputError
from .layout import line_keys, read_metadata, read_sentence_to_index


def seed_layer_store(
    path: Path,
    weights: str,
    options: Optional[str] = None,
    *,
    precision: str = LAYER_DEFAULTS.precision,
    store_dir: Optional[Path] = None,
    store_mb: int = LAYER_DEFAULTS.layer_store_mb,
    float16: bool = LAYER_DEFAULTS.layer_store_float16,
) -> Dict[str, int]:
    """Store every line of ``path`` (an ``embed --all`` file written by ``weights`` at
    ``precision``); returns counts: ``stored``, ``skipped`` (empty lines, lines read in pieces),
    ``not_stored`` (the store's bound or disk)."""
    path = Path(path)
    bilm = load_embedding_bilm(weights, options).to_precision(precision, setting="--precision")
    counts = {"stored": 0, "skipped": 0, "not_stored": 0}
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise EmbedInputError(
            f"{path} cannot be read as HDF5 ({err}): pass a file written by python -m spacy_elmo embed."
        ) from None
    with h5:
        metadata = read_metadata(h5)
        if metadata is None:
            raise EmbedInputError(
                f"{path} has no spacy_elmo_embed settings: it was not written by python -m spacy_elmo embed, so "
                f"which weights computed it cannot be checked. Embed the corpus with python -m spacy_elmo embed --all."
            )
        if metadata.get("output_format") != "all":
            raise EmbedInputError(
                f"{path} holds output_format={metadata.get('output_format')!r} arrays; the layer store needs every "
                f"layer. Embed the corpus again with --all."
            )
        if metadata.get("model_sha256") != model_fingerprint(bilm):
            raise EmbedInputError(
                f"{path} was written by other weights or another precision than --weights {weights} "
                f"--precision {precision} (its model_sha256 differs): pass the weights and precision embed used."
            )
        mapping = read_sentence_to_index(h5)
        if mapping is None:
            raise EmbedInputError(
                f"{path} has no sentence_to_index (written with --no-sentences), so its lines' tokens are "
                f"unknown. Embed the corpus again without --no-sentences."
            )
        tokenizer = str(metadata.get("tokenizer", "whitespace"))
        _, tokenize = make_tokenizer(tokenizer.split(":", 1)[1] if tokenizer.startswith("spacy:") else None)
        store = LayerStore(store_dir or default_store_dir(), store_mb * 2**20, float16=float16)
        fingerprint = bilm_fingerprint(bilm)
        max_piece = int(metadata.get("max_piece_length", LAYER_DEFAULTS.max_batch_tokens))
        present = set(line_keys(h5))
        for text, index in mapping.items():
            tokens = tokenize(text)
            if not tokens or len(tokens) > max_piece or index not in present:
                counts["skipped"] += 1
                continue
            layers = np.asarray(h5[index][()])
            if layers.ndim != 3 or layers.shape[1] != len(tokens):
                counts["skipped"] += 1
                continue
            stored = store.put(fingerprint, sequence_key(fingerprint, tokens), layers)
            counts["stored" if stored else "not_stored"] += 1
    return counts


def seed_main(argv: List[str], prog: str = "python -m spacy_elmo embed-seed") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path, help="an HDF5 file written by python -m spacy_elmo embed --all")
    parser.add_argument("--weights", required=True, help="the weights embed used (as its --weights)")
    parser.add_argument("--options", default=None, help="their options.json, when --weights is a file without one beside it")
    parser.add_argument("--precision", default=LAYER_DEFAULTS.precision, help="the precision embed used (fp32, bf16, int8)")
    parser.add_argument("--store-dir", type=Path, default=None, help="the layer store (default: the elmo component's default)")
    parser.add_argument("--store-mb", type=int, default=LAYER_DEFAULTS.layer_store_mb, help="the store's bound in MiB")
    parser.add_argument("--float32", action="store_true", help="store float32 (for layer_store_float16 = false)")
    args = parser.parse_args(argv)
    try:
        counts = seed_layer_store(
            args.file,
            args.weights,
            args.options,
            precision=args.precision,
            store_dir=args.store_dir,
            store_mb=args.store_mb,
            float16=not args.float32,
        )
    except ElmoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"{counts['stored']:,} lines stored in {args.store_dir or default_store_dir()}, {counts['skipped']:,} skipped "
        f"(empty, or read in pieces)"
        + (f", {counts['not_stored']:,} not kept (raise --store-mb)" if counts["not_stored"] else "")
    )
    return 0
