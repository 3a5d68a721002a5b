"""Reading frames for the loop: newest-frame-only for live sources, every frame in order for files.

Live sources (cameras, streams): `LatestFrameGrabber` reads on a daemon thread as fast as the source
delivers and keeps one slot with the newest frame, so a slow model never works on a frame that sat in
a driver queue (opencv/opencv#13145, #10671). A frame that is replaced before the loop took it counts
as dropped. When the source stops delivering, it is closed and reopened with exponential backoff.

Finite sources (video files, image folders): `SequentialReader` reads on the caller's thread and hands
out every frame in order, nothing dropped, so `--frames N` on a file always means its first N frames.

Every wait has a timeout and `stop()` returns within `join_timeout` seconds, whatever the source does.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from edgecls.camera.sources import CameraError, FrameSource
from edgecls.errors import EdgeclsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """One captured frame: BGR uint8 (H, W, 3), its number among frames captured, and when it was read."""

    image: np.ndarray
    seq: int  # 1, 2, 3, ... over the valid frames the source delivered (gaps = dropped frames)
    captured_at: float  # time.perf_counter() when read() returned it
    outputs: object = None  # a source that classifies (the IMX500's read_outputs): its output tensors for this frame
    scored: bool = False  # the source classifies: outputs None means it had no result for this frame yet


def read_frame(source: FrameSource) -> tuple[object, object, bool]:
    """(image, outputs, scored): `read_outputs()` where the source classifies its frames itself (the IMX500), else `read()`.
    The loop turns the outputs into scores (a malformed tensor is then one counted inference failure, not a lost camera)."""
    read_outputs = getattr(source, "read_outputs", None)
    if callable(read_outputs):
        image, outputs = read_outputs()
        return image, outputs, True
    return source.read(), None, False


@dataclass
class Counters:
    """What happened to the frames a source delivered."""

    captured: int = 0  # valid frames read from the source
    consumed: int = 0  # frames handed to the loop
    dropped: int = 0  # live only: replaced by a newer frame before the loop took them
    empty: int = 0  # reads that gave nothing usable: None, zero-size, wrong dtype or shape (not fatal)
    reconnects: int = 0  # times a lost live source was reopened successfully
    reconnect_failures: int = 0  # reopen attempts that failed
    backoff_s: list[float] = field(default_factory=list)  # waits before reopen attempts, in order (first 100)

    def as_dict(self) -> dict:
        return asdict(self)


def usable(image: object) -> bool:
    """A frame the loop can use: a non-empty uint8 array (H, W, 3)."""
    return (
        isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        and image.shape[0] > 0 and image.shape[1] > 0
    )


class LatestFrameGrabber:
    """Reads a live source on a daemon thread and keeps only the newest frame.

    reopen: called to open the source again after it stopped delivering (None: the loss is final).
    empty_limit: consecutive unusable reads that mean the source is lost.
    backoff_start, backoff_max, max_reconnects: reopen attempts wait backoff_start, then twice as long
    each time up to backoff_max, and give up after max_reconnects failed attempts in a row.
    """

    mode = "latest"

    def __init__(
        self,
        source: FrameSource,
        reopen: Callable[[], FrameSource] | None = None,
        *,
        empty_limit: int = 10,
        empty_pause: float = 0.01,
        backoff_start: float = 0.5,
        backoff_max: float = 8.0,
        max_reconnects: int = 6,
        join_timeout: float = 2.0,
    ) -> None:
        self.source = source
        self._reopen = reopen
        self.empty_limit = max(1, empty_limit)
        self.empty_pause = empty_pause
        self.backoff_start, self.backoff_max = backoff_start, max(backoff_start, backoff_max)
        self.max_reconnects = max_reconnects
        self.join_timeout = join_timeout
        self.counters = Counters()
        self.error: CameraError | None = None  # set when the source was lost for good
        self.state = "idle"  # idle | running | reconnecting | finished
        self._description = source.describe()
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._taken = 0  # seq of the last frame handed out
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    def describe(self) -> str:
        return self._description

    def start(self) -> LatestFrameGrabber:
        if self._thread is None:
            self.state = "running"
            self._thread = threading.Thread(target=self._run, name="edgecls-grabber", daemon=True)
            self._thread.start()
        return self

    def get(self, timeout: float) -> Frame | None:
        """The newest frame not handed out yet; None after `timeout` seconds or once the grabber finished."""
        with self._cond:
            self._cond.wait_for(lambda: self._fresh() or self.state == "finished", max(0.0, timeout))
            if not self._fresh():
                return None
            frame = self._latest
            assert frame is not None
            self._taken = frame.seq
            self.counters.consumed += 1
            return frame

    def _fresh(self) -> bool:
        return self._latest is not None and self._latest.seq > self._taken

    def stop(self) -> None:
        """Stop reading and release the source (on the reader thread; within join_timeout seconds)."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            self._close_source()
            self._finish()
            return
        thread.join(self.join_timeout)
        if thread.is_alive():
            # Closing a capture that another thread is reading can crash OpenCV: leave it to that thread.
            log.warning("%s: the capture thread is still blocked in read() after %.1f s; it exits with the program",
                        self._description, self.join_timeout)

    def _run(self) -> None:
        misses = 0
        try:
            while not self._stop.is_set():
                try:
                    image, outputs, scored = read_frame(self.source)
                except Exception as exc:  # noqa: BLE001 - a driver error is a lost source, not a crash of the loop
                    log.warning("%s: read failed (%s: %s)", self._description, type(exc).__name__, exc)
                    image, outputs, scored, misses = None, None, False, self.empty_limit - 1
                now = time.perf_counter()
                if not usable(image):
                    self.counters.empty += 1
                    misses += 1
                    if misses >= self.empty_limit:
                        if not self._reconnect(misses):
                            break
                        misses = 0
                    else:
                        self._stop.wait(self.empty_pause)
                    continue
                misses = 0
                with self._cond:
                    if self._fresh():
                        self.counters.dropped += 1
                    seq = self._latest.seq + 1 if self._latest is not None else 1
                    self._latest = Frame(image, seq, now, outputs, scored)  # type: ignore[arg-type]
                    self.counters.captured += 1
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - reported to the loop through self.error
            self.error = CameraError(f"{self._description}: capture thread failed ({type(exc).__name__}: {exc})")
        finally:
            self._close_source()
            self._finish()

    def _reconnect(self, misses: int) -> bool:
        """Reopen the source with exponential backoff; False when stopped or out of attempts."""
        self._close_source()
        if self._reopen is None:
            self.error = CameraError(f"{self._description} stopped delivering frames ({misses} empty reads in a row)",
                                     "Check the camera or stream; it cannot be reopened from here")
            return False
        delay, last = self.backoff_start, "no attempt made"
        for attempt in range(1, self.max_reconnects + 1):
            self.state = "reconnecting"
            log.warning("%s: no frames (%d empty reads); reopening in %.2f s (attempt %d of %d)",
                        self._description, misses, delay, attempt, self.max_reconnects)
            if len(self.counters.backoff_s) < 100:
                self.counters.backoff_s.append(delay)
            if self._stop.wait(delay):
                return False
            try:
                self.source = self._reopen()
            except Exception as exc:  # noqa: BLE001 - every failure is retried, then reported
                self.counters.reconnect_failures += 1
                last = str(exc) if isinstance(exc, EdgeclsError) else f"{type(exc).__name__}: {exc}"
                delay = min(delay * 2, self.backoff_max)
                continue
            self.counters.reconnects += 1
            self.state = "running"
            log.warning("%s: reopened after %d attempt(s)", self._description, attempt)
            return True
        self.error = CameraError(
            f"lost {self._description} and could not reopen it in {self.max_reconnects} attempts ({last})",
            "Check the cable, power and network, then start again",
        )
        return False

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception as exc:  # noqa: BLE001 - closing a dead device may fail; nothing left to do
            log.debug("%s: close failed: %s", self._description, exc)

    def _finish(self) -> None:
        with self._cond:
            self.state = "finished"
            self._cond.notify_all()


