"""Evaluation of a run's Keras model or an exported artifact: metrics JSON, confusion matrix PNG and CSV."""
from __future__ import annotations

import csv
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, DataError, ModelError
from edgecls.fsutil import atomic_path, check_outputs, write_json
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


def final_metrics(model: Any, arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray], classes: list[str], batch: int,
                  run_dir: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """A finished run's metrics.json: the test split's report (the val split's when there is no test split), its
    confusion matrix files, and `extra` (train time, speeds, decisions)."""
    split = "test" if len(arrays["test"]) else "val"
    metrics: dict[str, Any] = {"split": split}
    if len(arrays[split]):
        report = evaluate_arrays(model, arrays[split], labels[split], classes, batch=batch)
        write_eval_outputs(report, run_dir, title=f"{split} split")
        metrics.update(report)
    metrics.update(extra)
    write_json(run_dir / "metrics.json", metrics)
    return metrics


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


def evaluate(model: str | Path, data: str | Path | None = None, batch: int = 64, split: str = "test",
             device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """Evaluate a run folder on one of its own splits (default: test) or on a labelled ImageFolder tree `data`,
    or an exported artifact (.tflite/.onnx/.xml, or its export folder) on `data`, through edgecls.runtime (no TensorFlow).

    Writes <prefix>metrics.json and <prefix>confusion_matrix.{png,csv} beside the model and returns the report.
    The prefix names what was evaluated, so no report overwrites another: eval_ (the test split), eval_val_,
    eval_train_, eval_data_ (a --data tree). device/threads apply to artifacts.
    """
    from edgecls.run_folder import MODEL_FILE, read_split, require_run_folder

    if split not in SPLITS:
        raise ConfigError(f"--split '{split}' is not {', '.join(SPLITS[:-1])} or {SPLITS[-1]}", f"Pick one of {', '.join(SPLITS)}")
    if batch < 1:
        raise ConfigError(f"--batch {batch} must be positive", "Use e.g. --batch 64")
    path = Path(model)
    artifact = _artifact(path) if not (path / MODEL_FILE).exists() else None
    # Bad --data, a missing model or a broken splits.json fail here, before the model (and TensorFlow) load.
    if data is not None and not Path(data).is_dir():
        raise DataError(f"--data '{data}' is not a folder", "Pass an ImageFolder tree (a folder per class)")
    if artifact is not None:
        if data is None:
            raise ConfigError(f"'{artifact}' is an exported artifact, which has no splits of its own",
                              "Pass --data DIR with a folder per class")
        if split != "test":
            raise ConfigError(f"--split {split} applies to run folders; an artifact is evaluated on --data", "Drop --split")
        out_dir = artifact.parent
    else:
        run = require_run_folder(path)
        if device != "cpu" or threads is not None:
            raise ConfigError(f"--backend-device and --threads apply to exported artifacts, not to run folder '{run}'", "Drop them")
        out_dir = run
        if data is None:
            files = read_split(run, split)
            if not files.paths and split == "test":
                files, split = read_split(run, "val"), "val"
    if data is not None:
        check_outputs({"the report folder": out_dir}, {"--data": data})
    if artifact is not None:
        report = _evaluate_artifact(artifact, Path(str(data)), batch, device, threads)
    else:
        report = _evaluate_run(run, None if data is None else Path(data), files if data is None else None, split, batch)
    prefix = "eval_data_" if data is not None else ("eval_" if split == "test" else f"eval_{split}_")
    outputs = write_eval_outputs(report, out_dir, title=report["source"], prefix=prefix)
    report["outputs"] = {key: str(value) for key, value in outputs.items()}
    return report


SPLITS = ("test", "val", "train")


def _artifact(path: Path) -> Path | None:
    """The artifact file `path` names (itself, or the one inside an export folder); None for anything else."""
    from edgecls.runtime import RUNTIMES

    if path.suffix.lower() in RUNTIMES and not path.is_dir():
        return path  # a missing file is reported by the runtime
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in RUNTIMES and not p.name.startswith("."))
        if len(found) > 1:
            raise ModelError(f"'{path}' holds {len(found)} artifacts ({', '.join(p.name for p in found)})", "Pass one of the files")
        return found[0] if found else None
    return None


def _evaluate_run(run: Path, data: Path | None, files: Any, split: str, batch: int) -> dict[str, Any]:
    from edgecls.run_folder import load_run
    from edgecls.training.pipeline import DecodedOnDemand, decoded_bytes, load_images, memory_budget_bytes

    model, meta = load_run(run)
    if data is None:
        paths, labels, source = files.paths, files.labels, f"{split} split of {run}"
    else:
        paths, labels, source = _labelled_folder(data, meta.labels)
    if not paths:
        raise DataError(f"no labelled images to evaluate in {source}", "Pass --data DIR with a folder per class")
    images: Any = DecodedOnDemand(paths, meta.input_size, meta.crop_fraction, meta.interpolation)
    if decoded_bytes(len(paths), meta.input_size) <= memory_budget_bytes():  # else decoded batch by batch: flat memory
        images = load_images(paths, meta.input_size, meta.crop_fraction, meta.interpolation)
    report = evaluate_arrays(model, images, np.asarray(labels), meta.labels, batch)
    report["source"] = source
    return report


def _evaluate_artifact(artifact: Path, data: Path, batch: int, device: str, threads: int | None) -> dict[str, Any]:
    """An exported artifact through edgecls.runtime: the preprocessing every runtime uses, no TensorFlow."""
    from edgecls.preprocess import prepare
    from edgecls.runtime import Classifier

    with Classifier(artifact, device=device, threads=threads) as classifier:
        meta = classifier.meta
        paths, labels, source = _labelled_folder(data, meta.labels)
        if not paths:
            raise DataError(f"no labelled images to evaluate in {source}", "Pass --data DIR with a folder per class")
        start = time.perf_counter()
        scores = []
        with ThreadPoolExecutor(max_workers=8) as pool:
            for first in range(0, len(paths), batch):
                chunk = np.stack(list(pool.map(lambda p: prepare(p, meta), paths[first : first + batch])))
                scores.append(np.asarray(classifier.predict_arrays(chunk), np.float32))
        seconds = time.perf_counter() - start
        report = classification_report(np.asarray(labels), np.concatenate(scores), meta.labels)
        report.update(source=source, model=classifier.source, eval_seconds=round(seconds, 3),
                      eval_images_per_second=round(len(paths) / seconds, 1) if seconds else None)
    return report


def _labelled_folder(root: Path, labels: list[str]) -> tuple[list[Path], np.ndarray, str]:
    """Images of an ImageFolder tree (its test/ split when pre-split), mapped onto the model's labels."""
    from edgecls.data.labelled import read_labelled_folder

    images = read_labelled_folder(root, labels)
    if images.skipped:
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True).print(f"[yellow]warning:[/yellow] skipped {len(images.skipped)} unreadable image(s) in "
                                   f"'{escape(str(images.folder))}'")
    return list(images.paths), images.labels, str(images.folder)
