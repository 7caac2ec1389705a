"""``OUTPUT.partial/``: an unfinished run, kept so that a killed run resumes where it stopped.

It holds ``manifest.json`` (the settings, model and input the run was started with) and one
``chunk-NNNNNNNN.hdf5`` per finished chunk of lines, each written under a temporary name and
renamed when complete (:mod:`spacy_elmo.files`), so a kill loses at most the chunk in
progress and never leaves a half-written file that counts. OUTPUT itself appears only when
every chunk is done, in one rename. A lock file keeps two runs out of the same directory.
"""

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Set

from ..files import TMP_MARK, remove_orphans, write_text_atomic
from .errors import EmbedOutputError, EmbedResumeError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

MANIFEST = "manifest.json"
LOCK = "lock"


def partial_dir(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def chunk_name(chunk: int) -> str:
    return f"chunk-{chunk:08d}.hdf5"


def remove_output_orphans(output: Path) -> None:
    """Delete temporary files a killed run left beside OUTPUT (only OUTPUT's own)."""
    for path in output.parent.glob(f".{output.name}{TMP_MARK}*"):
        path.unlink(missing_ok=True)


class PartialRun:
    """The ``OUTPUT.partial`` directory of one run, locked while this object is open."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.directory = partial_dir(output)
        self._lock_fd: Optional[int] = None

    def __enter__(self) -> "PartialRun":
        try:
            self.directory.mkdir(exist_ok=True)
        except OSError as err:
            raise EmbedOutputError(f"Cannot create {self.directory} (where the run keeps its progress): {err}.") from None
        fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise EmbedOutputError(
                    f"Another embed run is writing {self.output} (it holds {self.directory / LOCK}). Wait for it to "
                    f"finish, or write to another OUTPUT."
                ) from None
        self._lock_fd = fd
        remove_orphans(self.directory)
        remove_output_orphans(self.output)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def start(self, manifest: Dict[str, Any], *, restart: bool) -> bool:
        """Record ``manifest`` for a fresh run, or check it against the unfinished run's.

        Returns True when an unfinished run is resumed. A run with other settings, model or
        input is an error, unless ``restart`` discards it.
        """
        path = self.directory / MANIFEST
        if path.is_file():
            try:
                previous = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                previous = None
            difference = _first_difference(previous, manifest)
            if difference is None:
                return True
            if not restart:
                raise EmbedResumeError(
                    f"{self.directory} holds an unfinished run of {self.output} with a different {difference}. Re-run "
                    f"with the settings, model and input it was started with to resume it, or pass --force to discard "
                    f"it and start over."
                )
            self.clear()
        write_text_atomic(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return False

    def clear(self) -> None:
        """Delete everything but the lock."""
        for entry in self.directory.iterdir():
            if entry.name == LOCK:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def finished_chunks(self) -> Set[int]:
        found = set()
        for entry in self.directory.glob("chunk-*.hdf5"):
            number = entry.name[len("chunk-") : -len(".hdf5")]
            if number.isdigit():
                found.add(int(number))
        return found

    def chunk_path(self, chunk: int) -> Path:
        return self.directory / chunk_name(chunk)

    def remove(self) -> None:
        """Delete the directory once OUTPUT is complete."""
        self.__exit__()
        shutil.rmtree(self.directory, ignore_errors=True)


def _first_difference(previous: Optional[Dict[str, Any]], current: Dict[str, Any]) -> Optional[str]:
    """The first setting in which two manifests differ, described for the user; None if equal."""
    if not isinstance(previous, dict):
        return "manifest (unreadable)"
    for key in sorted(set(previous) | set(current)):
        if previous.get(key) != current.get(key):
            return f"{key} ({previous.get(key)!r} there, {current.get(key)!r} now)"
    return None
