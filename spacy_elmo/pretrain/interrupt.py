"""Stopping a long run: the first Ctrl-C (SIGINT) or SIGTERM asks to stop after the current
step, a second one aborts. Job schedulers (SLURM, Kubernetes, systemd) send SIGTERM and wait a
while before SIGKILL, which a step and a checkpoint fit into."""

import signal
import threading
from types import FrameType
from typing import Any, Callable, Dict, Optional

SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
"""The signals that ask to stop, by the name messages give them."""


class StopRequest:
    """While active, SIGINT and SIGTERM set :attr:`requested` and :attr:`by` (and call
    ``on_request``) instead of ending the process.

    A second signal raises :class:`KeyboardInterrupt` at once. Outside the main thread, where
    Python cannot install signal handlers, both keep their default behaviour.
    """

    def __init__(self, on_request: Optional[Callable[[], None]] = None) -> None:
        self.on_request = on_request
        self.requested = False
        self.by = ""
        """The name of the signal that asked to stop ("Ctrl-C" or "SIGTERM")."""
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in SIGNAL_NAMES}
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, previous in self._previous.items():
            # None: the previous handler was installed from C; the default is the closest match.
            signal.signal(signum, previous if previous is not None else _default_handler(signum))
        self._previous = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.by = SIGNAL_NAMES.get(signal.Signals(signum), "a signal")
        if self.on_request is not None:
            self.on_request()


class StopAtOnce(StopRequest):
    """While active, the first SIGINT or SIGTERM raises ``make_error(signal name)`` at once:
    for the setup before the first step, when there is nothing to finish or save. The
    trainer's own :class:`StopRequest` takes over while it runs."""

    def __init__(self, make_error: Callable[[str], BaseException]) -> None:
        super().__init__()
        self.make_error = make_error

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        raise self.make_error(SIGNAL_NAMES.get(signal.Signals(signum), "a signal"))


def _default_handler(signum: int) -> Any:
    return signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
