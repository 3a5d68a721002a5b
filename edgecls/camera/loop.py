"""The camera loop: grab -> prepare -> backend.run -> smoothing/threshold/top-k -> overlay and outputs.

`run_camera` stops after `frames` frames, after `seconds`, at the end of a file or folder, when the
window's q/Esc key is pressed, or on Ctrl-C / SIGTERM (caught inside the loop: stop_reason
"interrupted" / "terminated"). Once frames flow, the JSON report is always written (in `finally`),
also when the loop fails; while running it is refreshed every `report_every` seconds (status "running").

Preprocessing is `edgecls.preprocess.prepare_pixels` / `prepare(frame, meta, bgr=True)`, the same code that `predict`,
export validation and `Classifier` use, so a frame gives the same scores here as there.
No TensorFlow: the model is an exported artifact run by edgecls.runtime; OpenCV is imported lazily.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.camera.grabber import FrameReader, frame_reader
from edgecls.camera.sources import CameraError, FrameSource, open_source
from edgecls.camera.stats import LoopStats, system_facts
from edgecls.errors import ConfigError, EdgeclsError, ModelError, require, suggest
from edgecls.fsutil import write_json
from edgecls.postprocess import Class
from edgecls.postprocess import top_k as rank
from edgecls.preprocess import prepare, prepare_pixels

log = logging.getLogger(__name__)

UNCERTAIN = "uncertain"
ARTIFACT_NAMES = ("model.tflite", "model.onnx", "model.xml")
RECORD_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
WINDOW = "edgecls camera"
DEFAULT_RECORD_FPS = 15.0  # live sources that report no frame rate
FAILURES = ("error", "source lost", "source stalled")


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd stop, docker stop) turned into a clean stop of the loop."""


@dataclass(frozen=True)
class Decision:
    """The postprocessed answer for one frame."""

    label: str  # the top-1 label, or "uncertain" when its score is below the threshold
    score: float  # top-1 score after smoothing
    uncertain: bool
    top: list[Class]  # top-k after smoothing (labels never replaced by "uncertain")
    probabilities: np.ndarray  # after smoothing


class Postprocessor:
    """EMA smoothing of probabilities, a confidence threshold and top-k.

    smoothing s in [0, 1): p_smooth = s * p_smooth_previous + (1 - s) * p_frame (0 = off).
    threshold t in [0, 1]: a top-1 score below t gives the label "uncertain".
    """

    def __init__(self, labels: list[str], top_k: int = 3, smoothing: float = 0.0, threshold: float = 0.0) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ConfigError(f"smoothing {smoothing} is outside [0, 1)", "Use 0 (off) to 0.9 (heavy smoothing), e.g. --smoothing 0.6")
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold {threshold} is outside [0, 1]", "Use a top-1 probability, e.g. --threshold 0.5")
        if top_k < 1:
            raise ConfigError(f"top-k {top_k} must be at least 1", "Use e.g. --top-k 3")
        self.labels, self.top_k, self.smoothing, self.threshold = labels, top_k, smoothing, threshold
        self._state: np.ndarray | None = None

    def reset(self) -> None:
        self._state = None

    def __call__(self, probabilities: np.ndarray) -> Decision:
        scores = np.asarray(probabilities, dtype=np.float32).reshape(-1)
        if self.smoothing and self._state is not None and self._state.shape == scores.shape:
            scores = (self.smoothing * self._state + (1.0 - self.smoothing) * scores).astype(np.float32)
        self._state = scores
        top = rank(scores, self.labels, self.top_k)
        uncertain = top[0].score < self.threshold
        return Decision(UNCERTAIN if uncertain else top[0].label, top[0].score, uncertain, top, scores)


@dataclass(frozen=True)
class FrameResult:
    """What `on_result` receives for each processed frame."""

    index: int  # 0, 1, 2, ... over processed frames
    seq: int  # the reader's frame number (gaps are frames the grabber dropped)
    frame: np.ndarray  # the BGR frame as captured (not annotated)
    raw: np.ndarray  # the model's probabilities for this frame alone
    decision: Decision
    timings_ms: dict[str, float]

    @property
    def label(self) -> str:
        return self.decision.label


