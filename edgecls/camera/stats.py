"""Latency per stage of the camera loop, FPS, frame counts and system facts, as JSON and as a table.

Stages, in milliseconds from time.perf_counter():
  capture_wait  waiting for the reader (live: until a fresh frame exists; files: reading + decoding it)
  preprocess    edgecls.preprocess.prepare (BGR -> RGB, crop, resize, float32)
  inference     backend.run on a batch of one
  postprocess   smoothing, threshold, top-k
  output        overlay, window, recording and live view (only when one of them is on)
  input_wait    pipelined runs only: how long the inference thread waited for the next prepared frame
                (near zero: inference is the slowest stage; large: capture or preprocessing is)
  end_to_end    from the moment the frame was captured to the result being ready (frame age + the
                processing stages, + the time a prepared frame waited for inference when pipelined):
                what a user waiting for the label experiences
frame_age is how old the frame already was when processing started (live: time spent waiting in the
grabber's slot; near zero for files, which are read on demand).
frame_time is the interval between consecutive results (1 / FPS, steady state): with the pipeline on,
capture and preprocessing of the next frame overlap inference of this one, so it approaches the
slowest stage instead of the sum; `frame_time_vs_inference` is its p50 over the inference p50.
cpu_cores_used is the process's CPU time (all its threads) over the run's wall time: close to the
machine's core count means the run is CPU-bound, and overlapping stages cannot make it faster.

The first `warmup` frames (model and cache warm-up) are left out of the percentiles, not of the counts.
Memory stays bounded on week-long runs: n, mean and max are exact; percentiles come from a uniform
random sample (reservoir) of at most RESERVOIR values per stage, which is every value for runs of up
to RESERVOIR frames (about 28 minutes at 30 FPS).
"""
from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

STAGES = ("capture_wait", "preprocess", "input_wait", "inference", "postprocess", "output", "end_to_end")
EXTRA_SERIES = ("frame_age", "frame_time")
THROTTLE_BITS = {
    0: "under-voltage now", 1: "ARM frequency capped now", 2: "throttled now", 3: "soft temperature limit now",
    16: "under-voltage occurred", 17: "ARM frequency capping occurred", 18: "throttling occurred",
    19: "soft temperature limit occurred",
}
_CPU_ZONES = ("cpu", "soc", "x86_pkg_temp", "package", "core", "arm")
RESERVOIR = 50_000
LIVE_REFRESH_S = 0.1


class Series:
    """Milliseconds of one stage: exact count, mean and max; a bounded uniform sample for percentiles."""

    def __init__(self, capacity: int = RESERVOIR, seed: int = 0) -> None:
        self.capacity = capacity
        self.n, self.total, self.max = 0, 0.0, float("-inf")
        self.sample: list[float] = []
        self._rng = np.random.default_rng(seed)

    def add(self, value: float) -> None:
        self.n += 1
        self.total += value
        self.max = max(self.max, value)
        if len(self.sample) < self.capacity:
            self.sample.append(value)
        else:  # Algorithm R: keep each of the n values with probability capacity / n
            slot = int(self._rng.integers(self.n))
            if slot < self.capacity:
                self.sample[slot] = value

    def describe(self) -> dict[str, float | int | None]:
        if not self.n:
            return describe_ms([])
        p50, p90, p99 = np.percentile(np.asarray(self.sample, np.float64), [50, 90, 99])
        return {"n": self.n, "mean": round(self.total / self.n, 3), "p50": round(float(p50), 3),
                "p90": round(float(p90), 3), "p99": round(float(p99), 3), "max": round(self.max, 3)}


