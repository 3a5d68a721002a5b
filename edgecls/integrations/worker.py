"""A worker thread fed through a bounded queue: what the inference thread hands off, and what was dropped.

`submit(item)` never blocks: when the queue is full the item is dropped and counted (the newest one is
refused, so what is queued is handled in order). `close()` lets the worker finish what is queued for
at most `drain_timeout` seconds, then stops it; items left are counted as dropped. An exception in the
handler is counted (the first one kept, one line) and the worker goes on with the next item.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
_STOP = object()


class BoundedWorker(Generic[T]):
    """Runs `handler(item)` on one daemon thread for items submitted from other threads."""

    def __init__(self, name: str, handler: Callable[[T], None], maxsize: int = 8, drain_timeout: float = 2.0) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize {maxsize} must be at least 1")
        self.name, self.handler, self.drain_timeout = name, handler, drain_timeout
        self.submitted = 0  # items accepted into the queue
        self.done = 0  # items the handler finished (with or without an error)
        self.dropped = 0  # items refused because the queue was full, or left when closed
        self.failed = 0  # items whose handler raised
        self.first_error: str | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"edgecls-{name}", daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Queue `item` for the worker; False (and counted as dropped) when the queue is full or closed."""
        if self._closed:
            self.dropped += 1
            return False
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            return False
        self.submitted += 1
        return True

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        """Handle what is queued (at most drain_timeout seconds), then stop the thread. Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(_STOP, timeout=self.drain_timeout)
        except queue.Full:
            pass
        self._thread.join(self.drain_timeout)
        if self._thread.is_alive():
            log.warning("%s: still busy after %.1f s; %d queued item(s) dropped", self.name, self.drain_timeout, self.pending)
        left = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            left += item is not _STOP
        self.dropped += left
        if self._thread.is_alive():
            self._queue.put_nowait(_STOP)  # the handler still running stops after its item

    def counts(self) -> dict[str, Any]:
        return {"queued": self.submitted, "done": self.done, "dropped": self.dropped, "failed": self.failed,
                "first_error": self.first_error}

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self.handler(item)
            except Exception as exc:  # noqa: BLE001 - counted and reported; the next item still runs
                self.failed += 1
                if self.first_error is None:
                    self.first_error = f"{type(exc).__name__}: {exc}"[:300]
                    log.warning("%s failed (counted; the run goes on): %s", self.name, self.first_error)
            finally:
                self.done += 1


__all__ = ["BoundedWorker"]
