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

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to reuse freed blocks; ``True`` if it took effect.

    Process-wide and only for allocations made afterwards. Does nothing (``False``) outside
    Linux or with a C library that has no ``mallopt`` (e.g. musl). The same effect from the
    shell, for any command: ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
