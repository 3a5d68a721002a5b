"""Draw the prediction, FPS and latency on a BGR frame: a translucent box with text sized to the frame."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgecls.errors import require

CONFIDENT = (90, 220, 90)  # BGR green
UNCERTAIN = (0, 170, 255)  # BGR orange
TEXT = (235, 235, 235)


def text_scale(width: int) -> float:
    """Font scale readable from 320 px (0.45) to 1280 px and above (about 1.0)."""
    return float(np.clip(width / 1280.0, 0.45, 1.6))


def draw_overlay(
    frame: np.ndarray,
    label: str,
    score: float,
    fps: float | None = None,
    latency_ms: float | None = None,
    uncertain: bool = False,
    extra: Sequence[str] = (),
    alpha: float = 0.55,
) -> np.ndarray:
    """A copy of `frame` (BGR uint8) with the label and score on top and FPS / latency under it."""
    cv2 = require("cv2", "pi")
    out = np.ascontiguousarray(frame).copy()
    height, width = out.shape[:2]
    scale = text_scale(width)
    thick = max(1, round(scale * 2))
    font = cv2.FONT_HERSHEY_SIMPLEX
    numbers = []
    if fps is not None:
        numbers.append(f"{fps:.1f} FPS")
    if latency_ms is not None:
        numbers.append(f"{latency_ms:.1f} ms")
    lines = [(f"{label}  {score:.2f}", UNCERTAIN if uncertain else CONFIDENT, scale * 1.15)]
    lines += [(text, TEXT, scale * 0.8) for text in (" | ".join(numbers), *extra) if text]
    pad = max(4, round(8 * scale))
    baselines, y = [], 0
    box_w = 0
    for text, _, s in lines:
        (w, h), descent = cv2.getTextSize(text, font, s, thick)
        y += pad + h
        baselines.append(y)
        y += descent
        box_w = max(box_w, w + 2 * pad)
    box_w, box_h = min(width, box_w), min(height, y + pad)
    region = out[:box_h, :box_w]
    region[:] = (region.astype(np.float32) * (1.0 - alpha)).astype(np.uint8)  # darken behind the text only
    for (text, colour, s), baseline in zip(lines, baselines):
        cv2.putText(out, text, (pad, baseline), font, s, colour, thick, cv2.LINE_AA)
    return out


__all__ = ["draw_overlay", "text_scale"]
