"""Write a video from a folder of images: a camera stand-in for demos, tests and benchmarks."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecls.errors import ConfigError, DataError, require
from edgecls.fsutil import atomic_path
from edgecls.preprocess import IMAGE_SUFFIXES, load_image, resize


def images_to_video(folder: str | Path, out: str | Path, frames: int = 120, fps: float = 30.0,
                    size: tuple[int, int] = (480, 640), hold: int = 5) -> dict:
    """Cycle through the (sorted, recursive) images of `folder`, each held for `hold` frames, at (height, width)."""
    cv2 = require("cv2", "pi")
    folder, out = Path(folder), Path(out)
    if frames < 1 or fps <= 0 or hold < 1 or min(size) < 8:
        raise ConfigError(f"frames {frames}, fps {fps}, hold {hold}, size {size} out of range", "Use frames >= 1, fps > 0, hold >= 1, size >= 8")
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
    return {"video": str(out), "frames": frames, "fps": fps, "size": [height, width], "images": used}
