"""Run exported artifacts: `load_backend` picks LiteRT, onnxruntime or OpenVINO by file suffix.

numpy only at import time; each backend imports its runtime package when it is loaded, and nothing
here imports TensorFlow (a Raspberry Pi installs edgecls[pi] without it).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, EdgeclsError, ModelError, suggest
from edgecls.meta import META_FILENAME, ModelMeta
from edgecls.postprocess import Class
from edgecls.postprocess import top_k as rank
from edgecls.preprocess import prepare
from edgecls.runtime.base import Backend


class EdgeTPUError(EdgeclsError):
    """The Edge TPU runtime library (libedgetpu) is missing, or no Coral device answered."""


@dataclass(frozen=True)
class RuntimeFormat:
    """One artifact kind a runtime reads."""

    suffix: str
    module: str
    cls: str


RUNTIMES = {
    ".tflite": RuntimeFormat(".tflite", "edgecls.runtime.litert", "LiteRTBackend"),
    ".onnx": RuntimeFormat(".onnx", "edgecls.runtime.onnx", "OnnxBackend"),
    ".xml": RuntimeFormat(".xml", "edgecls.runtime.openvino", "OpenVinoBackend"),
}
_NOT_ARTIFACTS = {
    ".bin": "pass the .xml beside it (an OpenVINO IR is an .xml plus its .bin)",
    ".keras": "a Keras model runs with 'edgecls predict RUN_FOLDER'; export it first to run it here",
    ".h5": "a Keras model runs with 'edgecls predict RUN_FOLDER'; export it first to run it here",
    ".json": "pass the model file beside meta.json, not meta.json itself",
}


def check_batch(batch: np.ndarray, input_hw: tuple[int | None, int | None], source: str | Path, keep_uint8: bool = False) -> np.ndarray:
    """The batch as contiguous float32 (N, h, w, 3) (uint8 kept when asked), or ConfigError naming the shape passed."""
    array = np.asarray(batch)
    height, width = (d if d is not None else "h" for d in input_hw)
    fits = array.ndim == 4 and array.shape[-1] == 3
    fits = fits and all(want is None or got == want for got, want in zip(array.shape[1:3], input_hw))
    if not fits:
        raise ConfigError(
            f"'{source}' takes a batch of shape (N, {height}, {width}, 3); got {array.shape}",
            "Prepare images with edgecls.preprocess.prepare(image, meta) and np.stack them",
        )
    if keep_uint8 and array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    return np.ascontiguousarray(array, dtype=np.float32)


def run_chunked(batch: np.ndarray, step: int, invoke: Callable[[np.ndarray], np.ndarray], classes: int | None) -> np.ndarray:
    """Run a static-batch model over N images, `step` at a time, padding the last chunk."""
    if not len(batch):
        return np.zeros((0, classes or 0), np.float32)
    outputs = []
    for start in range(0, len(batch), step):
        chunk = batch[start : start + step]
        pad = step - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        outputs.append(invoke(chunk)[: step - pad])
    return np.concatenate(outputs)


def run_batch(backend: Any, handle: Any, batch: np.ndarray, static_batch: int | None, invoke: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The shared `run` of the ONNX Runtime and OpenVINO backends: closed check, shape check, then one call
    for a dynamic batch or chunks of the static one."""
    if handle is None:
        raise ConfigError(f"the backend for '{backend.path}' is closed", "Load it again with load_backend()")
    batch = check_batch(batch, backend.input_hw, backend.path)
    if static_batch is None and len(batch):
        return invoke(batch)
    return run_chunked(batch, static_batch or 1, invoke, backend.num_classes)


def _check_contract(backend: Any, meta: ModelMeta, path: Path, meta_source: str) -> None:
    """The artifact's input size and class count must match meta.json."""
    height, width = backend.input_hw
    if (height is not None and height != meta.input_size[0]) or (width is not None and width != meta.input_size[1]):
        raise ModelError(
            f"'{path}' takes {height}x{width} input but {meta_source} says input_size {meta.input_size[0]}x{meta.input_size[1]}",
            "Export the artifact again from the same run, or use the meta.json it was exported with",
        )
    if backend.num_classes is not None and backend.num_classes != meta.num_classes:
        raise ModelError(
            f"'{path}' outputs {backend.num_classes} classes but {meta_source} lists {meta.num_classes} labels",
            "Export the artifact again from the same run, or use the meta.json it was exported with",
        )


def load_backend(
    path: str | Path, device: str = "cpu", threads: int | None = None, *, meta: ModelMeta | None = None, **options: Any
) -> Backend:
    """Load a .tflite, .onnx or .xml artifact with the meta.json beside it (or `meta`).

    device: "cpu" | "coral" (.tflite) | "cuda"/"gpu"/"auto" (.onnx) | "gpu"/"npu"/"auto" (.xml).
    options: .tflite edgetpu_device; .onnx providers; .xml precision_hint, config.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in RUNTIMES:
        hint = _NOT_ARTIFACTS.get(suffix, f"Pass a {', '.join(RUNTIMES)} file{suggest(suffix, RUNTIMES)}")
        raise ModelError(f"'{path}' has suffix '{suffix}', which no edgecls runtime reads", hint)
    if not path.is_file():
        raise ModelError(f"model file '{path}' does not exist", "Check the path, or export the model first")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer; got {threads!r}", "Pass e.g. threads=4, or None for the runtime's default")
    spec = RUNTIMES[suffix]
    module = importlib.import_module(spec.module)
    unknown = sorted(set(options) - set(module.OPTIONS))
    if unknown:
        choices = ", ".join(module.OPTIONS) or "none"
        raise ConfigError(
            f"option '{unknown[0]}' does not apply to {suffix} files{suggest(unknown[0], module.OPTIONS)}",
            f"Options for {suffix}: {choices}",
        )
    meta_source = "the meta passed in" if meta is not None else str(path.parent / META_FILENAME)
    if meta is None:
        meta = ModelMeta.load(path.parent / META_FILENAME)
    backend = getattr(module, spec.cls)(path, meta, device=device, threads=threads, **options)
    try:
        _check_contract(backend, meta, path, meta_source)
    except ModelError:
        backend.close()
        raise
    return backend


class Classifier:
    """An artifact plus its meta: images in, ranked classes out."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None, **options: Any) -> None:
        self.backend = load_backend(path, device=device, threads=threads, **options)
        self.meta = self.backend.meta

    @property
    def precision_ran(self) -> str:
        return self.backend.precision_ran

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, h, w, 3) pixels in 0..255 -> float32 (N, classes) probabilities."""
        return self.backend.run(batch)

    def predict(
        self, images: Sequence[str | Path | np.ndarray] | str | Path | np.ndarray, top_k: int = 5, batch_size: int = 32
    ) -> list[list[Class]]:
        """Top-k classes for each image path or RGB uint8 array (H, W, 3), in input order."""
        if isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]
        results: list[list[Class]] = []
        for start in range(0, len(images), batch_size):
            arrays = np.stack([prepare(image, self.meta) for image in images[start : start + batch_size]])
            results.extend(rank(scores, self.meta.labels, top_k) for scores in self.predict_arrays(arrays))
        return results

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Backend", "Classifier", "EdgeTPUError", "RUNTIMES", "check_batch", "load_backend", "run_batch", "run_chunked"]
