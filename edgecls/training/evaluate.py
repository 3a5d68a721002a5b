"""Evaluation of a run's Keras model: metrics JSON, confusion matrix PNG and CSV."""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import DataError
from edgecls.fsutil import atomic_path, write_json
from edgecls.metrics import classification_report


def predict_arrays(model: Any, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """Probabilities for uint8 (N, h, w, 3) images, batch by batch."""
    import tensorflow as tf

    run = tf.function(lambda x: model(x, training=False))
    out = [np.asarray(run(tf.constant(images[i : i + batch].astype(np.float32))), np.float32) for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, int(model.outputs[0].shape[-1])), np.float32)


def evaluate_arrays(model: Any, images: np.ndarray, labels: np.ndarray, classes: list[str], batch: int = 64) -> dict[str, Any]:
    start = time.perf_counter()
    scores = predict_arrays(model, images, batch)
    seconds = time.perf_counter() - start
    report = classification_report(labels, scores, classes)
    report["eval_seconds"] = round(seconds, 3)
    report["eval_images_per_second"] = round(len(images) / seconds, 1) if seconds else None
    return report


def write_eval_outputs(report: dict[str, Any], out_dir: Path, title: str, prefix: str = "") -> dict[str, Path]:
    """confusion_matrix.png/.csv (and eval JSON when a prefix is given) in out_dir."""
    from edgecls.training.report import plot_confusion

    labels, matrix = report["labels"], np.asarray(report["confusion_matrix"])
    png = plot_confusion(matrix, labels, out_dir / f"{prefix}confusion_matrix.png", title=f"Confusion matrix, {title}")
    csv_path = out_dir / f"{prefix}confusion_matrix.csv"
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *labels])
        for label, row in zip(labels, matrix.tolist()):
            writer.writerow([label, *row])
    written = {"confusion_png": png, "confusion_csv": csv_path}
    if prefix:
        written["json"] = write_json(out_dir / f"{prefix}metrics.json", report)
    return written


def evaluate(run: str | Path, data: str | Path | None = None, batch: int = 64, split: str = "test") -> dict[str, Any]:
    """Evaluate a run folder on its own split (default: test) or on a labelled ImageFolder tree `data`.

    Writes eval_metrics.json and eval_confusion_matrix.{png,csv} into the run folder; returns the report.
    """
    from edgecls.training.pipeline import load_images
    from edgecls.training.run_folder import load_run, read_split, require_run_folder

    run = require_run_folder(run)
    # Bad --data or a broken splits.json fail here, before the model (and TensorFlow) load.
    if data is not None and not Path(data).is_dir():
        raise DataError(f"--data '{data}' is not a folder", "Pass an ImageFolder tree (a folder per class)")
    if data is None:
        files = read_split(run, split)
        if not files.paths and split == "test":
            files, split = read_split(run, "val"), "val"
    model, meta = load_run(run)
    if data is None:
        paths, labels, source = files.paths, files.labels, f"{split} split of {run}"
    else:
        paths, labels, source = _labelled_folder(Path(data), meta.labels)
    if not paths:
        raise DataError(f"no labelled images to evaluate in {source}", "Pass --data DIR with a folder per class")
    images = load_images(paths, meta.input_size, meta.crop_fraction, meta.interpolation)
    report = evaluate_arrays(model, images, np.asarray(labels), meta.labels, batch)
    report["source"] = source
    outputs = write_eval_outputs(report, run, title=source, prefix="eval_")
    report["outputs"] = {key: str(value) for key, value in outputs.items()}
    return report


def _labelled_folder(root: Path, labels: list[str]) -> tuple[list[Path], np.ndarray, str]:
    """Images of an ImageFolder tree (its test/ split when pre-split), mapped onto the model's labels."""
    from edgecls.data.folder import check_image, scan_class_folders

    test_dirs = [p for p in root.iterdir() if p.is_dir() and p.name.lower() == "test"]
    folder = test_dirs[0] if test_dirs else root
    names, all_paths, all_indices = scan_class_folders(folder)
    readable = [(p, i) for p, i in zip(all_paths, all_indices) if check_image(p) is None]
    if len(readable) < len(all_paths):
        from rich.console import Console
        from rich.markup import escape

        skipped = len(all_paths) - len(readable)
        Console(stderr=True).print(f"[yellow]warning:[/yellow] skipped {skipped} unreadable image(s) in '{escape(str(folder))}'")
    paths, indices = [p for p, _ in readable], [i for _, i in readable]
    unknown = sorted(set(names) - set(labels))
    if unknown:
        raise DataError(f"classes {unknown} in '{folder}' are not among the model's labels",
                        f"Use folders named like the model's labels: {', '.join(labels[:10])}")
    mapped = np.asarray([labels.index(names[i]) for i in indices], dtype=np.int64)
    return list(paths), mapped, str(folder)
