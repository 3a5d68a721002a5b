"""The answer for one frame: EMA smoothing of the probabilities, a confidence threshold, top-k."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecls.errors import ConfigError
from edgecls.postprocess import Class
from edgecls.postprocess import top_k as rank

UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class Decision:
    """The postprocessed answer for one frame."""

    label: str  # the top-1 label, or "uncertain" when its score is below the threshold
    score: float  # top-1 score after smoothing
    uncertain: bool
    top: list[Class]  # top-k after smoothing (labels never replaced by "uncertain")
    probabilities: np.ndarray  # after smoothing


class Postprocessor:
    """EMA smoothing of probabilities, a confidence threshold and top-k.

    smoothing s in [0, 1): p_smooth = s * p_smooth_previous + (1 - s) * p_frame (0 = off).
    threshold t in [0, 1]: a top-1 score below t gives the label "uncertain".
    """

    def __init__(self, labels: list[str], top_k: int = 3, smoothing: float = 0.0, threshold: float = 0.0) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ConfigError(f"smoothing {smoothing} is outside [0, 1)", "Use 0 (off) to 0.9 (heavy smoothing), e.g. --smoothing 0.6")
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold {threshold} is outside [0, 1]", "Use a top-1 probability, e.g. --threshold 0.5")
        if top_k < 1:
            raise ConfigError(f"top-k {top_k} must be at least 1", "Use e.g. --top-k 3")
        self.labels, self.top_k, self.smoothing, self.threshold = labels, top_k, smoothing, threshold
        self._state: np.ndarray | None = None

    def reset(self) -> None:
        self._state = None

    def __call__(self, probabilities: np.ndarray) -> Decision:
        scores = np.asarray(probabilities, dtype=np.float32).reshape(-1)
        if self.smoothing and self._state is not None and self._state.shape == scores.shape:
            scores = (self.smoothing * self._state + (1.0 - self.smoothing) * scores).astype(np.float32)
        self._state = scores
        top = rank(scores, self.labels, self.top_k)
        uncertain = top[0].score < self.threshold
        return Decision(UNCERTAIN if uncertain else top[0].label, top[0].score, uncertain, top, scores)


__all__ = ["UNCERTAIN", "Decision", "Postprocessor"]
