"""Ctrl-C during a long run: the first press asks to stop after the current step, the second aborts."""

import signal
import threading
from types import FrameType
from typing import Any, Callable, Optional


class StopRequest:
    """While active, SIGINT sets :attr:`requested` (and calls ``on_request``) instead of raising.

    A second SIGINT raises :class:`KeyboardInterrupt` at once. Outside the main thread, where
    Python cannot install signal handlers, Ctrl-C keeps its default behaviour.
    """

    def __init__(self, on_request: Optional[Callable[[], None]] = None) -> None:
        self.on_request = on_request
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._installed:
            # None: the previous handler was installed from C; the default is the closest match.
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            self._installed = False

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.on_request is not None:
            self.on_request()
