"""Metadata that every runtime of the ecosystem reads on its own, written into each artifact format.

TF-free: a FlatBuffers reader (TFLite), a protobuf wire reader (ONNX) and ElementTree (OpenVINO IR) are
enough to read it back, so a lone artifact is self-sufficient on a device with only a runtime installed.
Writers: `write_tflite_metadata` (bytes -> bytes), `write_onnx_metadata` (onnx.ModelProto),
`write_openvino_metadata` (openvino.Model, with `static_batch` and `name_output`). Golden sets: golden.py.
"""
from __future__ import annotations

from pathlib import Path

from edgecls.meta import ModelMeta
from edgecls.metadata.common import INPUT_NAME, LABELS_FILE, META_KEY, OUTPUT_NAME, ArtifactInfo, artifact_info, pixel_normalization
from edgecls.metadata.golden import (
    GOLDEN_FILE,
    GoldenReport,
    GoldenSet,
    check_golden,
    label_problems,
    load_golden,
    make_golden,
    runtime_summary,
    save_golden,
    tolerance_for,
)
from edgecls.metadata.onnx import onnx_metadata_props, read_onnx_meta, read_onnx_props, write_onnx_metadata
from edgecls.metadata.openvino import model_info, name_output, read_openvino_meta, read_rt_info, static_batch, write_openvino_metadata
from edgecls.metadata.tflite import (
    client_notes,
    read_tflite_meta,
    read_tflite_standard,
    write_tflite_metadata,
    write_tflite_metadata_file,
)

READERS = {".tflite": read_tflite_meta, ".onnx": read_onnx_meta, ".xml": read_openvino_meta}


def read_embedded_meta(path: str | Path) -> ModelMeta | None:
    """The ModelMeta embedded in a .tflite, .onnx or .xml artifact; None when the file carries none.

    Raises ModelError (one line) when the file cannot be read or its embedded meta is damaged.
    """
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    return None if reader is None else reader(path)


__all__ = [
    "GOLDEN_FILE", "INPUT_NAME", "LABELS_FILE", "META_KEY", "OUTPUT_NAME", "READERS", "ArtifactInfo", "GoldenReport", "GoldenSet",
    "artifact_info", "check_golden", "client_notes", "label_problems", "load_golden", "make_golden", "model_info", "name_output",
    "onnx_metadata_props", "pixel_normalization", "read_embedded_meta", "read_onnx_meta", "read_onnx_props", "read_openvino_meta",
    "read_rt_info", "read_tflite_meta", "read_tflite_standard", "runtime_summary", "save_golden", "static_batch", "tolerance_for",
    "write_onnx_metadata", "write_openvino_metadata", "write_tflite_metadata", "write_tflite_metadata_file",
]
