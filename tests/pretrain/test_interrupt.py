"""Ctrl-C / SIGTERM handling of long runs leaves the caller's handlers as it found them."""

import signal
import subprocess
import sys

from spacy_elmo.pretrain.interrupt import StopRequest


def test_the_previous_handler_comes_back():
    def mine(signum, frame):
        return None

    previous = signal.signal(signal.SIGINT, mine)
    try:
        with StopRequest():
            assert signal.getsignal(signal.SIGINT) is not mine
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_handler_installed_from_c_is_replaced_by_the_default(monkeypatch):
    real = signal.signal
    calls = []

    def from_c(signum, handler):
        calls.append((signum, handler))
        previous = real(signum, handler)
        return None if len(calls) <= 2 else previous  # signal.signal returns None for a handler installed from C

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(signal, "signal", from_c)
    try:
        with StopRequest():
            pass
        restored = dict(calls[2:])
        assert restored == {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    finally:
        for signum, handler in previous.items():
            real(signum, handler)


SIGTERM_TO_ITSELF = """
import os, signal, time
from spacy_elmo.pretrain.interrupt import StopRequest
before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
with StopRequest() as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)
    assert stop.requested and stop.by == "SIGTERM"
assert {signum: signal.getsignal(signum) for signum in before} == before
print("ok")
"""


def test_sigterm_asks_to_stop_like_ctrl_c_and_both_handlers_are_restored():
    """In a child process: a SIGTERM sent to the test process itself would end the whole run if
    the handler were not in place."""
    done = subprocess.run([sys.executable, "-c", SIGTERM_TO_ITSELF], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
