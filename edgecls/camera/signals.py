"""Signals around the camera loop: SIGTERM stops it like Ctrl-C, and its shutdown cannot be interrupted.

While the loop runs, SIGTERM (systemd, docker stop) raises `Terminated`, a KeyboardInterrupt, so the
loop stops the way Ctrl-C stops it. During the shutdown that follows (threads, recording, final
report), Ctrl-C and SIGTERM are only noted: a second Ctrl-C cannot leave the report "running" or a
recording half-published. Every step of the shutdown has its own time limit, so it always ends.
Outside the main thread (where Python cannot set handlers) both are no-ops.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

from edgecls.errors import Terminated

log = logging.getLogger("edgecls.camera.loop")


@contextlib.contextmanager
def sigterm_stops_loop() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` while the loop runs, so the report is still written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_deferred(received: list[int]) -> Iterator[None]:
    """Ctrl-C and SIGTERM only noted (in `received`) while the block runs: shutdown always completes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum: int, frame: Any) -> None:  # noqa: ARG001
        if not received:
            log.warning("stopping: the report and any recording are being finished first")
        received.append(signum)

    previous = {signum: signal.signal(signum, note) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


__all__ = ["Terminated", "signals_deferred", "sigterm_stops_loop"]