def resolve_model(model: str | Path) -> Path:
    """An artifact file, or a folder holding exactly one model.tflite / model.onnx / model.xml."""
    path = Path(model).expanduser()
    if path.is_dir():
        found = [path / name for name in ARTIFACT_NAMES if (path / name).is_file()]
        if len(found) == 1:
            return found[0]
        if (path / "model.keras").is_file():
            raise ModelError(
                f"'{path}' is a training run folder; the camera runs exported artifacts (no TensorFlow)",
                f"Export it first: edgecls export {path} --int8 --target tflite, then pass {path}/export/tflite-int8/model.tflite",
            )
        what = "several artifacts" if found else "no model.tflite, model.onnx or model.xml"
        raise ModelError(f"folder '{path}' holds {what}", "Pass the artifact file itself, e.g. EXPORT/tflite-int8/model.tflite")
    if not path.exists():
        raise ModelError(f"model '{path}' does not exist", "Pass an exported .tflite, .onnx or .xml file (made by 'edgecls export')")
    return path


def _check_output_path(path: Path, what: str) -> None:
    """Fail before the camera starts, not after an hour of frames, when an output cannot be written."""
    if path.is_dir():
        raise ConfigError(f"{what} '{path}' is a folder", f"Pass a file path for the {what}")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create folder '{parent}' for the {what}: {exc.strerror}", "Choose a writable path") from exc
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"folder '{parent}' for the {what} is not writable", "Choose a writable path")


def display_available() -> bool:
    """Whether a window can be shown: a desktop session on Linux, always elsewhere."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class Outputs:
    """Overlay plus any of: an OpenCV window, an annotated recording, the live view server."""

    def __init__(self, show: bool, record: Path | None, serve: str | None, record_fps: float | None) -> None:
        self.show, self.record, self.serve = show, record, serve
        self.record_fps = record_fps or DEFAULT_RECORD_FPS
        self.server: Any = None
        self.url: str | None = None
        self.recorded = 0
        self._writer: Any = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None
        self._cv2: Any = require("cv2", "pi") if (show or record or serve) else None
        if show:
            try:
                self._cv2.namedWindow(WINDOW, self._cv2.WINDOW_NORMAL)
            except self._cv2.error:
                log.warning("this OpenCV build cannot open windows (opencv-python-headless?); running headless. "
                            "Use --serve HOST:PORT to watch in a browser")
                self.show = False
        if serve:
            self._start_server(serve)

    @property
    def active(self) -> bool:
        return bool(self.show or self.record or self.server)

    def _start_server(self, address: str) -> None:
        try:
            from edgecls.camera.server import LiveServer, parse_address
        except ImportError as exc:
            raise ConfigError("--serve needs edgecls.camera.server, which this installation lacks", "Reinstall edgecls") from exc
        host, port = parse_address(address)
        self.server = LiveServer(host, port)
        self.server.start()
        self.url = self.server.url
        log.info("live view at %s", self.url)

    def _open_writer(self, width: int, height: int) -> None:
        cv2 = self._cv2
        assert self.record is not None
        fd, tmp = tempfile.mkstemp(prefix=f".{self.record.name}.", suffix=".tmp" + self.record.suffix, dir=self.record.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        codec = RECORD_CODECS[self.record.suffix.lower()]
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*codec), float(self.record_fps), (width, height))
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise ConfigError(f"OpenCV cannot write {codec} video to '{self.record}'", "Try a .avi path (MJPG), or check disk space")
        self._size = (width, height)

    def handle(self, frame: np.ndarray, decision: Decision, live: dict[str, Any], extra: dict[str, Any]) -> bool:
        """Draw and send the frame everywhere it goes; True when the user asked to quit (q, Esc, window closed)."""
        from edgecls.camera.overlay import draw_overlay

        cv2 = self._cv2
        annotated = draw_overlay(frame, decision.label, decision.score, live.get("fps"), live.get("latency_p50_ms"),
                                 uncertain=decision.uncertain)
        if self.record is not None:
            height, width = annotated.shape[:2]
            if self._writer is None:
                self._open_writer(width, height)
            if self._size != (width, height):  # a source whose frame size changed: keep the video's size
                annotated_out = cv2.resize(annotated, self._size, interpolation=cv2.INTER_AREA)
            else:
                annotated_out = annotated
            self._writer.write(annotated_out)
            self.recorded += 1
        if self.server is not None:
            ok, jpeg = cv2.imencode(".jpg", annotated, [cv2.IMWRITE_JPEG_QUALITY, 80])
            if ok:
                self.server.publish(jpeg.tobytes(), {"label": decision.label, "score": decision.score, **live, **extra})
        if self.show:
            cv2.imshow(WINDOW, annotated)
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27):
                return True
            with contextlib.suppress(cv2.error):
                if cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
                    return True
        return False

    def idle(self) -> None:
        """Keep the window responsive while no frame arrives."""
        if self.show:
            self._cv2.waitKey(1)

    def close(self) -> None:
        """Finish the recording (kept when it has frames, renamed into place), close window and server."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            if self._tmp is not None and self.record is not None:
                if self.recorded:
                    os.replace(self._tmp, self.record)
                else:
                    self._tmp.unlink(missing_ok=True)
        if self.server is not None:
            self.server.stop()
        if self.show:
            with contextlib.suppress(Exception):
                self._cv2.destroyWindow(WINDOW)
                self._cv2.waitKey(1)


