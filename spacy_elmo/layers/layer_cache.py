"""A memory-bounded LRU cache of a frozen biLM's layers per token sequence.

A frozen, stateless biLM gives the same layers for the same tokens every time, so a
training run that sees the same sentences every epoch can skip the biLM after the first.
Every method holds the cache's lock, so threads sharing one pipeline can share the cache.
"""

from collections import OrderedDict
from typing import Hashable, Optional, Union

import numpy as np
from thinc.types import Floats3d

from ..locks import PicklableLock

Layers = Union[Floats3d, np.ndarray]
"""Float32 layers, or float16 ones while the on-disk layer store is in use (see its docs)."""


class LayerCache:
    """Token sequence → its ``(L+1, n, 2P)`` layers, holding at most ``max_bytes`` of arrays."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"layer cache size must be >= 0, got {max_bytes}.")
        self.max_bytes = max_bytes
        self.n_bytes = 0
        self.hits = 0
        self.filled_in_training = False
        """Whether a training update has added to the cache: from then on inference adds too."""
        self._entries: OrderedDict[Hashable, Layers] = OrderedDict()
        self._lock = PicklableLock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Optional[Layers]:
        """The cached layers of ``key`` (shared: callers copy before changing them), or None."""
        with self._lock:
            layers = self._entries.get(key)
            if layers is not None:
                self.hits += 1
                self._entries.move_to_end(key)
            return layers

    def put(self, key: Hashable, layers: Layers) -> None:
        size = layers.nbytes
        if size > self.max_bytes:
            return
        copied = layers.copy()
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = copied
            self.n_bytes += size
            while self.n_bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.n_bytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.n_bytes = 0
            self.filled_in_training = False
