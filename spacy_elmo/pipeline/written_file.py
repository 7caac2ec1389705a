"""The last file a component wrote, held open so that saving the same content again copies it
instead of serializing it again.

``spacy train`` saves the pipeline at every evaluation, each time into a fresh folder (with
``spacy-elmo.atomic_saves.v1``), and a frozen biLM is hundreds of MiB that serializing
takes seconds to produce. The component names what it wrote with a key that changes
whenever the bytes would (see ``ElmoComponent._model_key``); a save with the same key copies
the file through its open descriptor, so the copy is complete even after the folder it was
written to has been renamed or deleted, and it is byte-identical, checksum included.

The descriptor is held only on POSIX systems (elsewhere an open file cannot be deleted, and
``spacy train`` deletes the previous save) and only while the file is unchanged on disk: a
file whose size or modification time differs is never copied. The held file keeps its disk
space until the next save replaces it or the process ends, even if its folder is deleted.
"""

import os
import threading
import weakref
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..files import atomic_path

HELD = os.name == "posix"
"""Whether files are held open for copying (see the module docs)."""

_CHUNK = 1 << 24

Identity = Tuple[int, int, int, int]


def _identity(stat: os.stat_result) -> Identity:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


class WrittenFile:
    """One file written with a key, copied again by :meth:`copy_to` for the same key.

    Copies of the owner (pickling, ``copy.deepcopy``) start without a file.
    """

    def __init__(self) -> None:
        self._fd: Optional[int] = None
        self._key: Optional[str] = None
        self._identity: Optional[Identity] = None
        self._closer: Optional[weakref.finalize] = None
        self._lock = threading.Lock()

    def __getstate__(self) -> Dict[str, Any]:
        return {}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    @property
    def holds(self) -> bool:
        """Whether a file is held (worth computing a key for)."""
        return self._fd is not None

    def remember(self, path: Path, key: Optional[str]) -> None:
        """Hold ``path``, just written, as the file for ``key`` (None: hold nothing)."""
        with self._lock:
            self._forget()
            if key is None or not HELD:
                return
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                return
            self._fd, self._key, self._identity = fd, key, _identity(os.fstat(fd))
            self._closer = weakref.finalize(self, os.close, fd)

    def copy_to(self, target: Path, key: str) -> bool:
        """Put a copy of the held file at ``target`` (atomically) when it was written with ``key``
        and is unchanged; return whether it did. ``target`` then becomes the held file."""
        with self._lock:
            fd = self._current(key)
            if fd is None:
                return False
            try:
                if target.is_file() and _identity(target.stat()) == self._identity:
                    return True
                with atomic_path(target) as tmp, open(tmp, "xb") as out:
                    _copy(fd, out.fileno(), os.fstat(fd).st_size)
            except OSError:
                self._forget()
                return False
        self.remember(target, key)
        return True

    def read(self, key: str) -> Optional[bytes]:
        """The held file's bytes when it was written with ``key`` and is unchanged, else None."""
        with self._lock:
            fd = self._current(key)
            if fd is None:
                return None
            size = os.fstat(fd).st_size
            parts = []
            offset = 0
            while offset < size:
                part = os.pread(fd, min(_CHUNK, size - offset), offset)
                if not part:
                    return None
                parts.append(part)
                offset += len(part)
            return b"".join(parts)

    def _current(self, key: str) -> Optional[int]:
        """The held descriptor if it was written with ``key`` and is unchanged since."""
        if self._fd is None or key != self._key:
            return None
        try:
            unchanged = _identity(os.fstat(self._fd)) == self._identity
        except OSError:
            unchanged = False
        if not unchanged:
            self._forget()
            return None
        return self._fd

    def _forget(self) -> None:
        if self._closer is not None:
            self._closer()
        self._fd = self._key = self._identity = self._closer = None


def _copy(source: int, target: int, size: int) -> None:
    """Copy ``size`` bytes from the start of ``source`` to ``target``, in the kernel where it can
    (``copy_file_range``: no copy in this process's memory, a reflink on file systems that share
    blocks), else in chunks."""
    offset = 0
    copy_range = getattr(os, "copy_file_range", None)
    while offset < size and copy_range is not None:
        try:
            copied = copy_range(source, target, size - offset, offset, offset)
        except OSError:
            break
        if copied <= 0:
            break
        offset += copied
    while offset < size:
        data = os.pread(source, min(_CHUNK, size - offset), offset)
        if not data:
            raise OSError(f"the file being copied ended at byte {offset} of {size}")
        offset += os.pwrite(target, data, offset)