@contextlib.contextmanager
def _sigterm_stops_loop() -> Iterator[None]:
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


def _open(source: str | FrameSource | Callable[[], FrameSource], width: int | None, height: int | None,
          fps: float | None) -> tuple[FrameSource, Callable[[], FrameSource] | None, str]:
    """(opened source, how to reopen it, its spelling)."""
    if isinstance(source, (str, Path)):
        spec = str(source)

        def reopen() -> FrameSource:
            return open_source(spec, width, height, fps)

        opened = reopen()
        return opened, (reopen if opened.is_live else None), spec
    if hasattr(source, "read"):
        return source, None, type(source).__name__  # type: ignore[return-value]
    if callable(source):
        opened = source()
        return opened, source, getattr(source, "__name__", type(opened).__name__)
    raise ConfigError(f"camera source {source!r} is not a string, a FrameSource or a function that opens one",
                      "Pass e.g. '0', 'clip.mp4', 'frames/' or 'picamera2'")


def run_camera(
    model: str | Path,
    source: str | FrameSource | Callable[[], FrameSource],
    device: str = "cpu",
    threads: int | None = None,
    frames: int | None = None,
    seconds: float | None = None,
    smoothing: float = 0.0,
    threshold: float = 0.0,
    top_k: int = 3,
    headless: bool | None = True,
    record: Path | None = None,
    serve: str | None = None,
    report: Path | None = None,
    on_result: Callable[[FrameResult], None] | None = None,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    warmup: int = 1,
    report_every: float = 10.0,
    stall_timeout: float = 10.0,
    reader_options: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Classify frames from a camera, stream, video or folder; returns the report (also written to `report`).

    source: a spelling for `open_source` ("0", "clip.mp4", "frames/", "rtsp://...", "picamera2"), an opened
    FrameSource, or a function that opens one (live sources are reopened with it when they are lost).
    headless: True = no window; False = show one; None = show one when a display exists.
    width/height/fps: hints for live sources. reader_options: LatestFrameGrabber settings (backoff etc.).
    Raises CameraError, with the report as `.summary`, when a live source is lost for good.
    """
    if frames is not None and frames < 1:
        raise ConfigError(f"frames {frames} must be at least 1", "Use e.g. --frames 100, or leave it out to run until stopped")
    if seconds is not None and seconds <= 0:
        raise ConfigError(f"seconds {seconds} must be positive", "Use e.g. --seconds 30, or leave it out to run until stopped")
    record = Path(record).expanduser() if record is not None else None
    report = Path(report).expanduser() if report is not None else None
    if record is not None:
        if record.suffix.lower() not in RECORD_CODECS:
            raise ConfigError(f"cannot record to '{record}': unsupported suffix '{record.suffix}'{suggest(record.suffix.lower(), RECORD_CODECS)}",
                              f"Use one of {', '.join(RECORD_CODECS)}")
        _check_output_path(record, "recording")
    if report is not None:
        _check_output_path(report, "report")
    show = display_available() if headless is None else not headless
    if show and not display_available():
        log.warning("no display (DISPLAY is not set); running headless. Use --serve HOST:PORT to watch in a browser")
        show = False

    from edgecls.runtime import load_backend

    artifact = resolve_model(model)
    with contextlib.ExitStack() as stack:
        backend = load_backend(artifact, device=device, threads=threads)
        stack.callback(backend.close)
        post = Postprocessor(backend.meta.labels, top_k, smoothing, threshold)
        opened, reopen, spec = _open(source, width, height, fps)
        reader = frame_reader(opened, reopen, **(reader_options or {}))
        stack.callback(reader.stop)
        outputs = Outputs(show, record, serve, opened.fps)
        stack.callback(outputs.close)
        run = _Run(backend, reader, post, outputs, spec, opened, artifact, device, report, on_result,
                   frames, seconds, warmup, report_every, stall_timeout)
        summary = run.execute()
    return summary


class _Run:
    """One execution of the loop and the report it writes."""

    def __init__(self, backend: Any, reader: FrameReader, post: Postprocessor, outputs: Outputs, spec: str,
                 source: FrameSource, artifact: Path, device: str, report: Path | None,
                 on_result: Callable[[FrameResult], None] | None, frames: int | None, seconds: float | None,
                 warmup: int, report_every: float, stall_timeout: float) -> None:
        self.backend, self.reader, self.post, self.outputs = backend, reader, post, outputs
        self.spec, self.source, self.artifact, self.device, self.report = spec, source, artifact, device, report
        self.on_result, self.frames, self.seconds = on_result, frames, seconds
        self.report_every, self.stall_timeout = report_every, stall_timeout
        self.stats = LoopStats(warmup)
        self.labels: Counter[str] = Counter()
        self.last: Decision | None = None
        self.stop_reason = "running"
        self.error: str | None = None
        self.started_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.temp_start = system_facts()["cpu_temp_c"]

    def execute(self) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        try:
            with _sigterm_stops_loop():
                try:
                    self.stop_reason = self._loop()
                except Terminated:
                    self.stop_reason = "terminated"
                except KeyboardInterrupt:
                    self.stop_reason = "interrupted"
        except BaseException as exc:
            self.stop_reason = "error"
            self.error = str(exc) if isinstance(exc, EdgeclsError) else f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.stats.stop()
            self.reader.stop()  # final counters; stopping twice is harmless
            summary = self.summary("failed" if self.stop_reason in FAILURES else "finished")
            if self.report is not None:
                write_json(self.report, summary)
        if self.reader.error is not None and self.stop_reason in ("source lost", "source stalled"):
            error = self.reader.error
            error.summary = summary  # type: ignore[attr-defined]
            raise error
        return summary

    def _loop(self) -> str:
        reader, stats, meta = self.reader, self.stats, self.backend.meta
        reader.start()
        stats.start()
        deadline = stats.started + self.seconds if self.seconds else None
        last_frame_at = stats.started
        next_report = 0.0  # first refresh right after the first frame
        reconnects = 0
        extra = {"backend": self.backend.name, "precision": self.backend.precision_ran}
        while True:
            if self.frames is not None and stats.frames >= self.frames:
                return "frames"
            wait_start = time.perf_counter()
            frame = None
            while frame is None:
                now = time.perf_counter()
                if deadline is not None and now >= deadline:
                    return "seconds"
                frame = reader.get(min(0.25, deadline - now) if deadline is not None else 0.25)
                if frame is not None:
                    break
                if reader.finished:
                    return "source lost" if reader.error is not None else "end of source"
                if reader.state != "running":  # reconnecting: the backoff has its own limits
                    last_frame_at = time.perf_counter()
                elif time.perf_counter() - last_frame_at > self.stall_timeout:
                    reader.error = CameraError(
                        f"{reader.describe()} delivered no frame for {self.stall_timeout:g} s",
                        "Check the camera or stream; a driver stuck in read() cannot be recovered from here",
                    )
                    return "source stalled"
                self.outputs.idle()
            t1 = time.perf_counter()
            last_frame_at = t1
            if reader.counters.reconnects != reconnects:  # a new stream: old evidence says nothing about it
                reconnects = reader.counters.reconnects
                self.post.reset()
            # uint8 pixels when normalisation is inside the model: a uint8-input model takes them unconverted
            batch = (prepare_pixels(frame.image, meta, bgr=True) if meta.normalization_baked_in else prepare(frame.image, meta, bgr=True))[None]
            t2 = time.perf_counter()
            raw = self.backend.run(batch)[0]
            t3 = time.perf_counter()
            decision = self.post(raw)
            t4 = time.perf_counter()
            timings = {
                "capture_wait": (t1 - wait_start) * 1e3, "frame_age": (t1 - frame.captured_at) * 1e3,
                "preprocess": (t2 - t1) * 1e3, "inference": (t3 - t2) * 1e3, "postprocess": (t4 - t3) * 1e3,
                "end_to_end": (t4 - frame.captured_at) * 1e3,
            }
            quit_requested = False
            if self.outputs.active:
                live = {**stats.live(), "dropped": reader.counters.dropped}
                quit_requested = self.outputs.handle(frame.image, decision, live, extra)
                timings["output"] = (time.perf_counter() - t4) * 1e3
            stats.add(timings)
            self.labels[decision.label] += 1
            self.last = decision
            if self.on_result is not None:
                self.on_result(FrameResult(stats.frames - 1, frame.seq, frame.image, raw, decision, timings))
            if quit_requested:
                return "quit key"
            if self.report is not None and self.report_every > 0 and time.perf_counter() >= next_report:
                write_json(self.report, self.summary("running"))
                next_report = time.perf_counter() + self.report_every

    def summary(self, status: str) -> dict[str, Any]:
        counters = self.reader.counters
        system = system_facts()
        last = self.last
        return self.stats.summary(
            status=status,
            stop_reason=self.stop_reason,
            error=self.error or (str(self.reader.error) if self.reader.error is not None else None),
            started_utc=self.started_utc,
            model=str(self.artifact),
            input_size=list(self.backend.meta.input_size),
            backend={"name": self.backend.name, "precision_ran": self.backend.precision_ran,
                     "threads": self.backend.threads, "device": self.device},
            source={"spec": self.spec, "description": self.reader.describe(), "mode": self.reader.mode,
                    "live": bool(self.source.is_live), "fps_reported": self.source.fps,
                    "skipped_files": getattr(self.source, "skipped", [])[:20]},
            settings={"frames": self.frames, "seconds": self.seconds, "smoothing": self.post.smoothing,
                      "threshold": self.post.threshold, "top_k": self.post.top_k, "window": self.outputs.show,
                      "record": str(self.outputs.record) if self.outputs.record else None, "serve": self.outputs.url},
            counts={"processed": self.stats.frames, "frames_recorded": self.outputs.recorded, **counters.as_dict()},
            labels=dict(self.labels.most_common()),
            last=None if last is None else {"label": last.label, "score": round(last.score, 6), "uncertain": last.uncertain,
                                            "top": [{"label": c.label, "id": c.id, "score": round(c.score, 6)} for c in last.top]},
            system={**system, "cpu_temp_start_c": self.temp_start},
        )


__all__ = ["Decision", "FrameResult", "Postprocessor", "Terminated", "UNCERTAIN", "resolve_model", "run_camera"]
