"""Keep freed memory in the process instead of handing it back to the kernel (Linux, glibc).

glibc serves large allocations (above a threshold that adapts up to 32 MiB) with their own
``mmap`` and unmaps them on ``free``, so the next tensor of that size page-faults fresh,
zero-filled pages back in. A biLM training step frees and allocates tens of megabytes of
activations, so on a CPU it can spend more time in the kernel than in its matmuls (the
docs/pretraining.md and docs/speed.md give measurements). Serving large blocks from
the heap and never trimming it lets them be reused. The cost: the process keeps its peak
memory after the peak has passed.

Process-wide, so nothing calls this on import or when a model is built: the ``pretrain``
command does (``--return-memory`` opts out), and a spaCy training config opts in with the
``spacy-elmo.keep_freed_memory.v1`` callback (:mod:`spacy_elmo.pipeline.callbacks`).
"""

import ctypes
import ctypes.util
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Optional

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_KEPT_TRIM_THRESHOLD = 2**31 - 1
_KEEPING = {"on": False}


def _mallopt() -> Optional[Any]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to reuse freed blocks; ``True`` if it took effect.

    Process-wide and only for allocations made afterwards. Does nothing (``False``) outside
    Linux or with a C library that has no ``mallopt`` (e.g. musl). The same effect from the
    shell, for any command: ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``.
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    _KEEPING["on"] = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEPT_TRIM_THRESHOLD))
    return _KEEPING["on"]


def _malloc_trim() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim(0)``)."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextmanager
def large_allocations_returned() -> Iterator[None]:
    """Inside the block, memory freed is handed back to the system as glibc does by default
    (large allocations get their own mappings, the heap's free top is trimmed), even after
    :func:`keep_freed_memory`; buffers must be freed inside the block for this to apply.

    For one-off work on a few huge buffers, such as serializing a biLM's weights (copies of
    hundreds of MiB, each a little larger than the last): kept, each copy would need fresh
    memory and the process would keep every one of them (measured: +0.7 GB per save of the
    ``original`` biLM's pipeline).
    """
    mallopt = _mallopt() if _KEEPING["on"] else None
    if mallopt is None:
        yield
        return
    mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
    try:
        yield
    finally:
        _malloc_trim()
        mallopt(_M_MMAP_MAX, 0)
        mallopt(_M_TRIM_THRESHOLD, _KEPT_TRIM_THRESHOLD)