def describe_ms(values: Any) -> dict[str, float | int | None]:
    """n, mean, p50, p90, p99, max (ms, 3 decimals) of a sequence of milliseconds."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return {"n": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = np.percentile(data, [50, 90, 99])
    return {"n": int(data.size), "mean": round(float(data.mean()), 3), "p50": round(float(p50), 3),
            "p90": round(float(p90), 3), "p99": round(float(p99), 3), "max": round(float(data.max()), 3)}


class LoopStats:
    """Collects per-frame timings; `summary()` turns them into the report."""

    def __init__(self, warmup: int = 1, window: int = 120) -> None:
        self.warmup = max(0, warmup)
        self.series: dict[str, Series] = {name: Series() for name in (*STAGES, *EXTRA_SERIES)}
        self._first: list[dict[str, float]] = []  # the warm-up frames, used only when nothing came after them
        self.frames = 0
        self.started = time.perf_counter()
        self.ended: float | None = None
        self._recent: deque[tuple[float, float]] = deque(maxlen=max(2, window))  # (done at, end_to_end ms)
        self._last_done: float | None = None
        self._cpu_started = self._cpu_ended = time.process_time()
        self._live: dict[str, float | int | None] | None = None
        self._live_at = 0.0

    def start(self) -> None:
        self.started = time.perf_counter()
        self._cpu_started = time.process_time()

    def add(self, timings_ms: dict[str, float], done_at: float | None = None) -> None:
        """One processed frame: milliseconds per stage name (and frame_age); done_at: when its result was
        ready (time.perf_counter(); now when None). frame_time is measured from the previous frame's done_at,
        and counted once both frames are past the warm-up."""
        now = time.perf_counter() if done_at is None else done_at
        values = dict(timings_ms)
        if self._last_done is not None:
            values["frame_time"] = (now - self._last_done) * 1e3
        self._last_done = now
        self.frames += 1
        if self.frames <= self.warmup:
            self._first.append(values)
        else:
            for name, value in values.items():
                if name in self.series and not (name == "frame_time" and self.warmup and self.frames == self.warmup + 1):
                    self.series[name].add(value)
        self._recent.append((now, values.get("end_to_end", float("nan"))))

    def stop(self) -> None:
        self.ended = time.perf_counter()
        self._cpu_ended = time.process_time()

    def cpu_cores_used(self) -> float | None:
        """Average number of cores the process kept busy (CPU time of all its threads / wall time)."""
        cpu = (self._cpu_ended if self.ended is not None else time.process_time()) - self._cpu_started
        return round(cpu / self.elapsed, 2) if self.elapsed > 0 else None

    @property
    def elapsed(self) -> float:
        return (self.ended or time.perf_counter()) - self.started

    def fps(self) -> float:
        """Frames per second over the whole run so far."""
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0

    def live(self) -> dict[str, float | int | None]:
        """Cheap numbers for the overlay and live view: FPS and end-to-end p50/p99 over the last frames (recomputed at
        most every LIVE_REFRESH_S seconds: the inference thread asks once per frame)."""
        now = time.perf_counter()
        if self._live is not None and now - self._live_at < LIVE_REFRESH_S:
            return {**self._live, "frames": self.frames}
        self._live_at = now
        self._live = self._compute_live()
        return dict(self._live)

    def _compute_live(self) -> dict[str, float | int | None]:
        recent = list(self._recent)
        fps = (len(recent) - 1) / (recent[-1][0] - recent[0][0]) if len(recent) > 1 and recent[-1][0] > recent[0][0] else None
        latencies = [ms for _, ms in recent if ms == ms]
        p50, p99 = (np.percentile(latencies, [50, 99]) if latencies else (None, None))
        return {"fps": None if fps is None else round(fps, 2), "frames": self.frames,
                "latency_p50_ms": None if p50 is None else round(float(p50), 2),
                "latency_p99_ms": None if p99 is None else round(float(p99), 2)}

    def summary(self, **facts: Any) -> dict[str, Any]:
        """The JSON-ready report: stages, frame age, FPS, plus whatever facts the caller adds."""
        if self.frames > self.warmup:
            skip, described = self.warmup, {name: series.describe() for name, series in self.series.items()}
        else:  # a run no longer than the warm-up: report what there is
            skip = 0
            described = {name: describe_ms([t[name] for t in self._first if name in t]) for name in self.series}
        return {
            "frames": self.frames,
            "seconds": round(self.elapsed, 3),
            "fps": round(self.fps(), 3),
            "cpu_cores_used": self.cpu_cores_used(),
            "warmup_frames_excluded": skip,
            "stages_ms": {name: described[name] for name in STAGES if described[name]["n"]},
            "frame_age_ms": described["frame_age"],
            "frame_time_ms": described["frame_time"],
            "frame_time_vs_inference": _ratio(described["frame_time"]["p50"], described["inference"]["p50"]),
            **facts,
        }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator is not None and denominator else None


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def cpu_temperatures() -> dict[str, float]:
    """°C per thermal zone type (from /sys/class/thermal), where the kernel exposes them."""
    temps: dict[str, float] = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        raw = _read(f"{zone}/temp")
        if raw is None or not raw.lstrip("-").isdigit():
            continue
        name = _read(f"{zone}/type") or Path(zone).name
        key, n = name, 2
        while key in temps:
            key, n = f"{name}#{n}", n + 1
        temps[key] = round(int(raw) / 1000.0, 1)
    return temps


def cpu_temperature(temps: dict[str, float] | None = None) -> float | None:
    """The CPU's temperature: the hottest CPU-like zone, else the hottest zone, else None."""
    temps = cpu_temperatures() if temps is None else temps
    cpu = [t for name, t in temps.items() if any(word in name.lower() for word in _CPU_ZONES)]
    chosen = cpu or list(temps.values())
    return max(chosen) if chosen else None


