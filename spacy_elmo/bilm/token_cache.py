"""A bounded LRU cache of context-insensitive token vectors.

The token layer of the biLM depends on nothing but a token's character ids, so reusing a
vector computed in an earlier batch is exact. Entries are keyed by those ids and live in
one preallocated ``(size, P)`` table, so a lookup is a single gather.

Every method holds the cache's lock: threads sharing one biLM must never see a slot that
another thread has claimed but not written yet, or a table being replaced.
"""

from collections import OrderedDict
from typing import Hashable, List, Optional, Sequence, Tuple

import torch

from ..errors import ElmoOptionsError
from ..locks import PicklableLock

DEFAULT_TOKEN_CACHE_SIZE = 10_000
"""Distinct tokens whose vectors a biLM keeps between batches, by default: the biLM and the
``elmo`` component's layer settings both read it from here."""


class TokenCache:
    """Maps a token's character-id key to its ``(P,)`` vector; holds at most ``size`` entries."""

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ElmoOptionsError(
                f"token_cache_size must be an integer >= 0, got {size!r}: the distinct tokens whose vectors are kept "
                f"between batches (0 turns the token cache off)."
            )
        self.size = size
        self._slots: OrderedDict[bytes, int] = OrderedDict()
        self._table: Optional[torch.Tensor] = None
        self._weights_version: Hashable = None
        self._lock = PicklableLock(reentrant=True)

    def __len__(self) -> int:
        return len(self._slots)

    def clear(self) -> None:
        """Forget every entry and free the table (call whenever the weights change)."""
        with self._lock:
            self._slots.clear()
            self._table = None

    def validate(self, weights_version: Hashable) -> None:
        """Empty the cache if the weights it was filled with have changed since."""
        with self._lock:
            if weights_version != self._weights_version:
                self.clear()
                self._weights_version = weights_version

    def lookup(self, keys: Sequence[bytes]) -> Tuple[List[int], Optional[torch.Tensor], List[int]]:
        """Positions of ``keys`` found, their vectors ``(n_found, P)``, and positions missing."""
        with self._lock:
            return self._lookup(keys)

    def _lookup(self, keys: Sequence[bytes]) -> Tuple[List[int], Optional[torch.Tensor], List[int]]:
        found: List[int] = []
        slots: List[int] = []
        missing: List[int] = []
        for position, key in enumerate(keys):
            slot = self._slots.get(key)
            if slot is None:
                missing.append(position)
            else:
                self._slots.move_to_end(key)
                found.append(position)
                slots.append(slot)
        if not found or self._table is None:
            return [], None, list(range(len(keys)))
        index = torch.tensor(slots, dtype=torch.long, device=self._table.device)
        return found, self._table.index_select(0, index), missing

    def store(self, keys: Sequence[bytes], vectors: torch.Tensor) -> None:
        """Remember ``vectors[i]`` for ``keys[i]``, evicting the least recently used."""
        if self.size == 0 or len(keys) == 0:
            return
        with self._lock:
            self._store(keys, vectors)

    def _store(self, keys: Sequence[bytes], vectors: torch.Tensor) -> None:
        keys, vectors = keys[-self.size :], vectors[-self.size :].detach()
        if self._table is None or self._table.shape[1:] != vectors.shape[1:] or self._table.device != vectors.device:
            self.clear()
            self._table = vectors.new_empty((self.size, vectors.shape[1]))
        slots = []
        for key in keys:
            slot = self._slots.get(key)
            if slot is None:
                if len(self._slots) < self.size:
                    slot = len(self._slots)
                else:
                    _, slot = self._slots.popitem(last=False)
            self._slots[key] = slot
            self._slots.move_to_end(key)
            slots.append(slot)
        index = torch.tensor(slots, dtype=torch.long, device=vectors.device)
        self._table.index_copy_(0, index, vectors.to(self._table.dtype))
