"""The Backend protocol every runtime implements. numpy only; no TensorFlow anywhere under runtime/."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from edgecls.meta import ModelMeta


class Backend(Protocol):
    """A loaded artifact that maps raw RGB pixels to class probabilities."""

    name: str  # "litert" | "tflite-runtime" | "tensorflow-lite" | "onnxruntime" | "openvino"
    meta: ModelMeta
    precision_ran: str  # what actually executed, e.g. "int8", "fp32", "bf16 (OpenVINO CPU hint)"
    threads: int | None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, h, w, 3) pixels in 0..255 -> float32 (N, classes) probabilities.

        uint8 pixels are accepted too; a uint8-input model with scale 1 takes them without conversion.
        """
        ...

    def close(self) -> None:
        ...
