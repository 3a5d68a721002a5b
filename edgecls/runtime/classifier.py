"""Classifier: any Backend plus its meta; images in, ranked classes out. The one classifier type of edgecls.

An artifact path is loaded with load_backend; a run folder or zoo name becomes a Keras backend through
edgecls.predictor.load_classifier (TensorFlow stays out of runtime/).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ImageError
from edgecls.meta import ModelMeta
from edgecls.postprocess import Class
from edgecls.postprocess import top_k as rank
from edgecls.preprocess import prepare
from edgecls.runtime.base import Backend
from edgecls.runtime.loader import load_backend

ImageInput = str | Path | np.ndarray


@dataclass
class Prediction:
    """One image's result: its ranked classes, or the reason it could not be read."""

    image: str  # the path as given, or "array N" for an in-memory image
    top: list[Class] = field(default_factory=list)
    error: ImageError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Classifier:
    """A loaded model and its meta: images in, ranked classes out."""

    def __init__(self, model: str | Path | Backend, device: str = "cpu", threads: int | None = None, **options: Any) -> None:
        """model: an artifact path (.tflite/.onnx/.xml with meta.json beside it) or an already loaded Backend."""
        self.backend: Backend = load_backend(model, device=device, threads=threads, **options) if isinstance(model, (str, Path)) else model
        self.meta: ModelMeta = self.backend.meta

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def precision_ran(self) -> str:
        return self.backend.precision_ran

    @property
    def source(self) -> str:
        """e.g. 'models/fm/export/tflite-int8/model.tflite (litert, int8)'."""
        return f"{self.backend.path} ({self.backend.name}, {self.backend.precision_ran})"

    @property
    def model(self) -> Any:
        """The Keras model of a Keras-backed classifier (kept for edgecls.export.api; prefer predictor.load_keras)."""
        try:
            return self.backend.model  # type: ignore[attr-defined]
        except AttributeError:
            raise AttributeError(f"'{self.backend.path}' runs in {self.backend.name}, not Keras: it has no Keras model") from None

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, h, w, 3) pixels in 0..255 -> float32 (N, classes) probabilities."""
        return self.backend.run(batch)

    probabilities = predict_arrays  # the name predictor's classifiers used

    def predict(self, images: Sequence[ImageInput] | ImageInput, top_k: int = 5, batch_size: int = 32) -> list[list[Class]]:
        """Top-k classes for each image path or RGB uint8 array (H, W, 3), in input order; a bad image raises ImageError."""
        results = []
        for item in self.predict_each(images, top_k, batch_size):
            if item.error is not None:
                raise item.error
            results.append(item.top)
        return results

    def predict_each(self, images: Sequence[ImageInput] | ImageInput, top_k: int = 5, batch_size: int = 32) -> Iterator[Prediction]:
        """Like predict, one Prediction per image in input order; an unreadable image is reported, the rest still run.

        Model failures (BackendRunError, a closed backend) still raise: they concern every image.
        """
        if isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]
        for start in range(0, len(images), batch_size):
            chunk = list(images[start : start + batch_size])
            items, arrays = [], []
            for offset, image in enumerate(chunk):
                item = Prediction(f"array {start + offset}" if isinstance(image, np.ndarray) else str(image))
                try:
                    arrays.append(prepare(image, self.meta))
                except ImageError as exc:
                    item.error = exc
                items.append(item)
            scores = iter(self.predict_arrays(np.stack(arrays)) if arrays else [])
            for item in items:
                if item.error is None:
                    item.top = rank(next(scores), self.meta.labels, top_k)
                yield item

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Classifier {self.source}>"
