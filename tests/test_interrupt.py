"""Ctrl-C handling of long runs leaves the caller's SIGINT handler as it found it."""

import signal

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
        calls.append(handler)
        real(signum, handler)
        return None if len(calls) == 1 else handler  # what signal.signal returns for a C handler

    previous = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(signal, "signal", from_c)
    try:
        with StopRequest():
            pass
        assert calls[-1] is signal.default_int_handler
    finally:
        real(signal.SIGINT, previous)
