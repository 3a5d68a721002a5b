"""What every format writer receives and returns, and the I/O contract every artifact keeps.

Writers write into a folder the caller made (a temp folder that is renamed into place only after
validation passed). No TensorFlow here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ModelError
from edgecls.export.formats import OPTIONS
from edgecls.meta import ModelMeta, Quantization
from edgecls.metadata.common import INPUT_NAME, META_KEY, OUTPUT_NAME

# The I/O names and the embedded-meta key are decided once, in edgecls.metadata.common; re-exported here for the writers.
__all__ = ["INPUT_NAME", "META_KEY", "OUTPUT_NAME", "Artifact", "ExportRequest", "artifact_meta", "input_size"]


@dataclass
class ExportRequest:
    """One export: a Keras classifier (raw 0..255 RGB pixels in, probabilities out) and how to convert it.

    The format-specific fields (io_type, opset, batch, allow_cpu_ops) take their defaults from formats.OPTIONS.
    """

    model: Any  # keras.Model, input float32 (1|None, h, w, 3)
    meta: ModelMeta
    precision: str  # one of the format's precisions (formats.FORMATS)
    out_dir: Path  # an existing, empty folder to write into
    stem: str = "model"  # artifact file stem: model.tflite, model.onnx, model.xml
    calibration: np.ndarray | None = None  # uint8 (N, h, w, 3) resized RGB pixels; required for int8
    io_type: str = OPTIONS["io_type"].default  # tflite int8 only: uint8 | int8 | float
    opset: int = OPTIONS["opset"].default  # onnx
    batch: int | None = OPTIONS["batch"].default  # openvino: static batch (1 by default); 0 or None: dynamic
    allow_cpu_ops: bool = OPTIONS["allow_cpu_ops"].default  # edgetpu: accept a graph cut before most of the compute
    max_drop: float | None = None  # openvino int8: NNCF accuracy-controlled quantization when set (with `holdout`)
    holdout: tuple[np.ndarray, np.ndarray] | None = None  # (uint8 images, labels) for accuracy control: a TUNING split
    float_nodes: tuple[str, ...] = ()  # int8 fallback: graph nodes kept float (ids from the sensitivity report)
    cache: dict[str, Any] | None = None  # one export's memo: the calibrated/float model the quantizer starts from,
    # filled by the int8 writers and reused by the sensitivity report and by fallback retries (no recalibration)


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


def input_size(request: ExportRequest) -> tuple[int, int]:
    """(h, w) from the meta, checked against the Keras model's input shape (None dimensions take the meta's)."""
    height, width = (int(v) for v in request.meta.input_size)
    shape = tuple(request.model.input_shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ModelError(f"model input shape {shape} is not (batch, h, w, 3)", "Export a classifier built by edgecls")
    got = tuple(int(d) if d else want for d, want in zip(shape[1:3], (height, width)))
    if got != (height, width):
        raise ModelError(f"model input {got[0]}x{got[1]} differs from meta input_size {height}x{width}",
                         "Export the run folder's own model and meta.json together")
    return height, width


def artifact_meta(meta: ModelMeta, fmt: str, precision: str, input_quantization: Quantization | None = None,
                  output_quantization: Quantization | None = None) -> ModelMeta:
    """The meta as it describes an artifact (ONNX/OpenVINO: float in, float out; QDQ / FakeQuantize are internal)."""
    return dataclasses.replace(meta, format=fmt, precision=precision,
                               input_quantization=input_quantization, output_quantization=output_quantization)
