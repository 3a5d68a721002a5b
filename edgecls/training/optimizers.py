"""Optimizer, learning-rate schedule and class weights of a training phase."""
from __future__ import annotations

from typing import Any

import numpy as np


def make_optimizer(name: str, lr: float, schedule: str, total_steps: int, warmup_steps: int = 0) -> Any:
    """A fresh optimizer whose schedule spans the whole phase (`total_steps`), driven by its iteration counter.

    A resumed phase gets the same schedule and its restored counter, so the rate picks up where it stopped.
    """
    import keras

    rate: Any = lr
    if schedule == "cosine" and warmup_steps:  # linear warm-up from lr/20, then cosine decay
        rate = keras.optimizers.schedules.CosineDecay(lr / 20, decay_steps=max(1, total_steps - warmup_steps), alpha=0.01,
                                                      warmup_target=lr, warmup_steps=warmup_steps)
    elif schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total_steps), alpha=0.01)
    elif schedule == "step":
        bounds = [max(1, total_steps // 2), max(2, total_steps * 3 // 4)]
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(bounds, [lr, lr * 0.1, lr * 0.01])
    if name == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9, nesterov=True)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(rate)
    return keras.optimizers.Adam(rate)


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> dict[int, float] | None:
    """Inverse-frequency weights: always for 'balanced', for 'auto' only when the largest class is 1.5x the smallest."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    if mode == "none" or counts.min() == 0:
        return None
    if mode == "auto" and counts.max() < 1.5 * counts.min():
        return None
    weights = counts.sum() / (num_classes * counts)
    return {i: float(w) for i, w in enumerate(weights)}
