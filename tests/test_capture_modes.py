"""Capture modes (edgecls.camera.capture_modes): the smallest USB mode covering the model, picamera2's lores size and
its YUV420 frames. No camera here: the choice is checked against drivers that answer as V4L2 does (the nearest mode
they have), the conversion against OpenCV's own YUV encoding, and a video file is never asked for a mode."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecls.camera.capture_modes import covers, lores_size, mode_candidates, pick_camera_mode, yuv420_to_bgr

cv2 = pytest.importorskip("cv2")


def v4l2_like(supported: list[tuple[int, int]]):  # noqa: ANN201
    """What a V4L2 driver does with a size request: the supported mode nearest in area; every request is logged."""
    asked: list[tuple[int, int]] = []

    def try_mode(width: int, height: int) -> tuple[int, int]:
        asked.append((width, height))
        return min(supported, key=lambda m: (abs(m[0] * m[1] - width * height), m))

    return try_mode, asked


def test_candidates_are_the_smallest_modes_covering_the_model() -> None:
    assert mode_candidates((224, 224))[:2] == [(320, 240), (352, 288)]
    assert mode_candidates((96, 96))[0] == (160, 120) and mode_candidates((480, 640))[0] == (640, 480)
    assert mode_candidates((224, 224), crop_fraction=0.875)[0] == (352, 288)  # EfficientNet-Lite's centre crop needs 256+
    assert mode_candidates((2000, 2000)) == []


def test_pick_takes_the_drivers_answer_only_when_it_covers_the_model() -> None:
    webcam, asked = v4l2_like([(160, 120), (320, 240), (640, 480), (1280, 720)])
    assert pick_camera_mode((224, 224), webcam) == (320, 240) and asked == [(320, 240)]
    hd_only, _ = v4l2_like([(640, 480), (1280, 720)])
    assert pick_camera_mode((224, 224), hd_only) == (640, 480)
    tiny, asked = v4l2_like([(176, 144)])
    assert pick_camera_mode((224, 224), tiny) is None and len(asked) == 4  # a bounded number of tries, then the default


def test_lores_keeps_the_aspect_and_covers_the_model() -> None:
    assert lores_size((640, 480), (224, 224)) == (300, 224)
    assert lores_size((1920, 1080), (96, 96)) == (172, 96)
    assert lores_size((320, 240), (224, 224)) == (300, 224)
    assert lores_size((224, 224), (224, 224)) is None and lores_size((200, 150), (224, 224)) is None
    for main in ((640, 480), (1280, 720), (1456, 1088)):
        for crop in (1.0, 0.875):
            width, height = lores_size(main, (224, 160), crop)  # type: ignore[misc]
            assert covers((width, height), (224, 160), crop) and width % 2 == 0 and height % 2 == 0
            assert abs(width / height - main[0] / main[1]) < 0.02 and not covers((width - 8, height - 6), (224, 160), crop)


def test_yuv420_lores_frames_become_bgr() -> None:
    from skimage import data

    bgr = np.ascontiguousarray(cv2.resize(data.astronaut(), (300, 224))[..., ::-1])
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)  # (224 * 3 / 2, 300)
    stride = 320  # picamera2 pads rows to the stride: Y rows, then U and V rows of half the stride
    y, u, v = i420[:224], i420[224:280].reshape(112, 150), i420[280:].reshape(112, 150)
    padded = np.zeros((336, stride), np.uint8)
    padded[:224, :300] = y
    padded[224:280] = np.pad(u, ((0, 0), (0, 10))).reshape(56, stride)
    padded[280:] = np.pad(v, ((0, 0), (0, 10))).reshape(56, stride)
    back = yuv420_to_bgr(padded, 300)
    assert back.shape == (224, 300, 3) and np.abs(back.astype(int) - bgr.astype(int)).mean() < 6


def test_files_are_never_asked_for_a_mode(tmp_path: Path) -> None:
    from edgecls.camera.sources import open_source

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for index in range(3):
        writer.write(np.full((48, 64, 3), index * 40, np.uint8))
    writer.release()
    source = open_source(str(path), model_size=(224, 224))
    try:
        assert source.mode is None and source.read().shape == (48, 64, 3)  # type: ignore[attr-defined,union-attr]
    finally:
        source.close()
