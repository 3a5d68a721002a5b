"""The Backend protocol: what camera/, bench/, export/validate.py, deploy/ and predict use of a loaded model.

numpy only; no TensorFlow anywhere under runtime/. The three artifact backends (litert, onnx, openvino) and
the Keras backend of edgecls.predictor implement it through common.BaseBackend.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from edgecls.meta import ModelMeta, Quantization


@runtime_checkable
class Backend(Protocol):
    """A loaded model that maps raw RGB pixels to class probabilities."""

    name: str  # "litert" | "tflite-runtime" | "tensorflow-lite" | "onnxruntime" | "openvino" | "keras"
    path: Path  # the model file (a zoo model: its name)
    meta: ModelMeta  # input contract and labels (meta.json beside the artifact, or the run's)
    device: str  # where it runs: "cpu", "coral", "CPU"/"GPU"/"NPU"/"AUTO" (OpenVINO), ...
    threads: int | None  # runtime threads asked for; None = the runtime's default
    precision_ran: str  # what actually executed, e.g. "int8", "fp32", "bf16 (OpenVINO CPU hint)"
    input_hw: tuple[int | None, int | None]  # (height, width); None where the model takes any size
    num_classes: int | None  # the model's output size; None where it is dynamic (checked at run time)
    input_quantization: Quantization | None  # integer input: its scale and zero point; None for float
    output_quantization: Quantization | None

    @property
    def closed(self) -> bool:
        ...

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, h, w, 3) pixels in 0..255 -> float32 (N, classes) probabilities.

        uint8 pixels are accepted too; a uint8-input model with scale 1 takes them without conversion.
        Raises ConfigError for a batch of the wrong shape and BackendRunError when the runtime fails.
        """
        ...

    def close(self) -> None:
        ...

    def __enter__(self) -> Backend:
        ...

    def __exit__(self, *exc: object) -> None:
        ...
