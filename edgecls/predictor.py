"""`predict`: classify images with a run folder, an exported artifact, or a pretrained zoo model.

Every kind of model becomes one `edgecls.runtime.Classifier`: artifacts (.tflite/.onnx/.xml) through their
runtime backend (never TensorFlow), run folders and zoo names through `KerasBackend`, the Backend
implementation over a Keras model that lives here because runtime/ never imports TensorFlow.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ImageError, ModelError
from edgecls.meta import ModelMeta
from edgecls.postprocess import Class, to_probabilities
from edgecls.preprocess import IMAGE_SUFFIXES
from edgecls.runtime.classifier import Classifier, Prediction
from edgecls.runtime.common import BaseBackend

GLOB_CHARACTERS = frozenset("*?[")


class KerasBackend(BaseBackend):
    """A Keras model (a run's model.keras or a zoo model with ImageNet weights) behind the Backend protocol.

    TensorFlow is imported when one is loaded, never when this module is.
    """

    name = "keras"
    device = "auto"  # TensorFlow places the ops itself

    def __init__(self, model: Any, meta: ModelMeta, path: str | Path) -> None:
        import tensorflow as tf

        self.model, self.meta, self.path = model, meta, Path(path)
        self._tf = tf
        self._run_errors = (tf.errors.OpError, ValueError, RuntimeError)
        in_shape = tuple(model.input_shape)
        self.input_hw = (in_shape[1], in_shape[2]) if len(in_shape) == 4 else (None, None)
        last = model.output_shape[-1] if model.output_shape else None
        self.num_classes = last if isinstance(last, int) else None
        policy = getattr(getattr(model, "dtype_policy", None), "name", "float32")
        self.precision_ran = {"float32": "fp32", "mixed_float16": "mixed fp16", "mixed_bfloat16": "mixed bf16"}.get(policy, policy)

    @classmethod
    def from_run(cls, run: str | Path) -> KerasBackend:
        from edgecls.run_folder import MODEL_FILE, load_run

        model, meta = load_run(run)
        return cls(model, meta, Path(run) / MODEL_FILE)

    @classmethod
    def from_zoo(cls, name: str) -> KerasBackend:
        from edgecls.zoo.classifier import pretrained_imagenet

        model, meta = pretrained_imagenet(name)
        return cls(model, meta, name)

    def _invoke(self, chunk: np.ndarray) -> np.ndarray:
        scores = np.asarray(self.model(self._tf.constant(chunk, self._tf.float32), training=False))
        return to_probabilities(scores.reshape(len(chunk), -1), self.meta.output).astype(np.float32, copy=False)

    def _release(self) -> None:
        self.model = None


def _single_artifact(folder: Path) -> Path:
    """The one artifact in an export folder, or the folder itself when it holds none (then it must be a run)."""
    from edgecls.runtime import RUNTIMES

    found = sorted(p for p in folder.iterdir() if p.suffix in RUNTIMES and not p.name.startswith("."))
    if len(found) > 1:
        raise ModelError(f"'{folder}' holds {len(found)} artifacts ({', '.join(p.name for p in found)})", "Pass one of the files")
    return found[0] if found else folder


def load_keras(model: str | Path) -> KerasBackend:
    """A run folder (model.keras + meta.json) or a zoo name with offline ImageNet weights, as a Keras backend."""
    if Path(model).exists():
        return KerasBackend.from_run(model)
    from edgecls.zoo.registry import get_spec

    try:
        get_spec(str(model))
    except ModelError:
        raise ModelError(
            f"'{model}' is neither an existing run folder nor a model name",
            "Pass a folder made by 'edgecls train', or a name from 'edgecls models'",
        ) from None
    return KerasBackend.from_zoo(str(model))


def load_classifier(model: str | Path, device: str = "cpu", threads: int | None = None) -> Classifier:
    """A run folder, an export folder, an exported artifact file, or a zoo name, as a Classifier.

    device and threads apply to artifacts; TensorFlow chooses its own for Keras models.
    """
    path = Path(model)
    if path.is_dir() and not (path / "model.keras").exists():
        path = _single_artifact(path)  # an export folder such as RUN/export/tflite-int8/
    if path.is_file():
        return Classifier(path, device=device, threads=threads)
    return Classifier(load_keras(model))


# --- which files to classify ---------------------------------------------------------------------

@dataclass
class ImageList:
    """The image files found for the inputs, in order, and one error per input that gave none."""

    paths: list[Path]
    errors: list[ImageError]


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    if not recursive:
        return sorted(p for p in folder.iterdir() if _is_image(p) and p.is_file())
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):  # symlinked folders are not followed: no loops
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / name for name in sorted(files) if _is_image(Path(name)))
    return found


def _from_folder(folder: Path, recursive: bool) -> list[Path]:
    try:
        found = _folder_images(folder, recursive)
    except PermissionError as exc:
        raise ImageError(f"folder '{folder}' is not readable (permission denied)", "Fix its permissions") from exc
    if found:
        return found
    subfolders = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")] if not recursive else []
    if subfolders:
        raise ImageError(f"'{folder}' is a folder, not an image, and holds no images at its top level ({len(subfolders)} subfolders)",
                         "Add --recursive to classify the images in its subfolders")
    raise ImageError(f"'{folder}' is a folder, not an image, and holds none ({', '.join(IMAGE_SUFFIXES)})",
                     "Pass image files, or a folder that holds some")


def find_images(inputs: Iterable[str | Path], recursive: bool = False) -> ImageList:
    """Files, folders (their images; --recursive: also in subfolders) and glob patterns the shell left unexpanded
    ('*', '?', '[...]'; '**' with recursive). A path that exists is taken as it is, even if it holds '[' or '*'.
    A file given by name is kept whatever its suffix: reading it tells whether it is an image."""
    paths: list[Path] = []
    errors: list[ImageError] = []
    for item in inputs:
        path = Path(item)
        text = str(item)
        try:
            if path.is_dir():
                paths.extend(_from_folder(path, recursive))
            elif path.exists() or os.path.lexists(path) or not GLOB_CHARACTERS & set(text):
                paths.append(path)  # a file, a broken link or a missing path: reading it says what is wrong
            else:
                paths.extend(_from_pattern(text, recursive))
        except ImageError as exc:
            errors.append(exc)
    return ImageList(paths, errors)


def _from_pattern(pattern: str, recursive: bool) -> list[Path]:
    matches = sorted(glob.glob(pattern, recursive=recursive))
    if not matches:
        raise ImageError(f"no file matches '{pattern}'", "Check the folder and the pattern")
    found: list[Path] = []
    for match in map(Path, matches):
        found.extend(_from_folder(match, recursive) if match.is_dir() else [match])
    return found


# --- the library call ----------------------------------------------------------------------------

def predict(model: str | Path | Classifier, images: Sequence[str | Path], top: int = 5,
            batch: int = 16, device: str = "cpu", threads: int | None = None) -> list[dict[str, Any]]:
    """Top-k classes per image: [{"image": path, "top": [Class, ...]}], in input order; a bad image raises ImageError."""
    classifier = model if isinstance(model, Classifier) else load_classifier(model, device, threads)
    results = []
    for prediction in classifier.predict_each(list(images), top, batch):
        if prediction.error is not None:
            raise prediction.error
        results.append({"image": prediction.image, "top": prediction.top})
    return results


def as_json(results: Iterable[dict[str, Any] | Prediction]) -> list[dict[str, Any]]:
    rows = [(r.image, r.top) if isinstance(r, Prediction) else (r["image"], r["top"]) for r in results]
    return [{"image": image, "top": [{"id": c.id, "label": c.label, "score": c.score} for c in top]} for image, top in rows]


__all__ = ["Class", "Classifier", "ImageList", "KerasBackend", "Prediction", "as_json", "find_images", "load_classifier", "load_keras",
           "predict"]
