"""What every backend shares: the batch check, static-batch chunking, run-time errors as one typed line, close.

numpy only; no TensorFlow anywhere under runtime/ (the Keras backend in edgecls.predictor reuses BaseBackend
from outside).
"""
from __future__ import annotations

import importlib.metadata
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, EdgeclsError, ModelError
from edgecls.meta import META_FILENAME, ModelMeta, Quantization

MAX_DETAIL = 300  # characters of a runtime's own message kept in the one-line error
# backend name -> (module, distribution) whose version is the runtime's version
RUNTIME_PACKAGES = {
    "litert": ("ai_edge_litert", "ai-edge-litert"), "tflite-runtime": ("tflite_runtime", "tflite-runtime"),
    "tensorflow-lite": ("tensorflow", "tensorflow"), "onnxruntime": ("onnxruntime", "onnxruntime"),
    "openvino": ("openvino", "openvino"), "keras": ("keras", "keras"),
}


class EdgeTPUError(EdgeclsError):
    """The Edge TPU runtime library (libedgetpu) is missing, or no Coral device answered."""


class BackendRunError(ModelError):
    """A model that loaded but failed while running: the runtime's own message, shortened to one line."""

    def __init__(self, path: str | Path, backend: str, detail: str) -> None:
        super().__init__(
            f"'{path}' failed while running in {backend} ({detail})",
            "The model loads but cannot run on this input: export it again from its run, or try another format",
        )
        self.path, self.backend, self.detail = Path(path), backend, detail


def one_line(exc: BaseException) -> str:
    """A runtime's message as one line: C++ stack dumps say what went wrong on their last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


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


def label_mismatch(path: str | Path, outputs: int, meta: ModelMeta, meta_source: str) -> ModelError:
    return ModelError(
        f"'{path}' outputs {outputs} classes but {meta_source} lists {meta.num_classes} labels",
        "Export the artifact again from the same run, or use the meta.json it was exported with",
    )


class BaseBackend:
    """The shared half of every Backend (see base.Backend): subclasses load the model, set the attributes
    below and implement `_invoke(chunk)` (one call of the runtime) and `_release()`.

    `run` checks the batch, runs it in one call (dynamic batch) or in chunks of the static batch, turns
    the runtime's own exceptions (`_run_errors`) into one BackendRunError naming the model and the backend,
    and checks the class count against meta.json when the model's output size was not known at load time.
    """

    name: str = "backend"
    path: Path
    meta: ModelMeta
    device: str = "cpu"
    threads: int | None = None
    precision_ran: str = "unknown"
    input_hw: tuple[int | None, int | None] = (None, None)
    num_classes: int | None = None
    input_quantization: Quantization | None = None
    output_quantization: Quantization | None = None
    meta_source: str = META_FILENAME  # where the meta came from (load_backend sets it)
    _static_batch: int | None = None  # None: any batch in one call
    _keep_uint8: bool = False  # hand uint8 pixels over unconverted
    _run_errors: tuple[type[BaseException], ...] = (RuntimeError, ValueError)
    _closed: bool = False

    @property
    def closed(self) -> bool:
        return self._closed

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, h, w, 3) pixels in 0..255 -> float32 (N, classes) probabilities."""
        if self._closed:
            raise ConfigError(f"the backend for '{self.path}' is closed", "Load it again with load_backend()")
        batch = check_batch(batch, self.input_hw, self.path, keep_uint8=self._keep_uint8)
        try:
            if self._static_batch is None and len(batch):
                scores = self._invoke(batch)
            else:
                scores = run_chunked(batch, self._static_batch or 1, self._invoke, self.num_classes or self.meta.num_classes)
        except EdgeclsError:
            raise
        except self._run_errors as exc:
            raise BackendRunError(self.path, self.name, self._describe_error(exc)) from exc
        if len(batch) and scores.shape != (len(batch), self.meta.num_classes):
            if scores.ndim == 2 and scores.shape[0] == len(batch):
                raise label_mismatch(self.path, scores.shape[1], self.meta, self.meta_source)
            raise BackendRunError(self.path, self.name, f"it returned scores of shape {scores.shape} for {len(batch)} images")
        return scores

    def _invoke(self, chunk: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _describe_error(self, exc: BaseException) -> str:
        return one_line(exc)

    def _release(self) -> None:
        """Drop the runtime's objects (interpreter, session, compiled model)."""

    def close(self) -> None:
        self._closed = True
        self._release()

    def __enter__(self) -> BaseBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} ({self.name}, {self.precision_ran}, {self.device})>"


def ort_detail(exc: BaseException) -> str:
    """onnxruntime's '[ONNXRuntimeError] : 1 : FAIL : ... Status Message: /src/x.h:84 f(args) cond was false. What' as
    '... : What' without the source location."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    head, _, status = text.partition(" Status Message: ")
    if status:
        status = status.split(" was false. ", 1)[-1]
        status = re.sub(r"\S+\.(?:h|cc|cpp):\d+ \S+\(.*?\)\s*", "", status)
        head = re.sub(r"\.?\s*Name:'([^']*)'", lambda m: f" '{m.group(1)}'" if m.group(1) else "", head)
        text = f"{head.rstrip(' .')}: {status}"
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def runtime_version(name: str) -> str:
    """The installed version of backend `name`'s runtime package ("unknown" when it cannot be told); imports nothing new."""
    module_name, distribution = RUNTIME_PACKAGES.get(name, (name, name))
    version = getattr(sys.modules.get(module_name), "__version__", None)
    if version:
        return str(version).split("-")[0]  # openvino: "2026.4.1-22982-..." -> "2026.4.1"
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def describe_runtime(backend: Any) -> dict[str, str]:
    """What ran a loaded backend: runtime, version, device and delegate, precision, machine and OS, Python, edgecls.

    Golden sets store it (the run that made the expected scores) and `edgecls verify` prints it beside this machine's.
    """
    from edgecls import __version__

    device = str(getattr(backend, "device", "cpu"))
    return {
        "runtime": str(backend.name), "version": runtime_version(backend.name), "device": device,
        "delegate": "edgetpu" if device == "coral" else "", "precision_ran": str(getattr(backend, "precision_ran", "unknown")),
        "machine": platform.machine(), "system": platform.system(), "python": platform.python_version(), "edgecls": __version__,
    }
