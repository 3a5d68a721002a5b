"""Frames in, prepared model input out: inline on the loop's thread, or pipelined on a worker thread.

`open_frames` opens whatever names a source; `edgecls.camera.grabber.frame_reader` reads it (newest
frame only for live sources, every frame in order for files and folders); a feed prepares the frames.

The camera loop asks a feed for the next `Prepared` frame and runs inference on it. Two feeds:

- `InlineFeed`: reads (files: decodes) and preprocesses on the caller's thread, one frame at a time.
  Frame time = capture wait + preprocess + inference + postprocess (+ outputs).
- `PipelinedFeed`: a worker thread reads and preprocesses frame N+1 while the loop's thread runs
  inference on frame N. Pillow's resize and the runtimes' invoke release the GIL, so the two overlap
  and the frame time approaches the slowest stage instead of the sum. Per-frame latency (capture ->
  result) stays the sum of the stages.

The pipeline is bounded: `depth` slots (default 1) limit how many frames are taken from the reader
but not yet handed to the loop, so a finite source is read in order, every frame, none dropped, and
a live source still gives the newest frame (the grabber keeps only that one). The worker paces
itself: it takes the next frame once a slot is free and late enough that the frame is ready about
when the loop asks for it (from recent timings of both threads: the loop's busy time, the worker's
read + preprocess time, a small safety margin). A frame taken as soon as a slot frees would wait
in the queue for most of an inference, adding that to its age and to the end-to-end latency; paced,
the latency stays the sum of the stages while the stages still overlap.

Every wait has a timeout; `stop()` joins the worker within `join_timeout` seconds; an exception in
the worker is raised again in the loop's thread when the loop reaches the frame that failed (the
frames before it are still processed).

Preprocessing is `edgecls.preprocess.prepare_pixels` / `prepare`, the code training and `predict` use.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecls.camera.grabber import Frame, FrameReader, SequentialReader
from edgecls.camera.sources import FrameSource, open_source
from edgecls.errors import ConfigError
from edgecls.meta import ModelMeta
from edgecls.preprocess import prepare, prepare_pixels

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often a waiting worker checks whether it was asked to stop
PACING_WINDOW = 15  # recent frames the pacing estimates come from
PACING_MARGIN_S = 0.0003  # start this much earlier than the estimates say (plus their spread, below)


@dataclass(frozen=True)
class Prepared:
    """One frame ready for inference, with what it took to get it there."""

    frame: Frame
    batch: np.ndarray  # (1, h, w, 3): uint8 pixels when normalisation is inside the model, else float32
    started: float  # time.perf_counter() when preprocessing began (where frame_age ends)
    capture_wait_ms: float  # waiting for the reader (pipelined: on the worker thread)
    preprocess_ms: float
    reconnects: int  # the reader's reconnect count when the frame was taken (a change resets smoothing)


def prepare_batch(image: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """A BGR frame as a batch of one: uint8 pixels when normalisation is baked in (a uint8-input model
    takes them unconverted), else normalised float32."""
    pixels = prepare_pixels(image, meta, bgr=True) if meta.normalization_baked_in else prepare(image, meta, bgr=True)
    return pixels[None]


NO_BATCH = np.zeros((0,), np.float32)  # a frame that came with its scores (the IMX500): nothing to prepare


def _prepare(frame: Frame, meta: ModelMeta, wait_start: float, reconnects: int, preprocess: bool = True) -> Prepared:
    started = time.perf_counter()
    batch = prepare_batch(frame.image, meta) if preprocess else NO_BATCH
    done = time.perf_counter()
    return Prepared(frame, batch, started, (started - wait_start) * 1e3, (done - started) * 1e3, reconnects)


class InlineFeed:
    """Read and prepare on the caller's thread: no overlap, no extra thread."""

    pipelined = False

    def __init__(self, reader: FrameReader, meta: ModelMeta, preprocess: bool = True) -> None:
        """preprocess: False for a source whose frames come with their scores (the IMX500): no model input is made."""
        self.reader, self.meta, self.preprocess = reader, meta, preprocess

    @property
    def finished(self) -> bool:
        return self.reader.finished

    def start(self) -> None:
        self.reader.start()

    def get(self, timeout: float) -> Prepared | None:
        """The next prepared frame; None after `timeout` seconds or at the end of the source."""
        wait_start = time.perf_counter()
        frame = self.reader.get(timeout)
        if frame is None:
            return None
        return _prepare(frame, self.meta, wait_start, self.reader.counters.reconnects, self.preprocess)

    def stop(self) -> None:
        self.reader.stop()  # stopping twice is harmless


_END = object()  # the worker is done: end of source, its frame limit, stop() or an error


