"""`edgecls camera` end to end on REAL artifacts exported once from the tiny trained run.

Videos are written with cv2.VideoWriter from real Fashion-MNIST test images. Live behaviour (newest
frame only, reconnects, empty frames, stalls) is driven by small FrameSource classes defined here: real
sources that produce numbered frames, not mocks of a runtime. The CLI runs in a subprocess as a user
would run it; the loop's internals are checked in-process where a subprocess could not see them.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, CliResult, assert_clean_error, run_cli
from tests.test_tf_free import BLOCKER

NEEDED = ("cv2", "ai_edge_litert", "onnxruntime", "openvino")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(importlib.util.find_spec(n) is None for n in NEEDED), reason=f"needs {', '.join(NEEDED)}"),
]

import cv2  # noqa: E402  (after the skip marker: a missing OpenCV skips the module above)

from edgecls.camera import pipeline as camera_pipeline  # noqa: E402
from edgecls.camera.grabber import LatestFrameGrabber, usable  # noqa: E402
from edgecls.camera.loop import UNCERTAIN, Postprocessor, run_camera  # noqa: E402
from edgecls.camera.sources import CameraError, open_source  # noqa: E402
from edgecls.camera.stats import LoopStats, Series  # noqa: E402
from edgecls.errors import ConfigError, ImageError  # noqa: E402
from edgecls.preprocess import prepare  # noqa: E402
from edgecls.runtime import Classifier  # noqa: E402

BACKENDS = {
    "tflite": ("tflite-int8/model.tflite", "litert"),
    "onnx": ("onnx-int8/model.onnx", "onnxruntime"),
    "openvino": ("openvino-int8/model.xml", "openvino"),
}
STAGE_KEYS = ("p50", "p90", "p99", "max", "mean")
FAST = {"backoff_start": 0.01, "backoff_max": 0.04, "empty_limit": 3, "empty_pause": 0.001, "join_timeout": 1.0}


def camera_cli(*args: str | Path, cwd: Path | None = None) -> CliResult:
    """`edgecls camera ARGS` through the real entry point."""
    return run_cli("camera", *args, cwd=cwd, timeout=120)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def artifacts(plain_int8_exports: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The session's `export PLAIN_RUN --int8 --target all` (gate off: these tests need the artifacts, not their accuracy),
    copied: the camera writes its report beside the model."""
    out = shutil.copytree(plain_int8_exports, tmp_path_factory.mktemp("camera-export") / "export")
    return {name: out / rel for name, (rel, _) in BACKENDS.items()}


@pytest.fixture(scope="module")
def pictures(fmnist_tree: Path) -> list[np.ndarray]:
    """One real Fashion-MNIST test image per class as RGB uint8 96x96."""
    images = []
    for folder in sorted(p for p in (fmnist_tree / "test").iterdir() if p.is_dir()):
        first = sorted(folder.glob("*.png"))[0]
        images.append(np.asarray(Image.open(first).convert("RGB").resize((96, 96), Image.Resampling.BICUBIC)))
    return images