class SequentialReader:
    """Every frame of a finite source, in order, read on the caller's thread (deterministic)."""

    mode = "sequential"

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.counters = Counters()
        self.error: CameraError | None = None
        self.state = "idle"
        self._description = source.describe()
        self._seq = 0

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    def describe(self) -> str:
        return self._description

    def start(self) -> SequentialReader:
        self.state = "running"
        return self

    def get(self, timeout: float = 0.0) -> Frame | None:  # noqa: ARG002 - reads are synchronous; kept for the shared interface
        """The next usable frame (unusable ones are counted and skipped); None at the end of the source."""
        while self.state != "finished":
            image, outputs, scored = read_frame(self.source)
            if image is None:
                self.stop()
                return None
            if not usable(image):
                self.counters.empty += 1
                continue
            self._seq += 1
            self.counters.captured += 1
            self.counters.consumed += 1
            return Frame(image, self._seq, time.perf_counter(), outputs, scored)  # type: ignore[arg-type]
        return None

    def stop(self) -> None:
        if self.state != "finished":
            self.state = "finished"
            try:
                self.source.close()
            except Exception as exc:  # noqa: BLE001
                log.debug("%s: close failed: %s", self._description, exc)


FrameReader = LatestFrameGrabber | SequentialReader


def frame_reader(source: FrameSource, reopen: Callable[[], FrameSource] | None = None, **options: float) -> FrameReader:
    """LatestFrameGrabber for live sources, SequentialReader for finite ones (options go to the grabber)."""
    if getattr(source, "is_live", False):
        return LatestFrameGrabber(source, reopen, **options)  # type: ignore[arg-type]
    return SequentialReader(source)


__all__ = ["Counters", "Frame", "FrameReader", "LatestFrameGrabber", "SequentialReader", "frame_reader", "usable"]
