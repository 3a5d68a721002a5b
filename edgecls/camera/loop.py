"""The camera loop: grab -> prepare -> backend.run -> smoothing/threshold/top-k -> overlay and outputs.

`run_camera` stops after `frames` frames, after `seconds`, at the end of a file or folder, when the
window's q/Esc key is pressed, or on Ctrl-C / SIGTERM (caught inside the loop: stop_reason
"interrupted" / "terminated"). Once frames flow, the JSON report is always written (in `finally`),
also when the loop fails; while running it is refreshed every `report_every` seconds (status "running").
Shutdown (threads, outputs, the final report) runs with Ctrl-C and SIGTERM deferred, so a second
Ctrl-C cannot leave the report "running" or a recording half-published.

A frame whose inference raises is counted (`counts.inference_failed`, the first error in
`inference_error`) and skipped; MAX_FAILURES_IN_A_ROW of them in a row stop the run. A run that
classified no frame at all raises CameraRunError saying why, after the report was written.

Preprocessing is `edgecls.preprocess.prepare_pixels` / `prepare(frame, meta, bgr=True)`, the same code that `predict`,
export validation and `Classifier` use, so a frame gives the same scores here as there.
With `pipeline=True` (the default) a worker thread reads and preprocesses the next frame while this
thread runs inference on the current one (edgecls.camera.pipeline): the frame time approaches the
slowest stage instead of the sum, with the same frames, in the same order, giving the same results.
No TensorFlow: the model is an exported artifact run by edgecls.runtime; OpenCV is imported lazily.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgecls.camera.decision import UNCERTAIN, Decision, Postprocessor
from edgecls.camera.grabber import frame_reader
from edgecls.camera.model_files import REPORT_NAME, default_report_path, resolve_model, run_inputs
from edgecls.camera.outputs import Outputs, check_outputs
from edgecls.camera.pipeline import make_feed, open_frames
from edgecls.camera.rates import DEFAULT_LIVE_FPS, check_live_fps, record_fps_option, recording_rate
from edgecls.camera.session import CameraRunError, FrameResult, LoopLimits, LoopRun
from edgecls.camera.sources import FrameSource
from edgecls.errors import ConfigError, Terminated
from edgecls.fsutil import check_outputs as check_not_inputs
from edgecls.fsutil import sweep_stale_temps
from edgecls.integrations import ResultSink
from edgecls.integrations.credentials import redact_url


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
    pipeline: bool = True,
    token_file: str | Path | None = None,
    sinks: Sequence[ResultSink] = (),
    capture: str = "auto",
    record_drop: bool = False,
    live_fps: float = DEFAULT_LIVE_FPS,
    record_fps: float | None = None,
) -> dict[str, Any]:
    """Classify frames from a camera, stream, video or folder; returns the report (also written to `report`).

    source: a spelling for `open_source` ("0", "clip.mp4", "frames/", "rtsp://...", "picamera2"), an opened
    FrameSource, or a function that opens one (live sources are reopened with it when they are lost).
    headless: True = no window; False = show one; None = show one when a display exists.
    width/height/fps: hints for live sources. reader_options: LatestFrameGrabber settings (backoff etc.).
    pipeline: read and preprocess the next frame on a worker thread while this one is in inference.
    token_file: the live view's access token (required on every route); without one, a server bound to a
    non-loopback address makes its own and logs the URL with it once. The live view also answers the JSON
    API (edgecls.camera.api: /api/info, /api/classify), sharing the model with the loop under a lock.
    record_drop: record a file or folder like a live source (real time, frames skipped rather than waited for).
    live_fps: the live view's JPEGs a second at most while someone watches its stream (0 < live_fps <= 60).
    record_fps: the recording's frames a second (0 < record_fps <= 60, never above the source's rate; also the video's
    fps): None = edgecls.camera.rates.DEFAULT_RECORD_FPS for a real-time recording (a live source, record_drop), every
    frame of a file. Frames left out are counted (counts.record_skipped_by_rate), never drawn or encoded.
    capture: "auto" lets a camera deliver the smallest frames covering the model (a USB mode, picamera2's lores
    stream: edgecls.camera.capture_modes) unless width/height are given; "full" keeps the camera's own size.
    sinks: ResultSinks (edgecls.integrations: MQTT, frames kept for retraining) offered every result on this
    thread; they do their work on threads of their own. Their counters go into the report's "integrations".
    Outputs (report, record) that are, or lie inside, an input (model, its meta.json, the source file or
    folder, the token file) are refused before any work.
    Raises CameraError, with the report as `.summary`, when a live source is lost for good, and CameraRunError
    (likewise) when no frame was classified.
    """
    if frames is not None and frames < 1:
        raise ConfigError(f"frames {frames} must be at least 1", "Use e.g. --frames 100, or leave it out to run until stopped")
    if capture not in ("auto", "full"):
        raise ConfigError(f"capture {capture!r} is not 'auto' or 'full'", "Use --capture auto (smallest frames) or --capture full")
    if seconds is not None and seconds <= 0:
        raise ConfigError(f"seconds {seconds} must be positive", "Use e.g. --seconds 30, or leave it out to run until stopped")
    live_fps = check_live_fps(live_fps)
    record_fps = record_fps_option(record_fps, record)
    artifact = resolve_model(model)
    token_path = Path(token_file).expanduser() if token_file is not None else None
    check_not_inputs({"--record": record, "--report": report}, run_inputs(artifact, source, token_path))
    show, record, report = check_outputs(headless, record, report)
    if record is not None and report is not None and record.resolve() == report.resolve():
        raise ConfigError(f"--record and --report are the same file '{record}'", "Give the recording and the report different names")
    token = None
    if token_path is not None:
        if not serve:
            raise ConfigError("--token-file applies to the live view only", "Add --serve HOST:PORT, or leave --token-file out")
        from edgecls.camera.access import read_token_file

        token = read_token_file(token_path)
    if record is not None:
        sweep_stale_temps(record.parent)  # temp recordings a SIGKILL left behind

    on_sensor = artifact.suffix.lower() == ".rpk"  # the IMX500: the network runs on the camera, frames come with outputs
    with contextlib.ExitStack() as stack:
        backend = _load_backend(artifact, source, device, threads)
        stack.callback(backend.close)
        post = Postprocessor(backend.meta.labels, top_k, smoothing, threshold)
        small = capture == "auto" and not (width or height) and not on_sensor
        opened, reopen, spec = open_frames(source, width, height, fps, model_size=backend.meta.input_size if small else None,
                                           crop_fraction=backend.meta.crop_fraction, network=artifact if on_sensor else None)
        if on_sensor and not callable(getattr(opened, "read_outputs", None)):
            opened.close()
            raise ConfigError(f"--model {artifact.name} runs on the AI Camera's sensor, and {opened.describe()} is not that camera",
                              "Pass --device imx500")
        reader = frame_reader(opened, reopen, **(reader_options or {}))
        feed = make_feed(reader, backend.meta, pipeline, limit=frames, join_timeout=(reader_options or {}).get("join_timeout", 2.0),
                         preprocess=not on_sensor)
        stack.callback(feed.stop)  # the worker first, then the reader
        api = None
        if serve:
            from edgecls.camera.api import ClassifyApi

            api = ClassifyApi(backend, top_k=top_k, threshold=threshold)
            backend = api.backend  # the loop and the API share the model under one lock
        lossless = not (opened.is_live or record_drop)
        outputs = Outputs(show, record, serve, recording_rate(record_fps, opened.fps, real_time=not lossless), token=token,
                          lossless=lossless, mount=api.mount if api else None, live_fps=live_fps, source_fps=opened.fps)
        stack.callback(outputs.close)
        for sink in sinks:
            sink.open(backend)
            stack.callback(sink.close)
        limits = LoopLimits(frames, seconds, warmup, report_every, stall_timeout)
        facts = {"spec": spec, "source": opened, "artifact": artifact, "device": device, "capture": capture}
        run = LoopRun(backend, feed, post, outputs, facts, report, on_result, limits, tuple(sinks))
        if api is not None:
            api.camera_stats = run.stats.live
        summary = run.execute()
    return summary


def _load_backend(artifact: Path, source: object, device: str, threads: int | None) -> Any:
    """The artifact's runtime backend; for a network.rpk the IMX500 sensor's stand-in (its meta and labels, no inference)."""
    if artifact.suffix.lower() != ".rpk":
        from edgecls.runtime import load_backend

        return load_backend(artifact, device=device, threads=threads)
    from edgecls.camera.imx500 import SensorBackend
    from edgecls.camera.sources import source_kind

    if isinstance(source, str) and source_kind(source) != "imx500":
        raise ConfigError(f"--model {artifact.name} runs on the AI Camera's sensor, not with --device {redact_url(source)}",
                          "Pass --device imx500")
    return SensorBackend(artifact)


__all__ = ["REPORT_NAME", "Decision", "FrameResult", "Postprocessor", "CameraRunError", "Terminated", "UNCERTAIN", "default_report_path",
           "resolve_model", "run_camera"]
