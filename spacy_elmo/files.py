"""Writing files so that a crash never leaves a partial one: the one place that does it.

Every file spacy-elmo writes (weights, vocabularies, logs, checkpoints, pipeline data) is
written under a temporary name beside its target, flushed to disk, and renamed into place.
A reader therefore sees the old file or the new one, never half of one. Temporary names
start with ``.`` and contain ``.tmp-`` so that :func:`remove_orphans` can find the ones a
killed process left behind.
"""

import ctypes
import errno
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

TMP_MARK = ".tmp-"


def temporary_name(target: Path) -> Path:
    """A fresh hidden sibling of ``target`` that :func:`remove_orphans` recognises."""
    return target.with_name(f".{target.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")


def fsync_path(path: Path) -> None:
    """Flush a file (or a directory's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is flushed and renamed to ``target``.

    On any exception the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    tmp = temporary_name(target)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
        fsync_path(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_directory(target: PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory to fill; on success it is flushed and renamed to ``target``.

    ``target`` must not exist when the block ends (a reader sees no folder or the complete
    one). On any exception the temporary directory is removed and ``target`` is untouched.
    """
    target = Path(target)
    tmp = temporary_name(target)
    tmp.mkdir()
    try:
        yield tmp
        for path in tmp.iterdir():
            if path.is_file():
                fsync_path(path)
        fsync_path(tmp)
        if target.exists():
            raise FileExistsError(f"{target} already exists; move it away before renaming {tmp.name} onto it")
        os.rename(tmp, target)
        fsync_path(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_directory(source: PathLike, target: PathLike) -> None:
    """Put the complete directory ``source`` at ``target``, replacing what is there, so that at
    every instant ``target`` is the old directory or the new one.

    On Linux both are swapped in one ``renameat2(RENAME_EXCHANGE)`` call and the old one is
    then deleted. Where that call is missing (other systems, some file systems), the old
    directory is renamed aside first: a crash between the two renames leaves it there under
    a temporary name, which :func:`restore_directory` puts back.
    """
    source, target = Path(source), Path(target)
    fsync_path(source)
    if not target.exists():
        os.rename(source, target)
    elif _exchange(source, target):
        shutil.rmtree(source, ignore_errors=True)
    else:
        aside = _aside_name(target)
        os.rename(target, aside)
        os.rename(source, target)
        shutil.rmtree(aside, ignore_errors=True)
    fsync_path(target.parent)


def restore_directory(target: PathLike) -> bool:
    """Undo a :func:`replace_directory` that a crash stopped between its two renames: if
    ``target`` is missing and its set-aside copy exists, rename the copy back; return whether it did."""
    target = Path(target)
    aside = _aside_name(target)
    if target.exists() or not aside.is_dir():
        return False
    os.rename(aside, target)
    return True


def _aside_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.previous")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def write_bytes_atomic(target: PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp, open(tmp, "xb") as out:
        out.write(data)


def write_text_atomic(target: PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``target`` atomically."""
    write_bytes_atomic(target, text.encode("utf-8"))


def _same_content(path: Path, data: bytes, chunk: int = 1 << 24) -> bool:
    """Whether ``path`` holds exactly ``data``, read in chunks (a biLM's weights are hundreds
    of MiB; reading the file whole would hold a second copy)."""
    view = memoryview(data)
    try:
        if not path.is_file() or path.stat().st_size != len(data):
            return False
        with path.open("rb") as file:
            for start in range(0, len(data), chunk):
                if file.read(chunk) != view[start : start + chunk]:
                    return False
            return file.read(1) == b""
    except OSError:
        return False


def write_if_changed(path: PathLike, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically unless the file already holds exactly ``data``;
    return whether it was written."""
    if _same_content(Path(path), data):
        return False
    write_bytes_atomic(path, data)
    return True


def remove_orphans(directory: PathLike, keep: Optional[Callable[[Path], bool]] = None) -> List[Path]:
    """Delete temporary files and folders a killed writer left in ``directory``; return them.

    ``keep(path)`` True spares a temporary that may still hold the only copy of something
    (a complete checkpoint whose rename was interrupted, for instance).
    """
    directory = Path(directory)
    removed: List[Path] = []
    if not directory.is_dir():
        return removed
    for path in directory.iterdir():
        if path.name.startswith(".") and TMP_MARK in path.name and not (keep is not None and keep(path)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed
