"""Write a video from a folder of images (a camera stand-in for demos, tests and benchmarks), and check
that a video OpenCV wrote reads back whole before it is published.

OpenCV's VideoWriter reports nothing when its writes fail (a full disk gives an mp4 with 0 readable
frames), so every video edgecls writes goes to a temp file, is re-opened and frame-counted after the
writer is released (`verify_video`), and is renamed into place only when it reads back every frame.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from edgecls.errors import ConfigError, DataError, require
from edgecls.fsutil import atomic_path
from edgecls.preprocess import IMAGE_SUFFIXES, load_image, resize


def count_video_frames(path: str | Path) -> tuple[int, tuple[int, int] | None, bool]:
    """(frames OpenCV reads back, (width, height) of the first frame or None, whether the last frame decodes).

    Frames are counted as packets, without decoding (an hour of video counts in seconds); the first and
    the last frame are decoded.
    """
    cv2 = require("cv2", "pi")
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        ok, first = capture.read() if capture.isOpened() else (False, None)
    finally:
        capture.release()
    if not ok or first is None:
        return 0, None, False
    size = (int(first.shape[1]), int(first.shape[0]))
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        capture.set(cv2.CAP_PROP_FORMAT, -1)  # raw packets; where unsupported, grab() decodes (slower, same count)
        count = 0
        while capture.grab():
            count += 1
    finally:
        capture.release()
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        capture.set(cv2.CAP_PROP_POS_FRAMES, max(0, count - 1))
        last_ok, last = capture.read()
    finally:
        capture.release()
    return count, size, bool(last_ok and last is not None and last.size)


def verify_video(path: str | Path, target: str | Path, expected: int, size: tuple[int, int] | None = None) -> None:
    """Raise ConfigError unless the video at `path` (to be published as `target`) reads back `expected` frames
    of `size` (width, height) with a decodable first and last frame."""
    path, target = Path(path), Path(target)
    count, got_size, last_ok = count_video_frames(path)
    if count == expected and last_ok and (size is None or got_size == size):
        return
    if count == expected and got_size is not None and size is not None and got_size != size:
        found = f"frames of {got_size[0]}x{got_size[1]} instead of {size[0]}x{size[1]}"
    elif count == expected:
        found = f"all {count} frames but its last frame does not decode"
    else:
        found = f"{count} of the {expected} frames written"
    free = _free_bytes(path.parent)
    full = free is not None and free < 1_048_576
    where = f" (the disk holding it has {free:,} bytes free)" if free is not None else ""
    hint = "Free some disk space or write the video to another disk" if full else "Check the disk, or try a .avi name (MJPG)"
    raise ConfigError(f"cannot write video '{target}': OpenCV reads back {found}{where}; nothing was saved", hint)


def _free_bytes(folder: Path) -> int | None:
    try:
        info = os.statvfs(folder)
    except OSError:
        return None
    return info.f_bavail * info.f_frsize


# Bounds of `data video`, checked before anything is created: OpenCV's writer spins forever inside its constructor
# on fps=inf (deaf to SIGTERM) and ffmpeg refuses nan, 1e-9 or 1e6 with raw log lines; 0.1 to 1000 fps covers
# time-lapse to high-speed cameras. 8 to 8192 pixels a side covers 8K; beyond, one frame alone is hundreds of MB.
MIN_FPS, MAX_FPS = 0.1, 1000.0
MIN_SIDE, MAX_SIDE = 8, 8192


def check_video_settings(frames: int, fps: float, size: tuple[int, int], hold: int) -> None:
    """Raise ConfigError naming the first of --frames, --fps, --height/--width, --hold that is out of range."""
    if frames < 1:
        raise ConfigError(f"--frames {frames} is out of range", "Pass --frames 1 or more")
    if not (math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
        raise ConfigError(f"--fps {fps:g} is out of range", f"Pass a frame rate from {MIN_FPS:g} to {MAX_FPS:g}, e.g. --fps 30")
    for option, side in zip(("--height", "--width"), size):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise ConfigError(f"{option} {side} is out of range", f"Pass {option} from {MIN_SIDE} to {MAX_SIDE} pixels")
    if hold < 1:
        raise ConfigError(f"--hold {hold} is out of range", "Pass --hold 1 or more")


def images_to_video(folder: str | Path, out: str | Path, frames: int = 120, fps: float = 30.0,
                    size: tuple[int, int] = (480, 640), hold: int = 5) -> dict:
    """Cycle through the (sorted, recursive) images of `folder`, each held for `hold` frames, at (height, width)."""
    check_video_settings(frames, fps, size, hold)
    cv2 = require("cv2", "pi")
    folder, out = Path(folder), Path(out)
    if out.suffix.lower() not in (".mp4", ".avi"):
        raise ConfigError(f"'{out}' must end with .mp4 or .avi", "Name the video e.g. clip.mp4")
    if not folder.is_dir():
        raise DataError(f"'{folder}' is not a folder", "Pass a folder of images, e.g. DATA/test")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not paths:
        raise DataError(f"'{folder}' holds no images", "Pass a folder of images")
    order = np.random.default_rng(0).permutation(len(paths))
    height, width = size
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if out.suffix.lower() == ".mp4" else "MJPG"))
    with atomic_path(out, suffix=out.suffix) as tmp:
        writer = cv2.VideoWriter(str(tmp), fourcc, fps, (width, height))
        if not writer.isOpened():
            raise DataError(f"OpenCV cannot write '{out}'", "Try a .avi file name")
        used = []
        try:
            for index in range(frames):
                if index % hold == 0:
                    path = paths[order[(index // hold) % len(paths)]]
                    used.append(str(path))
                    frame = resize(load_image(path), (height, width), 1.0, "bicubic")[..., ::-1]
                writer.write(np.ascontiguousarray(frame))
        finally:
            writer.release()
        verify_video(tmp, out, frames, (width, height))
    return {"video": str(out), "frames": frames, "fps": fps, "size": [height, width], "images": used}
