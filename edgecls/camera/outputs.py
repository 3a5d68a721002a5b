"""Where the camera loop's annotated frames go: an OpenCV window, a recording, the live view server.

Off the inference path: the recording and the live view are drawn, encoded and written by an output
thread of their own. The loop only hands the frame over (`handle` returns at once): for a live source
(or with `lossless=False`) the recording is real time, at most `record_fps` frames a second (--record-fps,
DEFAULT_RECORD_FPS unless given: frames in between are never drawn or encoded, counted as `skipped_by_rate`), the
output thread takes the newest frame, and a frame it had no time for is skipped and counted
(`dropped`), so recording never slows inference (the thread runs under SCHED_IDLE, else at niceness camera.priority.OUTPUT_NICE:
where inference uses every core, it gets the CPU only when inference leaves some); for a file or folder (no real time to keep up with)
the recording keeps every frame (with --record-fps below the file's rate: the frames due by the file's own clock,
seq / source_fps) and the loop waits when the output thread is OUTPUT_DEPTH frames behind (`edgecls camera
--record-drop` treats a file like a live source). The video's fps is the recording's rate, so it plays in real time. The live view encodes
JPEGs only as often as it wants them (LiveServer.wants_frame: its stream clients at most `live_fps`, DEFAULT_LIVE_FPS
unless --live-fps says otherwise, a snapshot refresh otherwise), and with a recording only frames that are recorded
too (one overlay for both: every n-th recorded frame while watched, n = ceil(record_fps / live_fps), so equal rates show
every recorded frame rather than beating against the JPEG timer); its stats are updated ten times a second. The window
is drawn on the loop's thread (GUI toolkits want one thread).

OpenCV is imported only when one of them is on (edgecls.errors.require names the extra to install).
A recording is written to a temp file beside its target (edgecls.fsutil's short `.edgecls-tmp-` names,
removed on errors and signals, swept at the next run when a SIGKILL left one), re-opened with OpenCV
and frame-counted once the writer is released, and renamed into place only when it reads back every
frame written (OpenCV's writer reports nothing on a full disk). A run that recorded nothing leaves no
file. The recording gets the mode a plain open() gives (the umask).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.camera.priority import lower_thread_priority, restore_thread_priority
from edgecls.camera.rates import DEFAULT_LIVE_FPS, DEFAULT_RECORD_FPS, check_live_fps
from edgecls.errors import ConfigError, require, suggest
from edgecls.fsutil import atomic_path, check_parent

log = logging.getLogger(__name__)

RECORD_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
WINDOW = "edgecls camera"
OUTPUT_DEPTH = 4  # frames a file's recording may be behind before the loop waits for the output thread
STATS_INTERVAL_S = 0.1  # live stats published at most this often (without a new frame)
CLOSE_TIMEOUT_S = 10.0  # seconds close() waits for the output thread to write what it was handed


def display_available() -> bool:
    """Whether a window can be shown: a desktop session on Linux, always elsewhere."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def check_output_path(path: Path, what: str) -> None:
    """Fail before the camera starts, not after an hour of frames, when an output cannot be written."""
    if path.is_dir():
        raise ConfigError(f"{what} '{path}' is a folder", f"Pass a file path for the {what}")
    check_parent(path)


def check_outputs(headless: bool | None, record: str | Path | None, report: str | Path | None) -> tuple[bool, Path | None, Path | None]:
    """(show a window, recording path, report path), checked before the camera starts.

    headless: True = no window; False = a window (headless with a warning where no display exists);
    None = a window when a display exists.
    """
    record = Path(record).expanduser() if record is not None else None
    report = Path(report).expanduser() if report is not None else None
    if record is not None:
        if record.suffix.lower() not in RECORD_CODECS:
            near = suggest(record.suffix.lower(), RECORD_CODECS)
            raise ConfigError(f"cannot record to '{record}': unsupported suffix '{record.suffix}'{near}",
                              f"Use one of {', '.join(RECORD_CODECS)}")
        check_output_path(record, "recording")
    if report is not None:
        check_output_path(report, "report")
    show = display_available() if headless is None else not headless
    if show and not display_available():
        log.warning("no display (DISPLAY is not set); running headless. Use --serve HOST:PORT to watch in a browser")
        show = False
    return show, record, report


