"""`predict`: classify image files with a run folder, an exported artifact, or a pretrained zoo model.

Artifacts (.tflite/.onnx/.xml) run through edgecls.runtime and never import TensorFlow.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ModelError
from edgecls.meta import ModelMeta
from edgecls.postprocess import Class, to_probabilities, top_k
from edgecls.preprocess import prepare


@dataclass
class KerasClassifier:
    """A Keras model plus the meta that says how to feed it."""

    model: Any
    meta: ModelMeta
    source: str

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return to_probabilities(np.asarray(self.model(tf.constant(batch), training=False)), self.meta.output)


@dataclass
class ArtifactClassifier:
    """An exported artifact loaded by a runtime backend."""

    backend: Any
    meta: ModelMeta
    source: str

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return self.backend.run(batch)


def _single_artifact(folder: Path) -> Path:
    """The one artifact in an export folder, or the folder itself when it holds none (then it must be a run)."""
    from edgecls.runtime import RUNTIMES

    found = sorted(p for p in folder.iterdir() if p.suffix in RUNTIMES and not p.name.startswith("."))
    if len(found) > 1:
        raise ModelError(f"'{folder}' holds {len(found)} artifacts ({', '.join(p.name for p in found)})", "Pass one of the files")
    return found[0] if found else folder


def load_classifier(model: str | Path, device: str = "cpu", threads: int | None = None) -> KerasClassifier | ArtifactClassifier:
    """A run folder (model.keras + meta.json), an exported artifact file, or a zoo name with offline ImageNet weights."""
    path = Path(model)
    if path.is_dir() and not (path / "model.keras").exists():
        path = _single_artifact(path)  # an export folder such as RUN/export/tflite-int8/
    if path.is_file():
        from edgecls.runtime import load_backend

        backend = load_backend(path, device=device, threads=threads)
        return ArtifactClassifier(backend, backend.meta, f"{path} ({backend.name}, {backend.precision_ran})")
    if path.exists():
        from edgecls.training.run_folder import load_run

        keras_model, meta = load_run(path)
        return KerasClassifier(keras_model, meta, str(path))
    from edgecls.zoo.registry import get_spec

    try:
        get_spec(str(model))
    except ModelError:
        raise ModelError(
            f"'{model}' is neither an existing run folder nor a model name",
            "Pass a folder made by 'edgecls train', or a name from 'edgecls models'",
        ) from None
    from edgecls.zoo.classifier import pretrained_imagenet

    keras_model, meta = pretrained_imagenet(str(model))
    return KerasClassifier(keras_model, meta, f"{model} (ImageNet)")


def predict(model: str | Path | KerasClassifier | ArtifactClassifier, images: Sequence[str | Path], top: int = 5,
            batch: int = 16, device: str = "cpu", threads: int | None = None) -> list[dict[str, Any]]:
    """Top-k classes per image: [{"image": path, "top": [Class, ...]}], in input order."""
    classifier = model if isinstance(model, (KerasClassifier, ArtifactClassifier)) else load_classifier(model, device, threads)
    results: list[dict[str, Any]] = []
    for start in range(0, len(images), batch):
        chunk = list(images[start : start + batch])
        arrays = np.stack([prepare(Path(p), classifier.meta) for p in chunk])
        for path, scores in zip(chunk, classifier.probabilities(arrays)):
            results.append({"image": str(path), "top": top_k(scores, classifier.meta.labels, top)})
    return results


def as_json(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"image": r["image"], "top": [{"id": c.id, "label": c.label, "score": c.score} for c in r["top"]]} for r in results]


__all__ = ["ArtifactClassifier", "Class", "KerasClassifier", "as_json", "load_classifier", "predict"]
