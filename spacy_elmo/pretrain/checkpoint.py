"""Training checkpoints that survive crashes and corruption.

A checkpoint is a folder ``OUTPUT_DIR/checkpoint-<step>/`` with ``state.pt`` (model + softmax +
optimiser state, random-generator states of every process, the vocabulary size and the
:class:`TrainState` counters, each stored once and checked on loading) and
``meta.json`` (human-readable counters, the settings that fix the data stream, and the size and
sha256 of ``state.pt``). The folder is filled under a temporary name, ``meta.json`` last, and
renamed into place, so a folder named ``checkpoint-<step>`` is always complete; the previous
checkpoints are deleted only after a newer one is in place, and the newest two are kept. At any
instant a complete checkpoint is therefore on disk, whatever moment a crash picks.

Resuming takes the newest checkpoint whose ``state.pt`` matches its recorded checksum and falls
back to older ones otherwise; a complete ``.checkpoint-<step>.tmp-*`` folder (one set aside by
a save or a deletion that a crash interrupted) is read too. ``state.pt`` holds only tensors and
plain containers and is read with ``torch.load(weights_only=True)``: loading never runs
arbitrary pickled code.
"""

import errno
import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, get_args, get_type_hints

import numpy as np
import torch

from ..files import TMP_MARK, PathLike, atomic_directory, fsync_path, temporary_name, write_text_atomic
from .errors import CheckpointError

STATE_FILE = "state.pt"
META_FILE = "meta.json"
FORMAT_VERSION = 1
STATE_TYPES: Dict[str, type] = {
    "format": int,
    "trainer": dict,
    "model": dict,
    "optimizer": dict,
    "rng": list,
    "world_size": int,
    "vocab_size": int,
}
"""Every part of ``state.pt`` and its type: what resuming reads, checked before it reads it."""
PREFIX = "checkpoint-"
NUMBERED = re.compile(r"checkpoint-(\d+)")
TEMPORARY = re.compile(r"\.checkpoint-(\d+)" + re.escape(TMP_MARK))


@dataclass
class TrainState:
    """Counters that a checkpoint carries over (``position``: batches of ``epoch`` consumed, all ranks)."""

    step: int = 0
    tokens: int = 0
    epoch: int = 0
    position: int = 0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0
    best_ppl: Optional[float] = None
    best_step: Optional[int] = None
    last_checkpoint_step: Optional[int] = None


@dataclass
class Checkpoint:
    """A checkpoint folder on disk (not yet verified) and its step, from meta.json or its name."""

    path: Path
    step: int
    meta: Dict[str, Any] = field(default_factory=dict)
    meta_error: Optional[str] = None


@dataclass
class LoadedCheckpoint:
    """The verified checkpoint a run resumes from, and the newer ones that failed verification."""

    path: Path
    state: Dict[str, Any]
    meta: Dict[str, Any]
    skipped: List[Tuple[Path, str]]
    counters: TrainState


def checkpoint_path(output_dir: PathLike, step: int) -> Path:
    """Where the checkpoint of ``step`` lives."""
    return Path(output_dir) / f"{PREFIX}{step}"


def is_checkpoint_folder(path: Path) -> bool:
    """Whether ``path`` is a checkpoint folder this command wrote (complete, partial or temporary)."""
    if not path.is_dir():
        return False
    if TEMPORARY.match(path.name):
        return True
    if NUMBERED.fullmatch(path.name):
        # A user's own folder of that name holds other files: it is not ours to delete.
        return all(child.name in (STATE_FILE, META_FILE) or TMP_MARK in child.name for child in path.iterdir())
    return False


def may_hold_checkpoint(path: Path) -> bool:
    """Whether a temporary folder may be a complete checkpoint (it has its meta.json): spare it from cleanup."""
    return bool(TEMPORARY.match(path.name)) and (path / META_FILE).is_file()