@dataclass(frozen=True)
class _Job:
    """One frame for the output thread, with what the overlay shows."""

    frame: np.ndarray
    label: str
    score: float
    uncertain: bool
    live: dict[str, Any]
    extra: dict[str, Any]
    record: bool  # write it to the recording
    serve: bool  # encode it for the live view


class Outputs:
    """Overlay plus any of: an OpenCV window, an annotated recording, the live view server (see the module docstring).

    record_fps: the recording's frames a second (recording_rate), also the video's fps; None: DEFAULT_RECORD_FPS.
    lossless: keep every frame in the recording (files and folders); False drops frames the output thread
    had no time for (live sources). source_fps: a lossless recording's source rate: with record_fps below it, the
    frames due by the file's clock (seq / source_fps) are recorded, the others skipped by rate.
    `recorded` counts frames written, `skipped_by_rate` frames the rate left out (never drawn nor encoded for the
    recording), `dropped` frames the output thread had no time for.
    mount: called with the LiveServer before it starts, to add routes (edgecls.camera.api.ClassifyApi.mount).
    live_fps: the live view's JPEGs a second at most while a stream client watches (check_live_fps).
    """

    def __init__(self, show: bool, record: Path | None, serve: str | None, record_fps: float | None, token: str | None = None,
                 lossless: bool = False, mount: Callable[[Any], object] | None = None, live_fps: float = DEFAULT_LIVE_FPS,
                 source_fps: float | None = None) -> None:
        self.show, self.record, self.serve, self.token = show, record, serve, token
        self.live_fps = check_live_fps(live_fps)
        self.lossless = lossless and record is not None
        self.record_fps = record_fps or DEFAULT_RECORD_FPS
        # a file's clock to pace a lossless recording by, when the recording's rate is below the file's
        self._source_fps = source_fps if self.lossless and source_fps and self.record_fps < source_fps else None
        # with a recording, the live view takes every n-th recorded frame at most (n = this): never above live_fps
        self._serve_every = max(1, math.ceil(self.record_fps / self.live_fps - 1e-9))
        self._recorded_since_served = 0
        self._handed = 0
        self.server: Any = None
        self.url: str | None = None
        self.recorded = 0
        self.skipped_by_rate = 0
        self.dropped = 0
        self.error: BaseException | None = None  # what stopped the output thread, raised by the next handle() or close()
        self._error_raised = False
        self._writer: Any = None
        self._publish: contextlib.AbstractContextManager[Path] | None = None  # atomic_path: temp file -> record
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None
        self._cv2: Any = None
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._next_record_at: float | None = None  # when the next frame is due for the recording (None: the first one is)
        self._next_stats_at = 0.0
        self._thread: threading.Thread | None = None
        if show or record or serve:
            self._cv2 = require("cv2", "pi")
        if show:
            try:
                self._cv2.namedWindow(WINDOW, self._cv2.WINDOW_NORMAL)
            except self._cv2.error:
                log.warning("this OpenCV build cannot open windows (opencv-python-headless?); running headless. "
                            "Use --serve HOST:PORT to watch in a browser")
                self.show = False
        if serve:
            self._start_server(serve, mount)
        if self.record is not None or self.server is not None:
            self._thread = threading.Thread(target=self._work, name="edgecls-output", daemon=True)
            self._thread.start()

    @property
    def active(self) -> bool:
        return bool(self.show or self.record or self.server)

    def _start_server(self, address: str, mount: Callable[[Any], object] | None) -> None:
        try:
            from edgecls.camera.server import LiveServer, parse_address
        except ImportError as exc:
            raise ConfigError("--serve needs edgecls.camera.server, which this installation lacks", "Reinstall edgecls") from exc
        host, port = parse_address(address)
        self.server = LiveServer(host, port, token=self.token)
        self.server.max_stream_fps = self.live_fps
        if mount is not None:
            mount(self.server)  # more routes (the JSON API) before the first request can arrive
        self.server.start()
        self.url = self.server.url  # never the token: the URL goes into the report
        if self.server.token_generated:  # the only place this run's token is shown: once, on stderr
            log.info("live view at %s (a new access token for this run; pass --token-file FILE to keep one)", self.server.url_with_token)
        else:
            log.info("live view at %s", self.url)

    def handle(self, frame: np.ndarray, decision: Any, live: dict[str, Any], extra: dict[str, Any], seq: int | None = None) -> bool:
        """Send the frame everywhere it goes; True when the user asked to quit (q, Esc, window closed).

        decision: anything with label, score and uncertain (edgecls.camera.decision.Decision). seq: the source's frame
        number (1, 2, ...; else the frames handed are counted). Returns at once except for a file's recording that is
        OUTPUT_DEPTH frames behind. Raises what stopped the output thread.
        """
        self._raise_error()
        server, now = self.server, time.monotonic()
        self._handed += 1
        record = self.record is not None and self._recording_due(now, seq)
        if self.record is None:
            serve = server is not None and server.wants_frame()
        else:  # the live view takes its frames from the recorded ones: one overlay serves both
            self._recorded_since_served += record
            serve = record and server is not None and (server.wants_frame() or (
                server.stream_clients > 0 and self._recorded_since_served >= self._serve_every))
            if serve:
                self._recorded_since_served = 0
        if record or serve:
            self._hand_over(_Job(frame, decision.label, float(decision.score), bool(decision.uncertain), live, extra, record, serve))
        if server is not None and (serve or now >= self._next_stats_at):  # the page polls twice a second: 10 updates are plenty
            self._next_stats_at = now + STATS_INTERVAL_S
            server.publish_stats({"label": decision.label, "score": decision.score, **live, **extra})
        return self._show(frame, decision, live) if self.show else False

    def _recording_due(self, now: float, seq: int | None) -> bool:
        """Whether this frame goes into the recording: at most record_fps a second by the wall clock (live), by the
        file's clock (a lossless recording slower than its file), else every frame. Counts the ones left out."""
        if self.lossless and self._source_fps is None:
            return True
        at = now if not self.lossless else ((seq if seq is not None else self._handed) - 1) / self._source_fps  # type: ignore[operator]
        step, due = 1.0 / self.record_fps, self._next_record_at
        if due is not None and at < due - 1e-6:  # the tolerance: k / fps sums drift by float rounding
            self.skipped_by_rate += 1
            return False
        # one interval on; after a stall, not earlier than one interval back (so the next frame is due at once)
        self._next_record_at = at + step if due is None else max(due + step, at - step)
        return True

    def _show(self, frame: np.ndarray, decision: Any, live: dict[str, Any]) -> bool:
        from edgecls.camera.overlay import draw_overlay

        cv2 = self._cv2
        annotated = draw_overlay(frame, decision.label, decision.score, live.get("fps"), live.get("latency_p50_ms"),
                                 uncertain=decision.uncertain)
        cv2.imshow(WINDOW, annotated)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return True
        with contextlib.suppress(cv2.error):
            if cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
                return True
        return False

    def _hand_over(self, job: _Job) -> None:
        with self._cond:
            if self.lossless:  # a file: wait for room rather than lose a frame of the recording
                while len(self._jobs) >= OUTPUT_DEPTH and self.error is None and self._thread is not None and self._thread.is_alive():
                    self._cond.wait(0.5)
            elif self._jobs:  # live: the newest frame replaces the one still waiting
                self._jobs.popleft()
                self.dropped += 1
            self._jobs.append(job)
            self._cond.notify_all()

    def _raise_error(self) -> None:
        if self.error is not None and not self._error_raised:
            self._error_raised = True
            raise self.error

    # ---------------------------------------------------------------- the output thread

    def _work(self) -> None:
        if not self.lossless and not self._stopping:
            lower_thread_priority()  # live: inference wins the CPU; frames the output thread misses are dropped and counted
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._jobs or self._stopping)
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                self._cond.notify_all()
            try:
                self._write(job)
            except BaseException as exc:  # noqa: BLE001 - raised again on the loop's thread
                with self._cond:
                    self.error = exc
                    self.dropped += len(self._jobs)
                    self._jobs.clear()
                    self._cond.notify_all()
                return

    def _write(self, job: _Job) -> None:
        from edgecls.camera.overlay import draw_overlay

        cv2, server = self._cv2, self.server
        # a recorded frame was chosen for the live view when handed over (every n-th one); a live-only one is checked again
        publish = job.serve and server is not None and (job.record or server.wants_frame())
        if not (job.record or publish):
            return
        annotated = draw_overlay(job.frame, job.label, job.score, job.live.get("fps"), job.live.get("latency_p50_ms"),
                                 uncertain=job.uncertain)
        if job.record:
            height, width = annotated.shape[:2]
            if self._writer is None:
                self._open_writer(width, height)
            if self._size != (width, height):  # a source whose frame size changed: keep the video's size
                annotated_out = cv2.resize(annotated, self._size, interpolation=cv2.INTER_AREA)
            else:
                annotated_out = annotated
            self._writer.write(annotated_out)
            self.recorded += 1
        if publish:
            ok, jpeg = cv2.imencode(".jpg", annotated, [cv2.IMWRITE_JPEG_QUALITY, 80])
            if ok:
                server.publish(jpeg.tobytes(), {"label": job.label, "score": job.score, **job.live, **job.extra})

    def _open_writer(self, width: int, height: int) -> None:
        cv2, record = self._cv2, self.record
        if record is None:
            raise RuntimeError("_open_writer called without a recording path")
        self._publish = atomic_path(record, suffix=record.suffix)
        self._tmp = self._publish.__enter__()
        codec = RECORD_CODECS[record.suffix.lower()]
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*codec), float(self.record_fps), (width, height))
        if not self._writer.isOpened():
            self._writer = None
            self._discard(None)
            raise ConfigError(f"OpenCV cannot write {codec} video to '{record}'", "Try a .avi path (MJPG), or check disk space")
        self._size = (width, height)

    def idle(self) -> None:
        """Keep the window responsive while no frame arrives."""
        if self.show:
            self._cv2.waitKey(1)

    def close(self) -> None:
        """Let the output thread write what it was handed, close window and server, then finish the recording:
        verified and renamed into place when it has frames.

        Raises ConfigError (and leaves no file under the recording's name) when the recording does not read
        back every frame written, or what stopped the output thread if the loop did not see it. Closing twice is harmless.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            if not self.lossless:
                restore_thread_priority(thread)  # the loop has stopped: nothing left to yield to
            thread.join(CLOSE_TIMEOUT_S)
            if thread.is_alive():
                log.warning("the output thread is still writing after %.0f s; the recording is left unfinished", CLOSE_TIMEOUT_S)
                self._writer = None  # never release a writer another thread is using
        try:
            if self.server is not None:
                self.server.stop()
            if self.show:
                with contextlib.suppress(Exception):
                    self._cv2.destroyWindow(WINDOW)
                    self._cv2.waitKey(1)
        finally:
            self._finish_recording()
        self._raise_error()

    def _finish_recording(self) -> None:
        from edgecls.data.video import verify_video

        writer, self._writer = self._writer, None
        if self._publish is None or self._tmp is None or self.record is None:
            return
        try:
            if writer is not None:
                writer.release()
            if not self.recorded:
                raise _NothingRecordedError()
            verify_video(self._tmp, self.record, self.recorded, self._size)
        except _NothingRecordedError:
            self._discard(None)
        except BaseException as exc:
            self._discard(exc)
            raise
        else:
            publish, self._publish = self._publish, None
            publish.__exit__(None, None, None)  # renames the temp file into place

    def _discard(self, exc: BaseException | None) -> None:
        """Remove the temp recording (atomic_path's clean-up); no file appears under the recording's name."""
        publish, self._publish = self._publish, None
        if publish is not None:
            error = exc if exc is not None else _NothingRecordedError()
            with contextlib.suppress(_NothingRecordedError):
                publish.__exit__(type(error), error, error.__traceback__)


class _NothingRecordedError(Exception):
    """No frame reached the recording: there is nothing to publish."""


__all__ = ["RECORD_CODECS", "WINDOW", "Outputs", "check_output_path", "check_outputs", "display_available"]
