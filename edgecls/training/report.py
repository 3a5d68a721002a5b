"""PNG plots: training curves and confusion matrices (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecls.fsutil import atomic_path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Loss and accuracy per epoch, train vs val, phases in sequence."""
    if not rows:
        return None
    plt = _pyplot()
    steps = np.arange(1, len(rows) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [float(row.get(prefix + metric, "nan") or "nan") for row in rows]
            axis.plot(steps, values, style, marker="o", label=(prefix or "train_") + metric)
        boundaries = [i + 0.5 for i in range(1, len(rows)) if rows[i].get("phase") != rows[i - 1].get("phase")]
        for x in boundaries:
            axis.axvline(x, color="grey", linewidth=0.8)
            axis.text(x, axis.get_ylim()[1], " fine-tune", va="top", fontsize=8, color="grey")
        axis.set_xlabel("epoch (head, then fine-tune)")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def plot_confusion(matrix: np.ndarray, labels: list[str], path: Path, title: str = "Confusion matrix") -> Path:
    """Row-normalised confusion matrix with counts in the cells."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    size = max(4.0, 0.55 * len(labels) + 2)
    fig, axis = plt.subplots(figsize=(size + 1, size))
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=axis, fraction=0.046, label="fraction of true class")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    if len(labels) <= 30:
        for (row, col), count in np.ndenumerate(matrix):
            axis.text(col, row, str(count), ha="center", va="center", fontsize=7, color="white" if normalised[row, col] > 0.5 else "black")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