def throttling() -> dict[str, Any] | None:
    """`vcgencmd get_throttled` decoded (Raspberry Pi firmware), or None where vcgencmd is absent."""
    tool = shutil.which("vcgencmd")
    if tool is None:
        return None
    try:
        out = subprocess.run([tool, "get_throttled"], capture_output=True, text=True, timeout=2.0).stdout.strip()
        value = int(out.partition("=")[2], 16)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {"raw": None, "flags": ["vcgencmd get_throttled failed"]}
    return {"raw": hex(value), "flags": [text for bit, text in THROTTLE_BITS.items() if value & (1 << bit)]}


def system_facts() -> dict[str, Any]:
    """Temperature, throttling, governor and clock where this machine exposes them (None elsewhere)."""
    temps = cpu_temperatures()
    mhz = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    return {
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_temp_c": cpu_temperature(temps),
        "thermal_zones_c": temps,
        "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu0_mhz": round(int(mhz) / 1000.0) if mhz and mhz.isdigit() else None,
        "throttled": throttling(),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_summary(summary: dict[str, Any], console: Any) -> None:
    """Print the report as a rich table of stages plus one line of facts."""
    from rich.table import Table

    title = (f"Camera: {summary.get('frames', 0)} frames in {summary.get('seconds', 0):.2f} s, "
             f"{summary.get('fps', 0):.1f} FPS ({summary.get('stop_reason', '?')})")
    console.print(title)
    table = Table()
    for name in ("stage (ms)", "p50", "p90", "p99", "max", "mean"):
        table.add_column(name, justify="left" if name.startswith("stage") else "right")
    rows = [*summary.get("stages_ms", {}).items(), ("frame_age", summary.get("frame_age_ms", {})),
            ("frame_time (1/FPS)", summary.get("frame_time_ms", {}))]
    for name, stage in rows:
        if stage and stage.get("n"):
            table.add_row(name, *(_ms(stage.get(key)) for key in ("p50", "p90", "p99", "max", "mean")))
    console.print(table)
    frame_time, ratio = (summary.get("frame_time_ms") or {}).get("p50"), summary.get("frame_time_vs_inference")
    if frame_time and ratio is not None:
        pipelined = (summary.get("settings") or {}).get("pipeline")
        how = "" if pipelined is None else (", pipelined" if pipelined else ", not pipelined")
        console.print(f"frame time p50 {frame_time:.2f} ms = {ratio:.2f}x inference p50 "
                      f"({1000.0 / frame_time:.0f} FPS steady{how})", markup=False)
    backend = summary.get("backend", {})
    counts = summary.get("counts", {})
    system = summary.get("system", {})
    parts = [
        f"backend {backend.get('name', '?')} ({backend.get('precision_ran', '?')}, threads {backend.get('threads') or 'default'})",
        f"source {summary.get('source', {}).get('description', '?')} [{summary.get('source', {}).get('mode', '?')}]",
        f"dropped {counts.get('dropped', 0)}, empty {counts.get('empty', 0)}, reconnects {counts.get('reconnects', 0)}",
    ]
    if summary.get("cpu_cores_used") is not None:
        parts.append(f"CPU busy {summary['cpu_cores_used']:.2f} of {system.get('cpu_count') or '?'} cores")
    if system.get("cpu_temp_c") is not None:
        parts.append(f"CPU {system['cpu_temp_c']:.1f} °C")
    if system.get("cpu_governor"):
        parts.append(f"governor {system['cpu_governor']}")
    throttled = system.get("throttled")
    if throttled and throttled.get("flags"):
        parts.append("THROTTLING: " + ", ".join(throttled["flags"]))
    console.print("; ".join(parts), markup=False)
    settings = summary.get("settings") or {}
    if settings.get("record"):
        rate = settings.get("record_fps")
        console.print(f"recorded {counts.get('frames_recorded', 0)} frames" + (f" at {rate:g} fps" if rate else "")
                      + f" (skipped by the rate {counts.get('record_skipped_by_rate', 0)}, "
                      f"dropped with the writer behind {counts.get('output_dropped', 0)}): {settings['record']}", markup=False)


__all__ = ["EXTRA_SERIES", "RESERVOIR", "STAGES", "LoopStats", "Series", "cpu_temperature", "cpu_temperatures", "describe_ms",
           "render_summary", "system_facts", "throttling"]
