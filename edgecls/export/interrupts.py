"""Ctrl-C during `edgecls export`: remembered even where a converter's native code turns it into its own error or
swallows it (OpenVINO's frontend reports it as a RuntimeError), so the export stops instead of carrying on."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

_INTERRUPTED = threading.Event()


@contextlib.contextmanager
def noticing_interrupts() -> Iterator[None]:
    """Remember a Ctrl-C for the duration; the previous SIGINT handler still runs, and it and sys.unraisablehook are
    restored on the way out. Off the main thread, or under a handler that is not a Python callable, nothing changes."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        _INTERRUPTED.set()
        previous(signum, frame)

    def unraisable(info: Any) -> None:  # a KeyboardInterrupt raised inside a __del__ is dropped by Python, not by us
        if not (isinstance(info.exc_value, KeyboardInterrupt) and _INTERRUPTED.is_set()):
            previous_hook(info)

    previous_hook = sys.unraisablehook
    _INTERRUPTED.clear()
    signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook
        _INTERRUPTED.clear()


def interrupted() -> bool:
    """Whether a Ctrl-C came inside noticing_interrupts(), whatever became of its KeyboardInterrupt."""
    return _INTERRUPTED.is_set()


def raise_if_interrupted() -> None:
    if _INTERRUPTED.is_set():
        raise KeyboardInterrupt
