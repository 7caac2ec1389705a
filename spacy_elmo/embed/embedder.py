"""Loading the biLM for a corpus run, and embedding one chunk of lines in length-sorted batches.

A chunk's batches depend on nothing but the chunk's lines and the settings: the lines'
pieces are sorted by length (longest first, ties in line order) and cut every
``batch_size`` pieces (:func:`spacy_elmo.bilm.batching.batches_of_rows`, as in :meth:`ElmoBiLM.embed_sentences`), and the token cache is
emptied at the start of every chunk. Since batch composition changes results by float
rounding, this is what makes a resumed run write exactly the arrays of an uninterrupted one.
"""

from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..bilm.batching import batches_of_rows
from ..bilm.fingerprint import weights_fingerprint
from ..bilm.model import ElmoBiLM
from ..bilm.pretrained import resolve_files
from .errors import EmbedSettingsError
from .layout import empty_output, reduce_layers


def resolve_device(gpu_id: Optional[int]) -> torch.device:
    """The CPU for ``None`` or a negative id, else that CUDA device (a clear error without one)."""
    if gpu_id is None or gpu_id < 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise EmbedSettingsError(
            f"--gpu-id {gpu_id}: CUDA is not available here. Leave --gpu-id out (or pass -1) to run on the CPU."
        )
    if gpu_id >= torch.cuda.device_count():
        raise EmbedSettingsError(f"--gpu-id {gpu_id}: only {torch.cuda.device_count()} CUDA device(s) are visible (ids from 0).")
    return torch.device("cuda", gpu_id)


def model_files(weights: str, options: Optional[str]) -> Tuple[Path, Path]:
    """(options.json, weights.hdf5) for ``--weights`` (a name, a directory or a weights file) and ``--options``."""
    return resolve_files(weights, options, weights_setting="--weights", options_setting="--options")


def load_embedding_bilm(weights: str = "default", options: Optional[str] = None) -> ElmoBiLM:
    """The stateless biLM named by ``--weights`` / ``--options``, on the CPU, in eval mode."""
    options_path, weights_path = model_files(weights, options)
    return ElmoBiLM.from_files(options_path, weights_path).eval()


def model_fingerprint(bilm: ElmoBiLM) -> str:
    """The :func:`weights_fingerprint` of the class, options and weights: equal iff two biLMs
    are the same model (the precision they run in is a setting of its own in a run's manifest)."""
    return weights_fingerprint(bilm, {"class": type(bilm).__name__, "options": bilm.options.to_json()})


class ChunkEmbedder:
    """Embeds chunks of tokenised lines; lines longer than ``max_piece_length`` tokens are read
    in consecutive pieces of that length (as the ``elmo`` component reads long docs without
    sentence boundaries) whose outputs are joined along the token axis."""

    def __init__(self, bilm: ElmoBiLM, output_format: str, batch_size: int, max_piece_length: int) -> None:
        self.bilm = bilm
        self.output_format = output_format
        self.batch_size = batch_size
        self.max_piece_length = max_piece_length
        options = bilm.options
        self.empty = empty_output(options.n_output_layers, options.output_dim, output_format)

    def pieces(self, tokens: Sequence[str]) -> List[Sequence[str]]:
        step = self.max_piece_length
        return [tokens[start : start + step] for start in range(0, len(tokens), step)]

    def embed(self, lines: Sequence[Sequence[str]]) -> Iterator[Tuple[int, np.ndarray]]:
        """``(position in lines, stored array)`` for every line, in the order lines complete."""
        self.bilm.token_cache.clear()
        sequences: List[Sequence[str]] = []
        owners: List[int] = []
        remaining: Dict[int, int] = {}
        for position, tokens in enumerate(lines):
            line_pieces = self.pieces(tokens)
            if not line_pieces:
                yield position, self.empty
                continue
            remaining[position] = len(line_pieces)
            sequences.extend(line_pieces)
            owners.extend([position] * len(line_pieces))
        done: Dict[int, Dict[int, np.ndarray]] = {}
        with torch.no_grad():
            for rows in batches_of_rows([len(s) for s in sequences], self.batch_size):
                layers, lengths = self.bilm.embed_batch([sequences[i] for i in rows])
                arrays = layers.float().cpu().numpy()
                for row, sequence in enumerate(rows):
                    position = owners[sequence]
                    done.setdefault(position, {})[sequence] = arrays[:, row, : int(lengths[row])]
                    if len(done[position]) == remaining[position]:
                        finished = done.pop(position)
                        parts = [finished[i] for i in sorted(finished)]
                        joined = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
                        yield position, reduce_layers(joined, self.output_format)
