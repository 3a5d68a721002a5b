"""Classification metrics in numpy: accuracy, top-k, per-class P/R/F1, confusion matrix, binary ROC-AUC."""
from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """matrix[true, predicted] counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return matrix


def top_k_accuracy(y_true: np.ndarray, scores: np.ndarray, k: int) -> float:
    if len(y_true) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(best == np.asarray(y_true)[:, None], axis=1)))


def roc_auc_binary(y_true: np.ndarray, positive_scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank statistic (ties get average ranks)."""
    y_true = np.asarray(y_true).astype(bool)
    positives, negatives = int(y_true.sum()), int((~y_true).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
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


def classification_report(y_true: np.ndarray, scores: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """All metrics for one evaluation, JSON-ready."""
    y_true = np.asarray(y_true, np.int64)
    num_classes = len(labels)
    y_pred = np.argmax(scores, axis=1) if len(scores) else np.zeros(0, np.int64)
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    true_pos = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, true_pos / predicted, 0.0)
        recall = np.where(support > 0, true_pos / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    weights = support / support.sum() if support.sum() else support
    report: dict[str, Any] = {
        "num_images": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)) if len(y_true) else float("nan"),
        "top_k": {f"top{k}": top_k_accuracy(y_true, scores, k) for k in (1, 3, 5) if k <= num_classes},
        "per_class": [
            {"label": labels[i], "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
             "support": int(support[i])}
            for i in range(num_classes)
        ],
        "macro": {
            "precision": float(precision[present].mean()) if present.any() else float("nan"),
            "recall": float(recall[present].mean()) if present.any() else float("nan"),
            "f1": float(f1[present].mean()) if present.any() else float("nan"),
        },
        "weighted": {
            "precision": float((precision * weights).sum()),
            "recall": float((recall * weights).sum()),
            "f1": float((f1 * weights).sum()),
        },
        "confusion_matrix": matrix.tolist(),
        "labels": list(labels),
    }
    if num_classes == 2:
        report["roc_auc"] = roc_auc_binary(y_true == 1, scores[:, 1])
    return report
