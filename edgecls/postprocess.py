"""Turning model outputs into ranked classes. numpy only."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecls.meta import Quantization


@dataclass(frozen=True)
class Class:
    """One ranked prediction."""

    id: int
    score: float
    label: str


def dequantize(values: np.ndarray, quant: Quantization | None) -> np.ndarray:
    """real = scale * (q - zero_point); cast first so uint8/int8 arithmetic cannot wrap."""
    if quant is None:
        return values.astype(np.float32, copy=False)
    return (values.astype(np.float32) - np.float32(quant.zero_point)) * np.float32(quant.scale)


def quantize(values: np.ndarray, quant: Quantization) -> np.ndarray:
    """q = round(real / scale) + zero_point, clipped to the integer type's range."""
    info = np.iinfo(np.dtype(quant.dtype))
    scaled = np.array(values, dtype=np.float32, copy=True)  # one buffer, updated in place (hot path)
    if quant.scale != 1.0:
        np.divide(scaled, np.float32(quant.scale), out=scaled)
    np.rint(scaled, out=scaled)
    if quant.zero_point:
        np.add(scaled, np.float32(quant.zero_point), out=scaled)
    np.clip(scaled, info.min, info.max, out=scaled)
    return scaled.astype(quant.dtype)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def to_probabilities(output: np.ndarray, kind: str) -> np.ndarray:
    """Model output ("probabilities" or "logits") as probabilities."""
    return softmax(output) if kind == "logits" else output


def top_k(scores: np.ndarray, labels: list[str], k: int = 5) -> list[Class]:
    """The k best classes of one score vector, best first (ties broken by lower id)."""
    scores = np.asarray(scores).reshape(-1)
    k = max(1, min(k, scores.size))
    order = np.lexsort((np.arange(scores.size), -scores))[:k]
    return [Class(int(i), float(scores[i]), labels[i] if i < len(labels) else str(i)) for i in order]
