"""Let the camera do the shrinking: the smallest capture mode that still covers the model's input.

A 640x480 frame for a 224x224 model is four times the pixels that are needed; decoding, copying and
resizing them costs CPU that inference could use. Where the camera can deliver less, edgecls asks for it
(`edgecls camera --capture auto`, the default without --record or --save-uncertain):

- USB (V4L2) cameras through OpenCV: the smallest common mode at or above the model's size in both
  dimensions (e.g. 320x240 for 224x224, 160x120 for 96x96); the driver answers with the nearest mode
  it has, which is kept only when it still covers the model (`pick_camera_mode`).
- picamera2: the ISP's second, low-resolution output (`lores`) at the main stream's aspect ratio,
  scaled by the hardware at no CPU cost (`lores_size`); it is YUV420, turned into BGR here.

The crop semantics do not change: edgecls.preprocess.resize centre-crops every frame to the model's
aspect ratio, so a smaller mode with the same aspect gives the same picture, and the report names the
mode that was used.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

# Modes UVC webcams commonly offer, by area (width, height).
CAMERA_MODES = ((160, 120), (176, 144), (320, 180), (320, 240), (352, 288), (424, 240), (640, 360), (640, 480), (800, 448),
                (800, 600), (848, 480), (960, 540), (1024, 576), (1280, 720), (1280, 960), (1600, 896), (1920, 1080))
MAX_MODE_TRIES = 4


def mode_candidates(model_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """Common modes covering a model of (height, width), smallest first."""
    height, width = model_hw
    return sorted((m for m in CAMERA_MODES if m[0] >= width and m[1] >= height), key=lambda m: (m[0] * m[1], m))


def pick_camera_mode(model_hw: tuple[int, int], try_mode: Callable[[int, int], tuple[int, int]]) -> tuple[int, int] | None:
    """Ask for candidate modes in turn (`try_mode(w, h)` sets it and returns what the driver chose); the first answer
    that covers the model, or None (the caller then restores the camera's default)."""
    height, width = model_hw
    for mode in mode_candidates(model_hw)[:MAX_MODE_TRIES]:
        got_w, got_h = try_mode(*mode)
        if got_w >= width and got_h >= height:
            return got_w, got_h
    return None


def lores_size(main_wh: tuple[int, int], model_hw: tuple[int, int]) -> tuple[int, int] | None:
    """picamera2's lores (width, height): the main stream's aspect ratio, the smallest even size covering the model;
    None when the main stream is already that small."""
    main_w, main_h = main_wh
    height, width = model_hw
    scale = max(width / main_w, height / main_h)
    if scale >= 1.0:
        return None
    lores_w, lores_h = 2 * math.ceil(main_w * scale / 2), 2 * math.ceil(main_h * scale / 2)
    if lores_w * lores_h >= main_w * main_h:
        return None
    return lores_w, lores_h


def yuv420_to_bgr(planes: np.ndarray, width: int) -> np.ndarray:
    """picamera2's YUV420 lores array ((h * 3 / 2, stride): Y, then U and V) as BGR (h, width, 3)."""
    import cv2

    bgr = cv2.cvtColor(np.ascontiguousarray(planes), cv2.COLOR_YUV2BGR_I420)
    return np.ascontiguousarray(bgr[:, :width]) if bgr.shape[1] != width else bgr


__all__ = ["CAMERA_MODES", "lores_size", "mode_candidates", "pick_camera_mode", "yuv420_to_bgr"]
