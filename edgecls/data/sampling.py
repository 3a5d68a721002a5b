"""Data-level sampling shared by calibration, evaluation and bench: numpy only (no TensorFlow), importable on a Pi."""
from __future__ import annotations

import numpy as np


def stratified_sample(labels: np.ndarray, size: int, seed: int) -> list[int]:
    """Up to `size` indices, spread evenly over classes (round-robin over shuffled per-class lists), sorted."""
    rng = np.random.default_rng(seed)
    per_class = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    chosen: list[int] = []
    while len(chosen) < size and any(per_class):
        for indices in per_class:
            if indices and len(chosen) < size:
                chosen.append(int(indices.pop()))
    return sorted(chosen)
