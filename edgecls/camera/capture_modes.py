"""Let the camera do the shrinking: the smallest capture mode that still covers the model's input.

A 640x480 frame for a 224x224 model is four times the pixels that are needed; decoding, copying and
resizing them costs CPU that inference could use. Where the camera can deliver less, edgecls asks for it
(`edgecls camera --capture auto`, the default without --record or --save-uncertain):

- USB (V4L2) cameras through OpenCV: the smallest common mode whose centre crop (the model's aspect
  ratio and crop_fraction, as edgecls.preprocess crops) is at least the model's size: 320x240 for a
  224x224 model at crop 1.0, 352x288 at crop 0.875 (EfficientNet-Lite), 160x120 for 96x96; the driver
  answers with the nearest mode it has, which is kept only when it still covers the model.
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


def covers(mode_wh: tuple[int, int], model_hw: tuple[int, int], crop_fraction: float = 1.0) -> bool:
    """Whether frames of (width, height) centre-cropped as edgecls.preprocess crops them are at least the model's size,
    so preprocessing shrinks (fast, OpenCV) rather than enlarges."""
    from edgecls.preprocess import centre_crop_box

    height, width = model_hw
    left, top, right, bottom = centre_crop_box(mode_wh[0], mode_wh[1], width, height, crop_fraction)
    return right - left >= width and bottom - top >= height


def mode_candidates(model_hw: tuple[int, int], crop_fraction: float = 1.0) -> list[tuple[int, int]]:
    """Common modes covering a model of (height, width) with its centre crop, smallest first."""
    return sorted((m for m in CAMERA_MODES if covers(m, model_hw, crop_fraction)), key=lambda m: (m[0] * m[1], m))


def pick_camera_mode(model_hw: tuple[int, int], try_mode: Callable[[int, int], tuple[int, int]],
                     crop_fraction: float = 1.0) -> tuple[int, int] | None:
    """Ask for candidate modes in turn (`try_mode(w, h)` sets it and returns what the driver chose); the first answer
    that covers the model, or None (the caller then restores the camera's default)."""
    for mode in mode_candidates(model_hw, crop_fraction)[:MAX_MODE_TRIES]:
        got = try_mode(*mode)
        if covers(got, model_hw, crop_fraction):
            return got
    return None


def lores_size(main_wh: tuple[int, int], model_hw: tuple[int, int], crop_fraction: float = 1.0) -> tuple[int, int] | None:
    """picamera2's lores (width, height): the main stream's aspect ratio, the smallest even size covering the model
    with its centre crop; None when the main stream is not larger than that."""
    main_w, main_h = main_wh
    height, width = model_hw
    scale = max(width / main_w, height / main_h) / crop_fraction
    lores_w, lores_h = 2 * math.ceil(main_w * scale / 2), 2 * math.ceil(main_h * scale / 2)
    while not covers((lores_w, lores_h), model_hw, crop_fraction) and lores_w < main_w:  # rounding: a step or two more
        lores_w, lores_h = lores_w + 2, 2 * math.ceil((lores_w + 2) * main_h / main_w / 2)
    if lores_w >= main_w or lores_h >= main_h:
        return None
    return lores_w, lores_h


def yuv420_to_bgr(planes: np.ndarray, width: int) -> np.ndarray:
    """picamera2's YUV420 lores array ((h * 3 / 2, stride): Y, then U and V) as BGR (h, width, 3)."""
    import cv2

    bgr = cv2.cvtColor(np.ascontiguousarray(planes), cv2.COLOR_YUV2BGR_I420)
    return np.ascontiguousarray(bgr[:, :width]) if bgr.shape[1] != width else bgr


__all__ = ["CAMERA_MODES", "covers", "lores_size", "mode_candidates", "pick_camera_mode", "yuv420_to_bgr"]