def write_video(path: Path, frames_rgb: list[np.ndarray], fps: float = 15.0) -> Path:
    height, width = frames_rgb[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames_rgb:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def decode_video(path: Path) -> list[np.ndarray]:
    """Every frame as OpenCV decodes it (BGR)."""
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


@pytest.fixture(scope="module")
def clip(pictures: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 frames, 96x96, cycling through the ten classes."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", [pictures[i % 10] for i in range(30)])


@pytest.fixture(scope="module")
def long_clip(pictures: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1500 frames at 320x240: a couple of seconds of work, long enough to interrupt."""
    big = [np.asarray(Image.fromarray(p).resize((320, 240))) for p in pictures]
    return write_video(tmp_path_factory.mktemp("long") / "long.mp4", [big[i % 10] for i in range(1500)], fps=30)


# ---------------------------------------------------------------- test sources (real FrameSources)


class CountingSource:
    """A live source that makes numbered frames as fast as asked (the number is in pixel [0, 0])."""

    is_live = True
    fps = None

    def __init__(self, size: tuple[int, int] = (24, 32), limit: int | None = None, delay: float = 0.0) -> None:
        self.size, self.limit, self.delay = size, limit, delay
        self.produced = 0
        self.closed = False

    def read(self) -> np.ndarray | None:
        if self.closed or (self.limit is not None and self.produced >= self.limit):
            return None
        if self.delay:
            time.sleep(self.delay)
        self.produced += 1
        frame = np.full((*self.size, 3), 40, np.uint8)
        frame[0, 0] = (self.produced % 256, self.produced // 256 % 256, self.produced // 65536)
        return frame

    def close(self) -> None:
        self.closed = True

    def describe(self) -> str:
        return "counting test source"


def frame_number(image: np.ndarray) -> int:
    b, g, r = (int(v) for v in image[0, 0])
    return b + 256 * g + 65536 * r


class JunkSource(CountingSource):
    """Live frames with unusable ones mixed in (None, zero-size, float32, grey 2-D), never 3 in a row."""

    def __init__(self) -> None:
        super().__init__(delay=0.002)
        self.reads = 0

    def read(self) -> np.ndarray | None:
        self.reads += 1
        junk = {3: None, 6: np.zeros((0, 0, 3), np.uint8), 9: np.zeros((24, 32, 3), np.float32), 12: np.zeros((24, 32), np.uint8)}
        if self.reads in junk:
            return junk[self.reads]
        frame = super().read()
        if frame is not None and self.reads % 2:  # changing sizes too: prepare() resizes every one
            frame = np.ascontiguousarray(np.repeat(frame, 3, axis=1))
        return frame


class BlockedSource(CountingSource):
    """A live source whose read() hangs (a stuck driver) until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def read(self) -> np.ndarray | None:
        self.release.wait(30)
        return None


# ---------------------------------------------------------------- the CLI on each backend


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_cli_on_video_for_each_backend(backend: str, artifacts: dict[str, Path], clip: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    extra = ["--record", tmp_path / "annotated.mp4"] if backend == "tflite" else []
    pipelined = backend != "onnx"  # the default; onnx runs with --no-pipeline
    flags = [] if pipelined else ["--no-pipeline"]
    result = camera_cli("--device", clip, "--model", artifacts[backend], "--frames", "20", "--report", report, "--json", *extra, *flags)
    assert result.returncode == 0, result.output
    data = json.loads(report.read_text())
    assert json.loads(result.stdout) == data
    assert data["settings"]["pipeline"] is pipelined and ("input_wait" in data["stages_ms"]) is pipelined
    frame_time = data["frame_time_ms"]
    assert frame_time["n"] == 18 and 0 < frame_time["p50"] <= frame_time["p90"] <= frame_time["p99"] <= frame_time["max"]
    assert data["frame_time_vs_inference"] == round(frame_time["p50"] / data["stages_ms"]["inference"]["p50"], 3)
    assert data["counts"]["consumed"] == data["counts"]["captured"] == 20  # the pipeline reads no frame past --frames
    assert data["frames"] == 20 and data["counts"]["processed"] == 20 and data["fps"] > 0
    assert data["status"] == "finished" and data["stop_reason"] == "frames" and data["error"] is None
    for stage in ("capture_wait", "preprocess", "inference", "postprocess", "end_to_end"):
        numbers = data["stages_ms"][stage]
        assert numbers["n"] == 19 and all(numbers[k] >= 0 for k in STAGE_KEYS), (stage, numbers)
        assert numbers["p50"] <= numbers["p90"] <= numbers["p99"] <= numbers["max"]
    assert data["stages_ms"]["end_to_end"]["p50"] >= data["stages_ms"]["inference"]["p50"]
    assert data["backend"]["name"] == BACKENDS[backend][1] and "int8" in data["backend"]["precision_ran"]
    assert data["source"]["mode"] == "sequential" and data["source"]["live"] is False
    assert data["counts"]["dropped"] == 0 and data["counts"]["empty"] == 0
    assert sum(data["labels"].values()) == 20 and data["last"]["label"] in data["labels"]
    assert {"cpu_temp_c", "cpu_governor", "throttled", "cpu_count"} <= set(data["system"])
    if extra:
        assert data["counts"]["frames_recorded"] == 20 and "output" in data["stages_ms"]
        frames = decode_video(tmp_path / "annotated.mp4")
        assert len(frames) == 20 and frames[0].shape == (96, 96, 3)
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_loop_predictions_equal_classifier(backend: str, artifacts: dict[str, Path], clip: Path) -> None:
    """Same frames, same preprocessing code: the loop's scores are the Classifier's scores."""
    results = []
    summary = run_camera(artifacts[backend], str(clip), on_result=results.append, top_k=2)
    assert summary["stop_reason"] == "end of source" and summary["frames"] == 30 == len(results)
    decoded = decode_video(clip)
    assert [r.seq for r in results] == list(range(1, 31))
    assert all(np.array_equal(r.frame, frame) for r, frame in zip(results, decoded))
    with Classifier(artifacts[backend]) as classifier:
        batch = np.stack([prepare(cv2.cvtColor(f, cv2.COLOR_BGR2RGB), classifier.meta) for f in decoded])
        expected = classifier.predict_arrays(batch)
    raw = np.stack([r.raw for r in results])
    np.testing.assert_allclose(raw, expected, atol=1e-5)
    assert [r.decision.top[0].id for r in results] == list(expected.argmax(axis=1))
    assert all(len(r.decision.top) == 2 for r in results)


def test_pipelined_and_inline_runs_agree_frame_by_frame(artifacts: dict[str, Path], clip: Path) -> None:
    """The pipeline changes when frames are prepared, never which frames or what comes out: every frame, in order."""
    runs = {}
    for pipeline in (False, True):
        results: list = []
        summary = run_camera(artifacts["tflite"], str(clip), smoothing=0.5, on_result=results.append, pipeline=pipeline)
        assert summary["stop_reason"] == "end of source" and summary["settings"]["pipeline"] is pipeline
        assert summary["frames"] == summary["counts"]["consumed"] == 30 and summary["frame_time_ms"]["n"] == 28
        runs[pipeline] = results
    inline, pipelined = runs[False], runs[True]
    assert [r.seq for r in pipelined] == [r.seq for r in inline] == list(range(1, 31))
    assert [r.index for r in pipelined] == list(range(30))
    for a, b in zip(inline, pipelined):
        assert np.array_equal(a.frame, b.frame)
        np.testing.assert_allclose(b.raw, a.raw, atol=1e-6)
        np.testing.assert_allclose(b.decision.probabilities, a.decision.probabilities, atol=1e-6)  # smoothing saw the same order
        assert b.label == a.label and "input_wait" in b.timings_ms and "input_wait" not in a.timings_ms


class FiniteCountingSource(CountingSource):
    """Numbered frames like a video file: finite, read in order, none dropped."""

    is_live = False


@pytest.mark.parametrize("pipeline", [True, False], ids=["pipelined", "inline"])
def test_preprocessing_error_stops_the_run_after_the_frames_before_it(
    pipeline: bool, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A frame that makes preprocessing raise: raised in the caller's thread (pipelined: from the worker) after
    every frame before it was processed; the report says so; no thread is left behind."""
    real = camera_pipeline.prepare_batch

    def failing(image: np.ndarray, meta: object) -> np.ndarray:
        if frame_number(image) == 5:
            raise ImageError("frame 5 cannot be resized", "test hint")
        return real(image, meta)  # type: ignore[arg-type]

    monkeypatch.setattr(camera_pipeline, "prepare_batch", failing)
    seen: list[int] = []
    report = tmp_path / "r.json"
    with pytest.raises(ImageError, match="frame 5 cannot be resized"):
        run_camera(artifacts["onnx"], FiniteCountingSource(limit=12), report=report, pipeline=pipeline,
                   on_result=lambda r: seen.append(frame_number(r.frame)))
    data = json.loads(report.read_text())
    assert seen == [1, 2, 3, 4] and data["frames"] == 4
    assert data["status"] == "failed" and data["stop_reason"] == "error" and "frame 5 cannot be resized" in data["error"]
    assert not [t for t in threading.enumerate() if t.name == "edgecls-preprocess"]


def test_folder_source_with_changing_sizes_and_a_broken_file(
    artifacts: dict[str, Path], pictures: list[np.ndarray], tmp_path: Path
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    sizes = [(96, 96), (64, 48), (200, 120), (28, 28), (150, 300)]
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(pictures[i]).resize((w, h)).save(folder / f"{i:02d}.{'jpg' if i % 2 else 'png'}")
    Image.fromarray(pictures[5][:, :, 0]).save(folder / "05_grey.png")  # mode L
    (folder / "03_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("not an image")
    report, video = tmp_path / "r.json", tmp_path / "annotated.avi"
    result = camera_cli("--device", folder, "--model", artifacts["onnx"], "--report", report, "--record", video)
    assert result.returncode == 0, result.output
    assert "end of source" in result.stdout and "inference" in result.stdout  # the table
    assert "frame_time (1/FPS)" in result.stdout and "x inference p50" in result.stdout and "pipelined" in result.stdout
    data = json.loads(report.read_text())
    assert data["frames"] == 6 and data["counts"]["empty"] == 1 and data["stop_reason"] == "end of source"
    assert data["source"]["description"] == f"folder '{folder}' (7 images)"
    assert [Path(f).name for f, _ in data["source"]["skipped_files"]] == ["03_broken.png"]
    frames = decode_video(video)
    assert len(frames) == 6 and all(f.shape == (96, 96, 3) for f in frames)  # later sizes resized to the first


# ---------------------------------------------------------------- postprocessing


def test_threshold_gives_uncertain_and_smoothing_is_an_ema() -> None:
    post = Postprocessor(["cat", "dog", "fox"], top_k=2, threshold=0.5)
    sure = post(np.array([0.1, 0.8, 0.1]))
    assert sure.label == "dog" and not sure.uncertain and [c.label for c in sure.top] == ["dog", "cat"]
    unsure = post(np.array([0.4, 0.35, 0.25]))
    assert unsure.label == UNCERTAIN and unsure.uncertain and unsure.top[0].label == "cat" and unsure.score == pytest.approx(0.4)

    smooth = Postprocessor(["cat", "dog"], smoothing=0.75)
    first = smooth(np.array([0.0, 1.0]))
    np.testing.assert_allclose(first.probabilities, [0.0, 1.0])  # nothing to smooth with yet
    second = smooth(np.array([1.0, 0.0]))
    np.testing.assert_allclose(second.probabilities, [0.25, 0.75])  # 0.75 * previous + 0.25 * new
    assert second.label == "dog"
    third = smooth(np.array([1.0, 0.0]))
    np.testing.assert_allclose(third.probabilities, [0.4375, 0.5625])
    smooth.reset()
    np.testing.assert_allclose(smooth(np.array([1.0, 0.0])).probabilities, [1.0, 0.0])
    for bad in ({"smoothing": 1.0}, {"smoothing": -0.1}, {"threshold": 1.5}, {"top_k": 0}):
        with pytest.raises(ConfigError):
            Postprocessor(["a"], **bad)


def test_smoothing_and_threshold_in_the_loop(artifacts: dict[str, Path], clip: Path) -> None:
    plain, smoothed = [], []
    run_camera(artifacts["onnx"], str(clip), frames=10, on_result=plain.append)
    summary = run_camera(artifacts["onnx"], str(clip), frames=10, smoothing=0.5, threshold=0.99, on_result=smoothed.append)
    expected = plain[0].raw
    for p, s in zip(plain, smoothed):
        np.testing.assert_allclose(s.raw, p.raw, atol=1e-6)  # smoothing never touches the model's output
        expected = 0.5 * expected + 0.5 * p.raw if p.index else expected
        np.testing.assert_allclose(s.decision.probabilities, expected, atol=1e-5)
        assert s.decision.uncertain == (s.decision.score < 0.99)
    assert summary["labels"].get(UNCERTAIN, 0) == sum(s.decision.uncertain for s in smoothed) > 0


def test_latency_series_is_bounded_with_exact_count_mean_and_max() -> None:
    series = Series(capacity=100)
    for value in range(1000):
        series.add(float(value))
    numbers = series.describe()
    assert len(series.sample) == 100 and numbers["n"] == 1000 and numbers["max"] == 999 and numbers["mean"] == 499.5
    assert 250 < numbers["p50"] < 750 and numbers["p50"] <= numbers["p90"] <= numbers["p99"] <= numbers["max"]


def test_frame_time_is_the_interval_between_results_after_warmup() -> None:
    stats = LoopStats(warmup=1)
    for done_at, inference in ((0.000, 50.0), (0.010, 4.0), (0.030, 6.0), (0.040, 8.0)):  # seconds, ms
        stats.add({"inference": inference, "end_to_end": inference}, done_at=done_at)
    summary = stats.summary()
    # 10 ms from the warm-up frame is left out; 20 and 10 ms remain
    assert summary["frame_time_ms"]["n"] == 2 and summary["frame_time_ms"]["p50"] == 15.0 and summary["frame_time_ms"]["max"] == 20.0
    assert summary["stages_ms"]["inference"]["p50"] == 6.0 and summary["frame_time_vs_inference"] == 2.5
    short = LoopStats(warmup=1)
    short.add({"inference": 3.0}, done_at=1.0)
    assert short.summary()["frame_time_ms"]["n"] == 0 and short.summary()["frame_time_vs_inference"] is None


# ---------------------------------------------------------------- live sources: grabber, reconnects, junk


def test_grabber_hands_out_only_the_newest_frame() -> None:
    source = CountingSource(delay=0.0005)  # up to ~2000 frames a second
    grabber = LatestFrameGrabber(source, join_timeout=1.0).start()
    got = []
    try:
        for _ in range(8):
            time.sleep(0.02)  # a slow model
            frame = grabber.get(timeout=1.0)
            assert frame is not None
            got.append((frame_number(frame.image), frame.seq, source.produced))
    finally:
        grabber.stop()
    numbers = [n for n, _, _ in got]
    assert numbers == sorted(set(numbers))  # never the same frame twice, never older ones
    assert all(n == seq for n, seq, _ in got)
    assert all(produced - n < 20 for n, _, produced in got)  # fresh: the newest the source made, not a queued one
    counts = grabber.counters
    assert counts.dropped > 20 and counts.consumed == 8 and grabber.finished and source.closed
    assert counts.captured - counts.consumed - counts.dropped in (0, 1)  # at most one frame still unconsumed


def test_reconnects_with_backoff_after_the_source_dies(artifacts: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    opened: list[CountingSource] = []

    def reopen() -> CountingSource:
        if len(opened) == 1:
            opened.append(None)  # type: ignore[arg-type]  # the second attempt finds the camera still gone
            raise CameraError("camera test is not there yet")
        opened.append(CountingSource(limit=None if opened else 5, delay=0.002))  # the first one dies after 5 frames
        return opened[-1]

    caplog.set_level(logging.WARNING, logger="edgecls.camera")
    results = []
    summary = run_camera(artifacts["tflite"], reopen, frames=9, on_result=results.append, reader_options=FAST)
    counts = summary["counts"]
    assert summary["frames"] == 9 and summary["stop_reason"] == "frames" and summary["source"]["mode"] == "latest"
    assert counts["reconnects"] == 1 and counts["reconnect_failures"] == 1
    assert counts["backoff_s"] == [0.01, 0.02]  # doubling
    assert counts["empty"] == FAST["empty_limit"]  # the reads that told the source was gone
    assert isinstance(opened[2], CountingSource) and opened[2].produced >= 9 - 5  # frames came from the reopened source
    assert "reopening in" in caplog.text and "reopened after 2 attempt(s)" in caplog.text


def test_source_lost_for_good_raises_with_the_report(artifacts: dict[str, Path], tmp_path: Path) -> None:
    attempts = []

    def reopen() -> CountingSource:
        attempts.append(1)
        if len(attempts) > 1:
            raise CameraError("camera test unplugged")
        return CountingSource(limit=3)

    report = tmp_path / "r.json"
    with pytest.raises(CameraError, match="could not reopen it in 3 attempts") as caught:
        run_camera(artifacts["onnx"], reopen, report=report, reader_options={**FAST, "max_reconnects": 3})
    data = json.loads(report.read_text())
    assert caught.value.summary == data  # type: ignore[attr-defined]
    assert data["status"] == "failed" and data["stop_reason"] == "source lost" and data["frames"] >= 1
    assert data["counts"]["reconnect_failures"] == 3 and data["counts"]["backoff_s"] == [0.01, 0.02, 0.04]


def test_empty_and_resized_frames_are_counted_not_fatal(artifacts: dict[str, Path]) -> None:
    shapes = []
    summary = run_camera(artifacts["openvino"], JunkSource(), frames=12, on_result=lambda r: shapes.append(r.frame.shape),
                         reader_options=FAST)
    assert summary["frames"] == 12 and summary["counts"]["empty"] == 4 and summary["counts"]["reconnects"] == 0
    assert {(24, 32, 3), (24, 96, 3)} <= set(shapes)
    assert not usable(np.zeros((2, 2), np.uint8)) and usable(np.zeros((2, 2, 3), np.uint8))


@pytest.mark.parametrize("pipeline", [True, False], ids=["pipelined", "inline"])
def test_stuck_source_stops_within_timeouts(pipeline: bool, artifacts: dict[str, Path], tmp_path: Path) -> None:
    source = BlockedSource()
    report = tmp_path / "r.json"
    started = time.perf_counter()
    try:
        with pytest.raises(CameraError, match="delivered no frame for 0.3 s"):
            run_camera(artifacts["onnx"], source, report=report, stall_timeout=0.3, reader_options={"join_timeout": 0.2},
                       pipeline=pipeline)
        assert time.perf_counter() - started < 10
        assert not [t for t in threading.enumerate() if t.name == "edgecls-preprocess" and t.is_alive()]
        assert json.loads(report.read_text())["stop_reason"] == "source stalled"
    finally:
        source.release.set()


# ---------------------------------------------------------------- errors and interruption


def test_sources_that_never_open_are_one_line_errors(artifacts: dict[str, Path], clip: Path, tmp_path: Path) -> None:
    result = camera_cli("--device", "9", "--model", artifacts["tflite"], "--frames", "3", cwd=tmp_path)
    assert_clean_error(result, "cannot open camera 9", "ls /dev/video*")
    result = camera_cli("--device", tmp_path / "missing.mp4", "--model", artifacts["tflite"], cwd=tmp_path)
    assert_clean_error(result, "missing.mp4", "does not exist")
    result = camera_cli("--device", clip, "--model", tmp_path / "model.onnx", cwd=tmp_path)
    assert_clean_error(result, "model.onnx", "does not exist")
    assert not (tmp_path / "camera_report.json").exists()  # nothing ran, nothing to report
    assert not (artifacts["tflite"].parent / "camera_report.json").exists()  # (its default place: beside the model)
    with pytest.raises(CameraError, match="not a camera index"):
        open_source("webcam")
    with pytest.raises(CameraError, match="holds no images"):
        open_source(str(tmp_path))


@pytest.mark.parametrize(("signum", "code", "reason"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_interrupt_still_writes_the_report(
    signum: int, code: int, reason: str, artifacts: dict[str, Path], long_clip: Path, tmp_path: Path
) -> None:
    """Ctrl-C (130) and SIGTERM (143) stop the loop cleanly: table printed, report written."""
    report = tmp_path / "r.json"
    args = ["camera", "--device", str(long_clip), "--model", str(artifacts["onnx"]), "--report", str(report)]
    code_text = "from edgecls.cli.app import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code_text, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 60
        while not report.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the report appears (status "running") once the first frame is done
        assert report.exists(), proc.communicate(timeout=30)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stdout + stderr
    assert "Traceback" not in stderr, stderr
    data = json.loads(report.read_text())
    assert data["status"] == "finished" and data["stop_reason"] == reason
    assert 1 <= data["frames"] < 1500 and "inference" in data["stages_ms"]
    assert reason in stdout and "inference" in stdout


def test_live_view_gets_frames_and_stats(artifacts: dict[str, Path], clip: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("edgecls.camera.server")
    caplog.set_level(logging.INFO, logger="edgecls.camera")
    seen = {}
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    labels: list[str] = []

    def check(result) -> None:
        labels.append(result.label)
        if result.index == 3:  # the output thread encodes the frames: wait for the first one to be published
            url = next(r.getMessage().split(" at ")[1] for r in caplog.records if "live view at" in r.getMessage())
            deadline = time.monotonic() + 10
            while "jpeg" not in seen and time.monotonic() < deadline:
                try:
                    seen["jpeg"] = no_proxy.open(url + "snapshot.jpg", timeout=5).read()
                except urllib.error.HTTPError:  # 503 until then
                    time.sleep(0.02)
            seen["stats"] = json.loads(no_proxy.open(url + "stats.json", timeout=5).read())

    summary = run_camera(artifacts["tflite"], str(clip), frames=5, serve="127.0.0.1:0", on_result=check)
    assert summary["settings"]["serve"].startswith("http://127.0.0.1:")
    assert seen["stats"]["label"] in labels[:4] and seen["stats"]["backend"] == "litert"
    assert seen["jpeg"][:2] == b"\xff\xd8" and cv2.imdecode(np.frombuffer(seen["jpeg"], np.uint8), cv2.IMREAD_COLOR).shape == (96, 96, 3)


def test_camera_runs_with_tensorflow_blocked(artifacts: dict[str, Path], pictures: list[np.ndarray], tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(pictures[i]).save(folder / f"{i}.png")
    code = BLOCKER + textwrap.dedent(
        f"""
        import importlib, sys
        for name in ("edgecls.camera.sources", "edgecls.camera.grabber", "edgecls.camera.stats", "edgecls.camera.overlay",
                     "edgecls.camera.outputs", "edgecls.camera.pipeline", "edgecls.camera.loop", "edgecls.cli.camera",
                     "edgecls.camera.server", "edgecls.camera.httpd", "edgecls.camera.access", "edgecls.camera.signals",
                     "edgecls.camera.decision", "edgecls.data.video"):
            importlib.import_module(name)
        assert "cv2" not in sys.modules, "cv2 must be imported lazily"
        from edgecls.camera.loop import run_camera
        summary = run_camera({str(artifacts["tflite"])!r}, {str(folder)!r}, record={str(tmp_path / "o.mp4")!r})
        assert summary["frames"] == 3, summary
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        assert not heavy, heavy
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")
