"""OUTPUT_DIR of a pretraining run: what it may hold when a run starts, what ``--overwrite``
removes, how a failed write is reported, and the exported models.

A run never deletes or replaces a file it did not write: it refuses a non-empty OUTPUT_DIR
unless told to resume or to overwrite its own outputs.
"""

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Optional

from ..bilm.model import ElmoBiLM
from ..files import remove_orphans, write_bytes_atomic, write_text_atomic
from .checkpoint import list_checkpoints, may_hold_checkpoint, no_checkpoint_message, prune_checkpoints
from .errors import CheckpointError, OutputDirError

OWN_FILES = ("config.cfg", "vocab.txt", "log.jsonl", "metrics.json")
MODEL_DIRS = ("model-best", "model-last")
MODEL_FILES = ("options.json", "weights.hdf5")


def check_output_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse an OUTPUT_DIR this run may not use, before anything is written (every process checks)."""
    if out.exists() and not out.is_dir():
        raise OutputDirError(
            f"OUTPUT_DIR {out} is a file, not a directory. Pass the path of a directory (it is created if missing)."
        )
    if resume and overwrite:
        raise OutputDirError(
            f"--resume and --overwrite contradict each other for {out}: pass --resume to continue the run "
            f"there, or --overwrite to start a new one."
        )
    if resume:
        if not list_checkpoints(out):
            raise CheckpointError(no_checkpoint_message(out))
    else:
        _check_fresh_start(out, overwrite)


def _check_fresh_start(out: Path, overwrite: bool) -> None:
    entries = sorted(path.name for path in out.iterdir()) if out.is_dir() else []
    if entries and not overwrite:
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        has_checkpoint = bool(list_checkpoints(out))
        raise OutputDirError(
            f"OUTPUT_DIR {out} is not empty ({shown}). "
            + ("It holds a checkpoint: pass --resume to continue that run, or " if has_checkpoint else "Pass ")
            + "--overwrite to start a new run there (it replaces config.cfg, vocab.txt, log.jsonl, metrics.json, "
            "checkpoints and the model files of model-best/ and model-last/, and keeps every other file), "
            "or choose a new OUTPUT_DIR."
        )
    for name in OWN_FILES:
        if (out / name).is_dir():
            raise OutputDirError(
                f"{out / name} is a directory, but pretraining writes a file there. Move it away or choose a new OUTPUT_DIR."
            )
    for name in MODEL_DIRS:
        if (out / name).exists() and not (out / name).is_dir():
            raise OutputDirError(
                f"{out / name} is a file, but pretraining writes a model folder there. Move it away or choose a new OUTPUT_DIR."
            )


def set_up_output_dir(out: Path, config_text: str, *, resume: bool, overwrite: bool, say: Callable[[str], None]) -> None:
    """Create OUTPUT_DIR, clear what killed writes left, with ``overwrite`` remove the earlier
    run's outputs, and write the effective ``config.cfg`` (the main process only)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        remove_orphans(out, keep=may_hold_checkpoint)
        if overwrite:
            removed = remove_previous_outputs(out)
            if removed:
                say(f"--overwrite: removed the earlier run's checkpoints ({', '.join(path.name for path in removed)})")
        write_text_atomic(out / "config.cfg", config_text)
    except OSError as err:
        then = "then resume again with --resume: its checkpoints are untouched" if resume else "or pass another directory"
        raise OutputDirError(f"Cannot write to OUTPUT_DIR {out}: {err}. Check its permissions and free space, {then}.") from None


def remove_previous_outputs(out: Path) -> List[Path]:
    """--overwrite: delete what an earlier run wrote here (so runs never mix), nothing else;
    returns the checkpoints removed."""
    removed = prune_checkpoints(out, keep=[])
    for name in ("log.jsonl", "metrics.json"):
        (out / name).unlink(missing_ok=True)
    for name in MODEL_DIRS:
        folder = out / name
        if folder.is_dir():
            for file_name in MODEL_FILES:
                (folder / file_name).unlink(missing_ok=True)
            if not any(folder.iterdir()):
                folder.rmdir()
    return removed


@contextmanager
def write_errors(target: Path, out: Path, newest_checkpoint: Optional[Path]) -> Iterator[None]:
    """Turn a failed write of ``target`` (disk full, permissions) into an error that names the
    file and says how to continue."""
    try:
        yield
    except OSError as err:
        if newest_checkpoint is not None:
            how = f"the newest complete checkpoint, {newest_checkpoint}, is intact: continue with --resume."
        else:
            how = "no checkpoint was written yet: start again with --overwrite."
        raise OutputDirError(
            f"Cannot write {target}: {err.strerror or err}. Free disk space or fix the permissions of {out}; {how}"
        ) from None


def export_model(target: Path, bilm: ElmoBiLM) -> None:
    """Replace options.json and weights.hdf5 of the folder ``target``, each atomically; other files there stay."""
    data = bilm.to_bytes()
    target.mkdir(exist_ok=True)
    write_bytes_atomic(target / "weights.hdf5", data["weights"])
    write_bytes_atomic(target / "options.json", data["options"])