def list_checkpoints(output_dir: PathLike) -> List[Checkpoint]:
    """Every folder with a meta.json that may be a checkpoint, newest first.

    Within one step, a ``checkpoint-<step>`` folder comes before a temporary one.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found: List[Tuple[int, int, Checkpoint]] = []
    for path in output_dir.iterdir():
        named = NUMBERED.fullmatch(path.name) or TEMPORARY.match(path.name)
        if named is None or not (path / META_FILE).is_file():
            continue
        checkpoint = _read_meta(path)
        if checkpoint.meta_error is not None:
            checkpoint.step = int(named.group(1))
        found.append((checkpoint.step, 0 if named.re is NUMBERED else -1, checkpoint))
    found.sort(key=lambda item: (item[0], item[1], item[2].path.name), reverse=True)
    return [checkpoint for _, _, checkpoint in found]


def save_checkpoint(output_dir: PathLike, counters: TrainState, state: Dict[str, Any], meta: Dict[str, Any]) -> Path:
    """Write ``checkpoint-<counters.step>`` (``state`` holds tensors and plain containers only,
    the parts of :data:`STATE_TYPES` but ``format`` and ``trainer``); return its path.

    ``meta.json`` is written last and records the size and sha256 of ``state.pt``. A folder of
    the same step that already exists (one that failed verification) is replaced.
    """
    target = checkpoint_path(output_dir, counters.step)
    state = {"format": FORMAT_VERSION, "trainer": asdict(counters), **state}
    missing = sorted(set(STATE_TYPES) - set(state))
    if missing:
        raise ValueError(f"save_checkpoint: state has no {', '.join(missing)}")
    displaced: Optional[Path] = None
    with atomic_directory(target) as tmp:
        with open(tmp / STATE_FILE, "xb") as handle:
            try:
                torch.save(state, handle)
            except RuntimeError as err:  # torch's writer reports a failed write (a full disk) as "enforce fail"
                raise OSError(errno.EIO, f"writing {STATE_FILE} failed ({_first_sentence(err)}); is the disk full?") from None
        fsync_path(tmp / STATE_FILE)
        files = {STATE_FILE: {"bytes": (tmp / STATE_FILE).stat().st_size, "sha256": sha256_of(tmp / STATE_FILE)}}
        write_text_atomic(tmp / META_FILE, json.dumps({**meta, "files": files}, indent=2) + "\n")
        if target.exists():
            displaced = temporary_name(target)
            os.replace(target, displaced)
    if displaced is not None:
        shutil.rmtree(displaced, ignore_errors=True)
    return target


def prune_checkpoints(output_dir: PathLike, keep: Sequence[Path]) -> List[Path]:
    """Delete every checkpoint folder of ``output_dir`` except ``keep``; return the deleted ones.

    Call it only once the newest of ``keep`` is complete: then a checkpoint survives any crash.
    """
    kept = {Path(path).resolve() for path in keep}
    removed: List[Path] = []
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return removed
    for path in sorted(output_dir.iterdir()):
        if path.resolve() not in kept and is_checkpoint_folder(path):
            remove_folder(path)
            removed.append(path)
    return removed


def promote_checkpoint(path: Path, step: int) -> Path:
    """Give a complete checkpoint left under a temporary name its ``checkpoint-<step>`` name, if free."""
    target = checkpoint_path(path.parent, step)
    if TEMPORARY.match(path.name) and not target.exists():
        os.rename(path, target)
        fsync_path(path.parent)
        return target
    return path


def remove_folder(path: Path) -> None:
    """Rename ``path`` to a temporary name, then delete it: a crash never leaves half of it under its name."""
    if not TEMPORARY.match(path.name) and TMP_MARK not in path.name:
        hidden = temporary_name(path)
        os.replace(path, hidden)
        path = hidden
    shutil.rmtree(path, ignore_errors=True)


def load_latest_checkpoint(output_dir: PathLike, map_location: Union[str, torch.device] = "cpu") -> LoadedCheckpoint:
    """The newest checkpoint that passes verification; newer ones that fail are listed in ``skipped``.

    Raises :class:`CheckpointError` naming every file checked when none passes.
    """
    output_dir = Path(output_dir)
    candidates = list_checkpoints(output_dir)
    if not candidates:
        raise CheckpointError(no_checkpoint_message(output_dir))
    skipped: List[Tuple[Path, str]] = []
    for candidate in candidates:
        try:
            state, counters = _load_verified(candidate, map_location)
        except CheckpointError as err:
            skipped.append((candidate.path, str(err)))
            continue
        return LoadedCheckpoint(candidate.path, state, candidate.meta, skipped, counters)
    problems = "; ".join(reason for _, reason in skipped)
    raise CheckpointError(
        f"No intact checkpoint to resume from in {output_dir}: {problems}. Start over with --overwrite "
        f"instead of --resume (it replaces this run's outputs), or in a new OUTPUT_DIR."
    )


def _read_counters(data: Dict[str, Any], where: Path) -> TrainState:
    """The :class:`TrainState` stored under ``"trainer"`` in ``where``, after checking that it
    has every counter, each of its type, and nothing else."""
    hints = get_type_hints(TrainState)
    problems = []
    for counter in fields(TrainState):
        if counter.name not in data:
            problems.append(f'"trainer" has no {counter.name}')
        elif not _has_type(data[counter.name], hints[counter.name]):
            problems.append(f'"trainer" {counter.name} is {data[counter.name]!r}, not {_type_name(hints[counter.name])}')
    problems += [f'"trainer" has an unknown counter {name!r}' for name in sorted(set(data) - set(hints))]
    if problems:
        raise CheckpointError(f"{where} is incomplete or damaged ({'; '.join(problems)})")
    return TrainState(**data)


def _has_type(value: Any, hint: Any) -> bool:
    if get_args(hint):  # Optional[X]
        return value is None or _has_type(value, get_args(hint)[0])
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) if hint is float else isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if get_args(hint):
        return f"{_type_name(get_args(hint)[0])} or null"
    return "an integer" if hint is int else "a number"


def no_checkpoint_message(output_dir: Path) -> str:
    return (
        f"No checkpoint to resume from: {output_dir} has no {PREFIX}<step>/ folder with a {META_FILE}. "
        f"Start without --resume (with --overwrite if {output_dir} is not empty), or point OUTPUT_DIR at "
        f"the directory of the run you want to continue."
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def rng_state() -> Dict[str, Any]:
    """The python, numpy and torch (CPU and CUDA) generator states, as checkpointable values."""
    version, mt_state, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=True)
    if not isinstance(numpy_state, tuple):  # a dict only for a bit generator other than MT19937
        raise CheckpointError(
            "numpy's global generator is not the MT19937 that np.random.seed sets; its state cannot be checkpointed."
        )
    name, keys, pos, has_gauss, cached = numpy_state
    state: Dict[str, Any] = {
        "python": [version, list(mt_state), gauss],
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
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
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states: List[torch.Tensor] = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def _read_meta(path: Path) -> Checkpoint:
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        step = meta["step"]
        if not isinstance(meta, dict) or not isinstance(step, int) or isinstance(step, bool):
            raise ValueError("'step' is not an integer")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        return Checkpoint(path, -1, {}, f"{meta_path} is unreadable or corrupted ({_first_sentence(err)})")
    return Checkpoint(path, step, meta)


def _load_verified(checkpoint: Checkpoint, map_location: Union[str, torch.device]) -> Tuple[Dict[str, Any], TrainState]:
    if checkpoint.meta_error is not None:
        raise CheckpointError(checkpoint.meta_error)
    path = checkpoint.path / STATE_FILE
    files = checkpoint.meta.get("files")
    if not isinstance(files, dict) or not isinstance(files.get(STATE_FILE), dict):
        raise CheckpointError(
            f'{checkpoint.path / META_FILE} records no size and sha256 of {STATE_FILE} ("files"), so {path} '
            f"cannot be verified (it was not written by this version of spacy-elmo)"
        )
    for name, expected in files.items():
        _verify_file(checkpoint.path / name, expected)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch reports truncated/garbled files with many exception types
        raise CheckpointError(f"{path} is unreadable or corrupted ({type(err).__name__}: {_first_sentence(err)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds {type(state).__name__}, not a checkpoint's parts")
    missing = [key for key in STATE_TYPES if key not in state]
    if missing:
        raise CheckpointError(f"{path} is incomplete (missing {', '.join(missing)})")
    mistyped = [
        f"{key} is {type(state[key]).__name__}, not {kind.__name__}"
        for key, kind in STATE_TYPES.items()
        if not isinstance(state[key], kind) or isinstance(state[key], bool)
    ]
    if mistyped:
        raise CheckpointError(f"{path} is damaged ({'; '.join(mistyped)})")
    if state["format"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format {state['format']}, this version reads {FORMAT_VERSION} (written by another version of spacy-elmo)"
        )
    counters = _read_counters(state["trainer"], path)
    if counters.step != checkpoint.step:
        raise CheckpointError(f"{path} holds step {counters.step} but {checkpoint.path / META_FILE} says {checkpoint.step}")
    return state, counters


def _verify_file(path: Path, expected: Dict[str, Any]) -> None:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    size = path.stat().st_size
    if size != expected.get("bytes"):
        raise CheckpointError(
            f"{path} has {size:,} bytes, {path.parent / META_FILE} recorded {expected.get('bytes')!r} (truncated or changed)"
        )
    actual = sha256_of(path)
    if actual != expected.get("sha256"):
        raise CheckpointError(
            f"{path} fails its sha256 check (recorded {str(expected.get('sha256'))[:12]}..., found {actual[:12]}...): "
            f"it was corrupted after it was written"
        )


def _first_sentence(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.split(". ")[0].rstrip(".")
