"""What every format writer receives and returns. Writers write into a folder the caller made
(a temp folder that is renamed into place only after validation passed)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.meta import ModelMeta, Quantization

PRECISIONS = ("fp32", "fp16", "dynamic", "int8")


@dataclass
class ExportRequest:
    """One export: a Keras classifier (raw 0..255 RGB pixels in, probabilities out) and how to convert it."""

    model: Any  # keras.Model, input float32 (1|None, h, w, 3)
    meta: ModelMeta
    precision: str  # one of PRECISIONS
    out_dir: Path  # an existing, empty folder to write into
    stem: str = "model"  # artifact file stem: model.tflite, model.onnx, model.xml
    calibration: np.ndarray | None = None  # uint8 (N, h, w, 3) resized RGB pixels; required for int8
    io_type: str = "uint8"  # tflite int8 only: uint8 | int8 | float
    opset: int = 17  # onnx
    max_drop: float | None = None  # openvino int8: accuracy-controlled quantization when set
    holdout: tuple[np.ndarray, np.ndarray] | None = None  # (uint8 images, labels) for accuracy control


@dataclass
class Artifact:
    """What a writer produced."""

    path: Path  # the main file (.tflite / .onnx / .xml)
    format: str  # tflite | edgetpu | onnx | openvino
    precision: str
    input_quantization: Quantization | None = None
    output_quantization: Quantization | None = None
    extra_files: list[Path] = field(default_factory=list)  # e.g. the .bin beside an .xml
    notes: dict[str, Any] = field(default_factory=dict)  # format-specific report (edgetpu ops, nncf mode...)