class PipelinedFeed:
    """A worker thread reads and prepares the next frame while the caller runs inference on this one.

    depth: frames taken from the reader but not yet handed to the caller (1: one being prepared or
    waiting while one is in inference). limit: take at most this many frames (the loop's --frames), so
    a finite source is not read past what the loop will process.
    """

    pipelined = True

    def __init__(self, reader: FrameReader, meta: ModelMeta, depth: int = 1, limit: int | None = None,
                 join_timeout: float = 2.0) -> None:
        if depth < 1:
            raise ValueError(f"pipeline depth {depth} must be at least 1")
        self.reader, self.meta, self.depth, self.limit = reader, meta, depth, limit
        self.join_timeout = join_timeout
        self.error: BaseException | None = None  # what stopped the worker, raised again by get()
        self._slots = threading.Semaphore(depth)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth + 1)  # + 1: room for _END, so put never waits
        self._stop = threading.Event()
        self._ended = False
        self._thread: threading.Thread | None = None
        self._taken_at: float | None = None  # when the loop last took a frame (its busy time starts)
        self._busy_s: deque[float] = deque(maxlen=PACING_WINDOW)  # loop: frame taken -> next get()
        self._work_s: deque[float] = deque(maxlen=PACING_WINDOW)  # worker: reader wait + preprocess

    @property
    def finished(self) -> bool:
        """True once the worker is done and every frame it prepared was handed out."""
        return self._ended

    def start(self) -> None:
        if self._thread is None:
            self.reader.start()
            self._thread = threading.Thread(target=self._work, name="edgecls-preprocess", daemon=True)
            self._thread.start()

    def get(self, timeout: float) -> Prepared | None:
        """The next prepared frame, in reader order; None after `timeout` seconds or once the worker is done.

        Raises the worker's exception once the frames prepared before it were handed out.
        """
        if self._ended:
            return None
        if self._taken_at is not None:  # the first call since the last frame: the loop's busy time ends here
            self._busy_s.append(time.perf_counter() - self._taken_at)
            self._taken_at = None
        try:
            item = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if item is _END:
            self._ended = True
            if self.error is not None:
                raise self.error
            return None
        self._taken_at = time.perf_counter()
        self._slots.release()  # the worker may prepare the next frame while this one is in inference
        return item  # type: ignore[return-value]

    def stop(self) -> None:
        """Stop the worker (within join_timeout seconds), then the reader."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(self.join_timeout)
            if thread.is_alive():
                log.warning("%s: the preprocessing thread is still busy after %.1f s; it exits with the program",
                            self.reader.describe(), self.join_timeout)
                if isinstance(self.reader, SequentialReader):
                    return  # closing a capture that another thread is reading can crash OpenCV: leave it open
        self.reader.stop()

    def _work(self) -> None:
        taken = 0
        try:
            while not self._stop.is_set() and (self.limit is None or taken < self.limit):
                if not self._slots.acquire(timeout=POLL_S):
                    continue
                delay = self._start_delay()
                if delay > 0 and self._stop.wait(delay):
                    return
                wait_start = time.perf_counter()
                frame = None
                while frame is None and not self._stop.is_set():
                    frame = self.reader.get(POLL_S)
                    if frame is None and self.reader.finished:
                        return
                if frame is None:
                    return  # stopped
                taken += 1
                item = _prepare(frame, self.meta, wait_start, self.reader.counters.reconnects)
                self._work_s.append(time.perf_counter() - wait_start)
                self._put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread by get()
            self.error = exc
        finally:
            self._put(_END)

    def _start_delay(self) -> float:
        """Seconds to wait before taking the next frame so that it is ready about when the loop asks for it.

        Errs early: the loop's busy time from its lower quartile, the worker's time from its upper quartile
        (a frame that is late costs throughput; one that is early only waits in the queue). 0 until both
        threads have a few timings, when the worker is the slower stage, and when the reader must be waited
        for anyway (a live camera slower than the model: its wait is part of the worker's time).
        """
        taken_at, busy, work = self._taken_at, list(self._busy_s), list(self._work_s)
        if taken_at is None or len(busy) < 3 or len(work) < 3:
            return 0.0
        busy_low = sorted(busy)[len(busy) // 4]
        work_high = sorted(work)[(3 * len(work)) // 4]
        target = taken_at + busy_low - work_high - PACING_MARGIN_S
        return min(max(0.0, target - time.perf_counter()), 1.0)

    def _put(self, item: object) -> None:
        try:
            self._queue.put(item, timeout=self.join_timeout)
        except queue.Full:  # cannot happen while slots bound the queue; never hang on it
            log.error("%s: the pipeline queue stayed full for %.1f s; a prepared frame was lost",
                      self.reader.describe(), self.join_timeout)


def open_frames(source: str | FrameSource | Callable[[], FrameSource], width: int | None = None, height: int | None = None,
                fps: float | None = None, model_size: tuple[int, int] | None = None, crop_fraction: float = 1.0,
                network: Path | None = None) -> tuple[FrameSource, Callable[[], FrameSource] | None, str]:
    """(opened source, how to reopen it when lost (live sources only), its spelling) for any way to name one:
    an `open_source` spelling, an opened FrameSource, or a function that opens one. model_size, network: see open_source."""
    if isinstance(source, (str, Path)):
        spec = str(source)

        def reopen() -> FrameSource:
            return open_source(spec, width, height, fps, model_size=model_size, crop_fraction=crop_fraction, network=network)

        opened = reopen()
        return opened, (reopen if opened.is_live else None), spec
    if hasattr(source, "read"):
        return source, None, type(source).__name__  # type: ignore[return-value]
    if callable(source):
        opened = source()
        return opened, source, getattr(source, "__name__", type(opened).__name__)
    raise ConfigError(f"camera source {source!r} is not a string, a FrameSource or a function that opens one",
                      "Pass e.g. '0', 'clip.mp4', 'frames/' or 'picamera2'")


Feed = InlineFeed | PipelinedFeed


def make_feed(reader: FrameReader, meta: ModelMeta, pipeline: bool = True, limit: int | None = None,
              join_timeout: float = 2.0, preprocess: bool = True) -> Feed:
    """PipelinedFeed (a preprocessing thread) or InlineFeed (everything on the caller's thread; always when
    `preprocess` is False: frames that come with their scores need no model input, and stay paired with them)."""
    if pipeline and preprocess:
        return PipelinedFeed(reader, meta, limit=limit, join_timeout=join_timeout)
    return InlineFeed(reader, meta, preprocess)


__all__ = ["Feed", "InlineFeed", "PipelinedFeed", "Prepared", "make_feed", "open_frames", "prepare_batch"]
