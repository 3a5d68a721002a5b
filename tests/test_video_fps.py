"""`edgecls data video` refuses a frame rate or frame size out of range in one line, quickly, before anything is
written (OpenCV's writer spun forever on --fps inf, deaf to SIGTERM; nan, 1e-9 and 1e6 gave raw ffmpeg log lines)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from edgecls.data.video import MAX_FPS, MAX_SIDE, check_video_settings
from edgecls.errors import ConfigError
from tests.conftest import assert_clean_error, run_cli
from tests.test_data import make_tree

needs_cv2 = pytest.mark.skipif(importlib.util.find_spec("cv2") is None, reason="needs opencv")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree", {"a": 2, "b": 2})


@pytest.mark.parametrize("fps", ["inf", "-inf", "nan", "0", "-1", "1e-9", "1e6", "1e300"])
@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_fps_out_of_range_is_refused_and_writes_nothing(images: Path, tmp_path: Path, fps: str, suffix: str) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    result = run_cli("data", "video", images, videos / f"out{suffix}", "--fps", fps, "--frames", "5", timeout=60)
    assert_clean_error(result, f"--fps {float(fps):g} is out of range", "from 0.1 to 1000")
    assert "[ERROR" not in result.output
    assert list(videos.iterdir()) == []  # neither the video nor a temp file


@pytest.mark.parametrize("option, value", [("--width", "20000"), ("--height", "20000"), ("--width", "4"), ("--height", "-1")])
def test_frame_size_out_of_range_is_refused(images: Path, tmp_path: Path, option: str, value: str) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    other = "--height" if option == "--width" else "--width"
    result = run_cli("data", "video", images, videos / "out.mp4", option, value, other, "48", "--frames", "5", timeout=60)
    assert_clean_error(result, f"{option} {value} is out of range", f"from 8 to {MAX_SIDE} pixels")
    assert "MemoryError" not in result.output
    assert list(videos.iterdir()) == []


def test_bounds_and_other_settings() -> None:
    check_video_settings(1, 0.1, (8, 8), 1)
    check_video_settings(1, MAX_FPS, (MAX_SIDE, MAX_SIDE), 1)
    for frames, fps, size, hold, fragment in [(0, 30.0, (8, 8), 1, "--frames 0"), (1, 30.0, (8, 8), 0, "--hold 0"),
                                              (1, 30.0, (MAX_SIDE + 1, 8), 1, f"--height {MAX_SIDE + 1}")]:
        with pytest.raises(ConfigError, match=fragment):
            check_video_settings(frames, fps, size, hold)


@needs_cv2
def test_sane_fps_still_writes_a_video(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "clip.avi"
    result = run_cli("data", "video", images, out, "--fps", "0.5", "--frames", "4", "--width", "32", "--height", "24", timeout=120)
    assert result.returncode == 0, result.output
    assert out.is_file() and [p.name for p in tmp_path.iterdir() if p.name != "tree"] == ["clip.avi"]
