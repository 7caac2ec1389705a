"""A thread lock for objects that are pickled or deep-copied (spaCy pipelines, Thinc models).

threading's locks refuse to be pickled, and a copy must never share its original's lock
or start out holding it: a ``PicklableLock`` pickles and copies as a new, released lock.
"""

import threading
from typing import Tuple


class PicklableLock:
    """A ``threading.Lock``, or an ``RLock`` if ``reentrant``, used with ``with``."""

    def __init__(self, reentrant: bool = False) -> None:
        self.reentrant = reentrant
        self._lock = threading.RLock() if reentrant else threading.Lock()

    def __enter__(self) -> "PicklableLock":
        self._lock.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    def __reduce__(self) -> Tuple[type, Tuple[bool]]:
        return (PicklableLock, (self.reentrant,))
