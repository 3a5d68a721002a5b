"""Classification metrics in numpy: accuracy, top-k, per-class P/R/F1, confusion matrix, binary ROC-AUC.

A metric that is undefined for the images given (0/0: no images, a class with no images and no predictions, ROC-AUC
on one class only) is None, so reports stay strict JSON (null, never NaN) and screens can show "n/a".
"""
from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """matrix[true, predicted] counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return matrix


def top_k_accuracy(y_true: np.ndarray, scores: np.ndarray, k: int) -> float | None:
    """Share of images whose label is among the k best scores; None without images."""
    if len(y_true) == 0:
        return None
    k = min(k, scores.shape[1])
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(best == np.asarray(y_true)[:, None], axis=1)))


def roc_auc_binary(y_true: np.ndarray, positive_scores: np.ndarray) -> float | None:
    """Area under the ROC curve via the rank statistic (ties get average ranks); None unless both classes occur."""
    y_true = np.asarray(y_true).astype(bool)
    positives, negatives = int(y_true.sum()), int((~y_true).sum())
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(positive_scores, kind="stable")
    ranks = np.empty(len(order), dtype=np.float64)
    sorted_scores = np.asarray(positive_scores)[order]
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y_true].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator where the denominator is positive, else 0 (the value averages count)."""
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _defined(values: np.ndarray, defined: np.ndarray, i: int) -> float | None:
    return float(values[i]) if defined[i] else None


def classification_report(y_true: np.ndarray, scores: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """All metrics for one evaluation, JSON-ready (strict JSON: an undefined metric is None).

    Per class: precision is None for a class never predicted, recall for a class with no images, F1 when both.
    Averages run over the classes that have images and count an undefined precision as 0 (scikit-learn's
    zero_division=0); they are None without images.
    """
    y_true = np.asarray(y_true, np.int64)
    num_classes = len(labels)
    y_pred = np.argmax(scores, axis=1) if len(scores) else np.zeros(0, np.int64)
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    true_pos = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    precision, recall = _ratio(true_pos, predicted), _ratio(true_pos, support)
    f1_denominator = support + predicted  # 2TP + FP + FN
    f1 = _ratio(2 * true_pos, f1_denominator)
    present = support > 0
    weights = support / max(support.sum(), 1.0)
    averaged = {"precision": precision, "recall": recall, "f1": f1}

    def average(values: np.ndarray, weighted: bool) -> float | None:
        if not present.any():
            return None
        return float((values * weights).sum()) if weighted else float(values[present].mean())

    report: dict[str, Any] = {
        "num_images": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)) if len(y_true) else None,
        "top_k": {f"top{k}": top_k_accuracy(y_true, scores, k) for k in (1, 3, 5) if k <= num_classes},
        "per_class": [
            {"label": labels[i], "precision": _defined(precision, predicted > 0, i), "recall": _defined(recall, present, i),
             "f1": _defined(f1, f1_denominator > 0, i), "support": int(support[i])}
            for i in range(num_classes)
        ],
        "macro": {name: average(values, weighted=False) for name, values in averaged.items()},
        "weighted": {name: average(values, weighted=True) for name, values in averaged.items()},
        "confusion_matrix": matrix.tolist(),
        "labels": list(labels),
    }
    if num_classes == 2:
        report["roc_auc"] = roc_auc_binary(y_true == 1, scores[:, 1])
    return report
