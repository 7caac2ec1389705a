"""Atomic training checkpoints and directory replacement.

A checkpoint is ``OUTPUT_DIR/checkpoint/`` with ``state.pt`` (model + softmax + optimiser
state, random-generator states of every process, data position and counters) and a
human-readable ``meta.json``. It is written into a temporary sibling directory and renamed
into place, so a crash leaves either the old or the new checkpoint, never half of one.
``state.pt`` holds only tensors and plain containers and is read with
``torch.load(weights_only=True)``: loading never runs arbitrary pickled code.
"""

import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
import torch

from .errors import CheckpointError

PathLike = Union[str, Path]

STATE_FILE = "state.pt"
META_FILE = "meta.json"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "step", "tokens", "epoch", "position", "model", "optimizer", "rng", "world_size")


def temporary_sibling(target: Path) -> Path:
    """A fresh, empty directory next to ``target`` to build its replacement in."""
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:12]}")
    tmp.mkdir(parents=True)
    return tmp


def replace_directory(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target``; the previous ``target`` survives as ``<target>.old`` until the swap is done."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(directory: PathLike, state: Dict[str, Any], meta: Dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain containers only) and ``meta`` atomically to ``directory``."""
    directory = Path(directory)
    tmp = temporary_sibling(directory)
    try:
        torch.save({"format": FORMAT_VERSION, **state}, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        replace_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def find_checkpoint(directory: PathLike) -> Path:
    """The checkpoint to resume from; falls back to ``<dir>.old`` if a swap was interrupted."""
    directory = Path(directory)
    if (directory / STATE_FILE).is_file():
        return directory
    old = directory.with_name(directory.name + ".old")
    if (old / STATE_FILE).is_file():
        return old
    raise CheckpointError(
        f"No checkpoint to resume from: {directory / STATE_FILE} does not exist. Start without "
        f"--resume (or point OUTPUT_DIR at the directory of the run you want to continue)."
    )


def load_checkpoint(directory: PathLike, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Read a checkpoint; anything unreadable raises :class:`CheckpointError` naming the file and the fix."""
    path = find_checkpoint(directory) / STATE_FILE
    fix = f"Delete {path.parent} to restart from scratch, or start without --resume in a new OUTPUT_DIR."
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch reports truncated/garbled files with many exception types
        raise CheckpointError(f"Checkpoint {path} is unreadable or corrupted ({type(err).__name__}: {_first_sentence(err)}). {fix}") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"Checkpoint {path} is incomplete (missing {', '.join(missing)}). {fix}")
    if state["format"] != FORMAT_VERSION:
        raise CheckpointError(f"Checkpoint {path} has format {state['format']}, this version reads {FORMAT_VERSION}. {fix}")
    return state


def rng_state() -> Dict[str, Any]:
    """The python, numpy and torch (CPU and CUDA) generator states, as checkpointable values."""
    version, mt_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "python": [version, list(mt_state), gauss],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        (numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached"])
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states: List[torch.Tensor] = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def _first_sentence(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.split(". ")[0].rstrip(".")
