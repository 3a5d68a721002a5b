"""The recording's frame rate (--record-fps): checked before the camera starts, written into the video, frames left out counted.

A real-time recording (a live camera, or a file with --record-drop) takes at most --record-fps frames a second (10 unless
given, never above the source's rate); a file's recording keeps every frame unless --record-fps is below the file's rate,
then it takes the frames due by the file's own clock. Frames the rate leaves out are counted apart from frames the
output thread had no time for. Real CLI on a real (tiny, hand-built) ONNX model and real mp4v videos; no timing asserts.
"""
from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecls.camera.decision import Postprocessor
from edgecls.camera.outputs import Outputs
from edgecls.camera.rates import DEFAULT_RECORD_FPS, MAX_RECORD_FPS, UNTIMED_FPS, check_record_fps, recording_rate
from edgecls.errors import ConfigError
from tests.camera_helpers import wait_until
from tests.conftest import assert_clean_error, run_cli
from tests.test_camera_live_rate import FRAME
from tests.test_camera_live_rate import _SeenOutputs as SeenOutputs
from tests.test_camera_live_rate import _Viewer as Viewer

pytestmark = pytest.mark.skipif(any(importlib.util.find_spec(n) is None for n in ("cv2", "onnx", "onnxruntime")),
                                reason="needs cv2, onnx, onnxruntime")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_bench_safety import tiny_onnx

    return tiny_onnx(tmp_path_factory.mktemp("model") / "artifact" / "model.onnx")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 frames at 30 fps, 64x48, each a different colour (2 s of video)."""
    import cv2

    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30.0, (64, 48))
    assert writer.isOpened()
    for i in range(60):
        writer.write(np.full((48, 64, 3), (4 * i, 255 - 4 * i, (40 * i) % 256), np.uint8))
    writer.release()
    return path


def _video(path: Path) -> tuple[int, float]:
    """(frames OpenCV decodes, the fps the video says)."""
    import cv2

    capture, frames = cv2.VideoCapture(str(path)), 0
    fps = float(capture.get(cv2.CAP_PROP_FPS))
    while capture.read()[0]:
        frames += 1
    capture.release()
    return frames, fps


def _camera(model: Path, clip: Path, tmp_path: Path, *args: str) -> tuple[Any, dict[str, Any]]:
    report = tmp_path / "report.json"
    result = run_cli("camera", "--model", model, "--device", clip, "--report", report, "--headless", *args, timeout=120)
    assert result.returncode == 0, result.output
    return result, json.loads(report.read_text())


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), MAX_RECORD_FPS + 1, "fast"])
def test_check_record_fps_refuses_what_is_not_a_rate(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        check_record_fps(value)  # type: ignore[arg-type]
    assert "--record-fps" in caught.value.message and str(value) in caught.value.message
    assert check_record_fps(12) == 12.0 and check_record_fps(MAX_RECORD_FPS) == MAX_RECORD_FPS


@pytest.mark.parametrize(("option", "source", "real_time", "rate"), [
    (None, 30.0, True, DEFAULT_RECORD_FPS),  # a live camera: the default
    (None, 5.0, True, 5.0),  # never above the source's rate: the video would play too fast
    (None, None, True, DEFAULT_RECORD_FPS),  # a camera that reports no rate
    (24.0, 30.0, True, 24.0),
    (None, 30.0, False, 30.0),  # a file's recording keeps the file's rate (every frame)
    (10.0, 30.0, False, 10.0),
    (60.0, 25.0, False, 25.0),
    (None, None, False, UNTIMED_FPS),  # an image folder
    (12.0, float("nan"), False, 12.0),  # a source whose rate is no number
])
def test_the_recording_rate_is_the_option_capped_at_the_source(option: float | None, source: float | None, real_time: bool,
                                                                rate: float) -> None:
    assert recording_rate(option, source, real_time) == rate


@pytest.mark.parametrize(("args", "fragments"), [
    (["--record", "out.mp4", "--record-fps", "0"], ("--record-fps 0.0", "between 0 and 60")),
    (["--record", "out.mp4", "--record-fps", "500"], ("--record-fps 500.0", "between 0 and 60")),
    (["--record", "out.mp4", "--record-fps", "nan"], ("--record-fps nan", "between 0 and 60")),
    (["--record-fps", "5"], ("--record-fps 5 applies to a recording only", "--record")),
])
def test_cli_refuses_a_bad_record_fps_before_the_camera_starts(tmp_path: Path, args: list[str], fragments: tuple[str, ...]) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read: the option is checked first")
    report = tmp_path / "report.json"
    result = run_cli("camera", "--model", model, "--device", tmp_path / "clip.mp4", "--report", report,
                     *(str(tmp_path / a) if a == "out.mp4" else a for a in args))
    assert_clean_error(result, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no report, no recording, no temp file


@pytest.mark.parametrize(("option", "recorded", "fps"), [([], 60, 30.0), (["--record-fps", "10"], 20, 10.0),
                                                         (["--record-fps", "15"], 30, 15.0), (["--record-fps", "45"], 60, 30.0)])
def test_a_files_recording_takes_the_frames_due_at_the_rate(model: Path, clip: Path, tmp_path: Path, option: list[str], recorded: int,
                                                           fps: float) -> None:
    video = tmp_path / "out.mp4"
    result, data = _camera(model, clip, tmp_path, "--record", str(video), *option)
    counts = data["counts"]
    assert data["frames"] == 60 and counts["frames_recorded"] == recorded and counts["output_dropped"] == 0
    assert counts["record_skipped_by_rate"] == 60 - recorded and data["settings"]["record_fps"] == fps
    assert _video(video) == (recorded, pytest.approx(fps))  # plays in real time: 2 s of video either way
    assert f"recorded {recorded} frames at {fps:g} fps (skipped by the rate {60 - recorded}," in result.stdout


def test_a_real_time_recording_accounts_for_every_frame(model: Path, clip: Path, tmp_path: Path) -> None:
    """--record-drop: at most --record-fps a second by the wall clock; each frame is recorded, skipped by the rate, or
    dropped with the writer behind."""
    video = tmp_path / "out.mp4"
    _, data = _camera(model, clip, tmp_path, "--record", str(video), "--record-drop", "--record-fps", "5", "--json")
    counts = data["counts"]
    recorded, skipped, dropped = counts["frames_recorded"], counts["record_skipped_by_rate"], counts["output_dropped"]
    assert data["frames"] == 60 == recorded + skipped + dropped and recorded >= 1, counts
    assert data["settings"]["record_fps"] == 5.0 and _video(video) == (recorded, pytest.approx(5.0))


def test_a_real_time_recording_takes_at_most_record_fps(tmp_path: Path) -> None:
    """The bound the rule guarantees whatever the machine's speed: frames handed to the recording <= 1 + seconds x rate."""
    outputs = Outputs(False, tmp_path / "live.avi", None, 20.0, lossless=False)
    decision, handed = Postprocessor(["a", "b"], top_k=1)(np.array([0.7, 0.3], np.float32)), 0
    started = time.monotonic()
    try:  # by the clock, not a frame count: a skipped frame costs under a microsecond on a fast machine
        while time.monotonic() - started < 0.5 or (outputs.recorded + outputs.dropped < 3 and time.monotonic() - started < 30):
            outputs.handle(FRAME, decision, {}, {})
            handed += 1
        seconds = time.monotonic() - started
    finally:
        outputs.close()
    taken = outputs.recorded + outputs.dropped
    assert 3 <= taken <= 1 + math.floor(seconds * 20.0 + 1e-6), (taken, seconds)
    assert taken + outputs.skipped_by_rate == handed and outputs.skipped_by_rate > 0


