"""One run of the camera loop: the frame-by-frame work, its counters and the JSON report it writes.

edgecls.camera.loop.run_camera opens the model, source, feed and outputs, then hands them to a LoopRun, which runs
the loop until a stop condition, shuts everything down with signals deferred and writes the final report.
No TensorFlow.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.camera.decision import Decision, Postprocessor
from edgecls.camera.outputs import Outputs
from edgecls.camera.pipeline import Feed, Prepared
from edgecls.camera.signals import signals_deferred, sigterm_stops_loop
from edgecls.camera.sources import CameraError
from edgecls.camera.stats import LoopStats, system_facts
from edgecls.errors import EdgeclsError, Terminated
from edgecls.fsutil import write_json
from edgecls.integrations import ResultSink
from edgecls.integrations.credentials import redact_url

log = logging.getLogger("edgecls.camera.loop")  # one logger name for the whole loop (users filter on it)

FAILURES = ("error", "source lost", "source stalled")
SIGNAL_STOPS = ("interrupted", "terminated")
MAX_FAILURES_IN_A_ROW = 30  # frames whose inference raised, in a row, before the run stops


class CameraRunError(EdgeclsError):
    """The loop ran but classified no frame, or inference kept failing. Carries the report as `.summary`."""

    exit_code = 1


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


@dataclass(frozen=True)
class LoopLimits:
    """When the loop stops, what it leaves out of the percentiles, how often it refreshes the report."""

    frames: int | None
    seconds: float | None
    warmup: int
    report_every: float
    stall_timeout: float


class LoopRun:
    """One execution of the loop and the report it writes."""

    def __init__(self, backend: Any, feed: Feed, post: Postprocessor, outputs: Outputs, facts: dict[str, Any],
                 report: Path | None, on_result: Callable[[FrameResult], None] | None, limits: LoopLimits,
                 sinks: tuple[ResultSink, ...] = ()) -> None:
        self.backend, self.feed, self.reader, self.post, self.outputs = backend, feed, feed.reader, post, outputs
        self.facts, self.report, self.on_result, self.limits, self.sinks = facts, report, on_result, limits, sinks
        self.stats = LoopStats(limits.warmup)
        self.labels: Counter[str] = Counter()
        self.last: Decision | None = None
        self.stop_reason = "running"
        self.error: str | None = None
        self.inference_failed = 0  # frames whose inference raised
        self.awaiting_network = 0  # IMX500 frames that came before the sensor's network gave results
        self.inference_error: str | None = None  # the first such error, one line
        self._inference_hint: str | None = None  # its fix, when it is an EdgeclsError
        self._failed_in_a_row = 0
        self.started_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.temp_start = system_facts()["cpu_temp_c"]
        self._last_frame_at = time.perf_counter()  # for stall detection

    def execute(self) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        late_signals: list[int] = []
        failure: EdgeclsError | None = None
        try:
            with sigterm_stops_loop():
                try:
                    self.stop_reason = self._loop()
                except Terminated:
                    self.stop_reason = "terminated"
                except KeyboardInterrupt:
                    self.stop_reason = "interrupted"
        except BaseException as exc:
            self.stop_reason = "error"
            self.error = one_line(exc, with_hint=True)
            raise
        finally:
            with signals_deferred(late_signals):
                summary, failure = self._shut_down()
        if failure is not None:
            failure.summary = summary  # type: ignore[attr-defined]
            raise failure
        return summary

    def _shut_down(self) -> tuple[dict[str, Any], EdgeclsError | None]:
        """Stop the threads, finish the outputs, write the final report; the error to raise afterwards, if any."""
        self.stats.stop()
        self.feed.stop()  # the worker, then the reader: final counters; stopping twice is harmless
        failure: EdgeclsError | None = None
        try:
            self.outputs.close()  # the recording is verified and published here
        except EdgeclsError as exc:
            failure = exc
            self.error = self.error or str(exc)
        for sink in self.sinks:  # before the summary: their final counters go into it
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001 - an integration's failure never costs the report
                log.warning("%s: closing failed (%s)", sink.name, one_line(exc))
        if self.reader.error is not None and self.stop_reason in ("source lost", "source stalled"):
            failure = failure or self.reader.error
        elif self.stats.frames == 0 and self.stop_reason not in (*SIGNAL_STOPS, "error"):
            hint = self._inference_hint if self.inference_failed else "Check the source; the report has the counts"
            failure = failure or CameraRunError(self._why_no_frame(), hint)
            self.error = self.error or failure.message
        elif self.stop_reason == "error" and self.error is None and self.inference_failed:
            failure = CameraRunError(self._failures_text(in_a_row=True), self._inference_hint)
            self.error = failure.message
        if self.inference_failed and self.stats.frames and failure is None:
            log.warning("%s", self._failures_text(in_a_row=False))
        failed = self.stop_reason in FAILURES or failure is not None
        summary = self.summary("failed" if failed else "finished")
        if self.report is not None:
            write_json(self.report, summary)
        return summary, failure

    def _failures_text(self, in_a_row: bool) -> str:
        if in_a_row and not self.stats.frames:
            return f"no frame was classified: {self.inference_failed} frames failed in inference (first error: {self.inference_error})"
        if in_a_row:
            return (f"inference failed on {self._failed_in_a_row} frames in a row after {self.stats.frames} classified "
                    f"(first error: {self.inference_error})")
        total = self.inference_failed + self.stats.frames
        return f"inference failed on {self.inference_failed} of {total} frames (first error: {self.inference_error})"

    def _why_no_frame(self) -> str:
        if self.inference_failed:
            return self._failures_text(in_a_row=True)
        counts, source = self.reader.counters, self.reader.describe()
        if self.awaiting_network:
            return (f"no frame was classified: the IMX500 gave no result for the {self.awaiting_network} frames of {source} "
                    "(its network was still loading, or did not load)")
        if self.stop_reason == "seconds":
            seconds = f"{self.limits.seconds:g} s"
            return f"no frame was classified: {source} delivered no usable frame in {seconds} ({counts.empty} unusable reads)"
        if self.stop_reason == "end of source":
            return f"no frame was classified: {source} ended without a usable frame ({counts.empty} empty or unreadable)"
        return f"no frame was classified ({self.stop_reason})"

    def _inference_failed(self, exc: Exception) -> bool:
        """Count a frame whose inference raised; True when too many in a row mean the run must stop."""
        self.inference_failed += 1
        self._failed_in_a_row += 1
        if self.inference_error is None:
            self.inference_error = one_line(exc)
            self._inference_hint = (exc.hint if isinstance(exc, EdgeclsError) else None) or "Check the model and --backend-device"
            log.warning("inference failed on a frame (counted; %d in a row stop the run): %s", MAX_FAILURES_IN_A_ROW, self.inference_error)
        return self._failed_in_a_row >= MAX_FAILURES_IN_A_ROW

    def _next(self, deadline: float | None) -> Prepared | str:
        """The next prepared frame, or why the loop stops ("seconds", "end of source", ...)."""
        feed, reader = self.feed, self.reader
        while True:
            now = time.perf_counter()
            if deadline is not None and now >= deadline:
                return "seconds"
            item = feed.get(min(0.25, deadline - now) if deadline is not None else 0.25)
            if item is not None:
                self._last_frame_at = time.perf_counter()
                return item
            if feed.finished:
                return "source lost" if reader.error is not None else "end of source"
            if reader.state != "running":  # reconnecting: the backoff has its own limits
                self._last_frame_at = time.perf_counter()
            elif time.perf_counter() - self._last_frame_at > self.limits.stall_timeout:
                reader.error = CameraError(
                    f"{reader.describe()} delivered no frame for {self.limits.stall_timeout:g} s",
                    "Check the camera or stream; a driver stuck in read() cannot be recovered from here",
                )
                return "source stalled"
            self.outputs.idle()

    def _loop(self) -> str:
        feed, stats, limits = self.feed, self.stats, self.limits
        feed.start()
        stats.start()
        deadline = stats.started + limits.seconds if limits.seconds else None
        self._last_frame_at = stats.started
        next_report = 0.0  # first refresh right after the first frame
        reconnects = 0
        extra = {"backend": self.backend.name, "precision": self.backend.precision_ran}
        while True:
            if limits.frames is not None and stats.frames >= limits.frames:
                return "frames"
            wait_start = time.perf_counter()
            item = self._next(deadline)
            if isinstance(item, str):
                return item
            got, frame = time.perf_counter(), item.frame
            if item.reconnects != reconnects:  # a new stream: old evidence says nothing about it
                reconnects = item.reconnects
                self.post.reset()
            if frame.scored and frame.outputs is None:  # the sensor's network is still loading: no result for this frame
                self.awaiting_network += 1
                self.outputs.idle()
                continue
            t2 = time.perf_counter()
            try:
                raw = self.backend.scores(frame.outputs) if frame.scored else self.backend.run(item.batch)[0]
            except Exception as exc:  # noqa: BLE001 - counted and reported (the first one in full), never silent
                if self._inference_failed(exc):
                    return "error"
                continue
            self._failed_in_a_row = 0
            t3 = time.perf_counter()
            decision = self.post(raw)
            t4 = time.perf_counter()
            timings = {
                # pipelined: the worker's wait for the reader; inline: this thread's (the same thing)
                "capture_wait": item.capture_wait_ms if feed.pipelined else (item.started - wait_start) * 1e3,
                "frame_age": (item.started - frame.captured_at) * 1e3, "preprocess": item.preprocess_ms,
                "inference": (t3 - t2) * 1e3, "postprocess": (t4 - t3) * 1e3, "end_to_end": (t4 - frame.captured_at) * 1e3,
            }
            if feed.pipelined:
                timings["input_wait"] = (got - wait_start) * 1e3
            quit_requested = False
            if self.outputs.active:
                live = {**stats.live(), "dropped": self.reader.counters.dropped}
                quit_requested = self.outputs.handle(frame.image, decision, live, extra, seq=frame.seq)
                timings["output"] = (time.perf_counter() - t4) * 1e3
            stats.add(timings, done_at=t4)
            self.labels[decision.label] += 1
            self.last = decision
            if self.on_result is not None or self.sinks:
                result = FrameResult(stats.frames - 1, frame.seq, frame.image, raw, decision, timings)
                if self.on_result is not None:
                    self.on_result(result)
                for sink in self.sinks:
                    sink.offer(result)
            if quit_requested:
                return "quit key"
            if self.report is not None and limits.report_every > 0 and time.perf_counter() >= next_report:
                write_json(self.report, self.summary("running"))
                next_report = time.perf_counter() + limits.report_every

    def summary(self, status: str) -> dict[str, Any]:
        counters, facts, last = self.reader.counters, self.facts, self.last
        return self.stats.summary(
            status=status,
            stop_reason=self.stop_reason,
            error=self.error or (str(self.reader.error) if self.reader.error is not None else None),
            started_utc=self.started_utc,
            model=str(facts["artifact"]),
            input_size=list(self.backend.meta.input_size),
            backend={"name": self.backend.name, "precision_ran": self.backend.precision_ran,
                     "threads": self.backend.threads, "device": facts["device"]},
            source={"spec": redact_url(facts["spec"]), "description": self.reader.describe(), "mode": self.reader.mode,
                    "live": bool(facts["source"].is_live), "fps_reported": facts["source"].fps,
                    "skipped_files": getattr(facts["source"], "skipped", [])[:20]},
            settings={"frames": self.limits.frames, "seconds": self.limits.seconds, "smoothing": self.post.smoothing,
                      "threshold": self.post.threshold, "top_k": self.post.top_k, "window": self.outputs.show,
                      "record": str(self.outputs.record) if self.outputs.record else None,
                      "record_fps": self.outputs.record_fps if self.outputs.record else None, "serve": self.outputs.url,
                      "pipeline": self.feed.pipelined, "capture": self.facts["capture"]},
            counts={"processed": self.stats.frames, "inference_failed": self.inference_failed, "awaiting_network": self.awaiting_network,
                    "frames_recorded": self.outputs.recorded, "record_skipped_by_rate": self.outputs.skipped_by_rate,
                    "output_dropped": self.outputs.dropped, **counters.as_dict()},
            integrations={sink.name: sink.report() for sink in self.sinks},
            inference_error=self.inference_error,
            labels=dict(self.labels.most_common()),
            last=None if last is None else {"label": last.label, "score": round(last.score, 6), "uncertain": last.uncertain,
                                            "top": [{"label": c.label, "id": c.id, "score": round(c.score, 6)} for c in last.top]},
            system={**system_facts(), "cpu_temp_start_c": self.temp_start},
        )


def one_line(exc: BaseException, with_hint: bool = False) -> str:
    """An exception as one short line: an EdgeclsError's message (and hint), else 'Type: first line of the message'."""
    if isinstance(exc, EdgeclsError):
        text = str(exc) if with_hint else exc.message
    else:
        text = f"{type(exc).__name__}: {exc}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = " ".join(lines) if isinstance(exc, EdgeclsError) else (lines[0] if lines else type(exc).__name__)
    return line if len(line) <= 300 else line[:297] + "..."