def test_the_live_view_shows_every_recorded_frame_when_the_rates_match(tmp_path: Path) -> None:
    """--record-fps 10 with --live-fps 10: every frame recorded while someone watches goes to the live view too (it used to
    see about 6 in 10: the time since the last JPEG went out was a little under 1/10 s at the next recorded frame)."""
    outputs = SeenOutputs(False, tmp_path / "live.avi", "127.0.0.1:0", 10.0, lossless=False, live_fps=10.0)
    assert outputs.server is not None
    viewer = Viewer(outputs.server.port)
    decision = Postprocessor(["a", "b"], top_k=1)(np.array([0.7, 0.3], np.float32))
    try:
        assert wait_until(lambda: outputs.server.stream_clients == 1)
        watched_from = len(outputs.jobs)
        deadline = time.monotonic() + 30
        while len(outputs.jobs) < watched_from + 5 and time.monotonic() < deadline:
            outputs.handle(FRAME, decision, {}, {})
            time.sleep(0.005)
    finally:
        viewer.close()
        outputs.close()
    watched = outputs.jobs[watched_from:watched_from + 5]
    assert len(watched) == 5 and all(record and serve for record, serve in watched), outputs.jobs


def test_the_default_real_time_rate_applies_without_the_option(model: Path, clip: Path, tmp_path: Path) -> None:
    video = tmp_path / "out.mp4"
    _, data = _camera(model, clip, tmp_path, "--record", str(video), "--record-drop", "--json")
    assert data["settings"]["record_fps"] == DEFAULT_RECORD_FPS < 30.0
    assert _video(video) == (data["counts"]["frames_recorded"], pytest.approx(DEFAULT_RECORD_FPS))
