"""ONNX metadata: per-key `metadata_props` that generic tools read, beside edgecls' full ModelMeta JSON.

Keys (all values are strings, as ONNX requires):
  names      {"0": "cat", ...}   Ultralytics-style index -> name map (json.loads and ast.literal_eval both read it)
  labels     ["cat", ...]        the same labels as a JSON list, in output order
  imgsz      [h, w]              and input_size (same value, edgecls' name)
  layout NHWC, input_name pixels, output_name probabilities, color_order RGB, pixel_range 0..255
  mean / std "baked in" when normalisation is a layer inside the model (else the JSON values to apply)
  task classify, precision, batch, version (edgecls), date, author, license, description, source_run
  "model_info <key>"             OpenVINO Model API's keys, so `Model.create_model("model.onnx")` works too
  edgecls_meta                   the full ModelMeta JSON
Writing needs the `onnx` package (export side); reading is a pure-Python protobuf wire reader, so a
device with only onnxruntime (or nothing) reads a lone .onnx.
"""
from __future__ import annotations

import json
import mmap
from pathlib import Path
from typing import Any

from edgecls.errors import ModelError
from edgecls.meta import ModelMeta
from edgecls.metadata.common import (
    INPUT_NAME,
    LAYOUT,
    META_KEY,
    OUTPUT_NAME,
    TASK,
    ArtifactInfo,
    artifact_info,
    meta_from_json,
    meta_json,
)
from edgecls.metadata.openvino import model_info

MODEL_API_PREFIX = "model_info "  # Model API reads ONNX props "model_info <key>" like IR rt_info["model_info"][key]
_METADATA_PROPS, _KEY, _VALUE = 14, 1, 2  # onnx.proto: ModelProto.metadata_props, StringStringEntryProto.key/value
_FIX = "Export the artifact again with 'edgecls export'"


def onnx_metadata_props(meta: ModelMeta, info: ArtifactInfo | None = None, batch: str = "dynamic") -> dict[str, str]:
    """Every metadata_props entry edgecls writes (see the module docstring), key -> string value."""
    info = info or artifact_info(meta)
    height, width = meta.input_size
    baked = meta.normalization_baked_in
    props = {
        "description": info.description, "author": info.author, "version": info.version, "date": info.date,
        "license": info.license, "source_run": info.source_run, "task": TASK, "precision": meta.precision,
        "names": json.dumps({str(i): label for i, label in enumerate(meta.labels)}, ensure_ascii=False),
        "labels": json.dumps(meta.labels, ensure_ascii=False),
        "imgsz": json.dumps([height, width]), "input_size": json.dumps([height, width]), "batch": batch,
        "layout": LAYOUT, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "output": meta.output,
        "color_order": meta.color_order, "pixel_range": "0..255",
        "mean": "baked in" if baked else json.dumps(list(meta.mean)),
        "std": "baked in" if baked else json.dumps(list(meta.std)),
        "normalization": (f"baked in: mean {list(meta.mean)} / std {list(meta.std)} are applied inside the model; feed pixels 0..255"
                          if baked else f"apply (pixel - mean) / std with mean {list(meta.mean)}, std {list(meta.std)} before the model"),
    }
    props.update({MODEL_API_PREFIX + key: value for key, value in model_info(meta).items()})
    props[META_KEY] = meta_json(meta)
    return props


def write_onnx_metadata(proto: Any, meta: ModelMeta, info: ArtifactInfo | None = None) -> Any:
    """Set `proto.metadata_props` (an onnx.ModelProto, changed in place and returned); other tools' keys are kept."""
    graph = proto.graph
    constants = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]  # old IR versions list weights as inputs too
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelError(f"the ONNX graph has {len(inputs)} inputs and {len(graph.output)} outputs; a classifier has 1 and 1", _FIX)
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or [d.dim_value for d in dims[1:]] != [*meta.input_size, 3]:
        shape = [d.dim_value or d.dim_param for d in dims]
        raise ModelError(f"the ONNX input is {shape} but the meta says (batch, {meta.input_size[0]}, {meta.input_size[1]}, 3)",
                         "Export the model and its meta.json from the same run")
    out_dims = graph.output[0].type.tensor_type.shape.dim
    if not out_dims or (out_dims[-1].dim_value and out_dims[-1].dim_value != meta.num_classes):
        classes = out_dims[-1].dim_value if out_dims else "no"
        raise ModelError(f"the ONNX output has {classes} classes but the meta lists {meta.num_classes}",
                         "Export the model and its meta.json from the same run")
    batch = str(dims[0].dim_value) if dims[0].dim_value else "dynamic"
    props = onnx_metadata_props(meta, info, batch)
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    for key, value in [*kept, *props.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    if not proto.doc_string:
        proto.doc_string = props["description"]
    return proto


def read_onnx_props(source: str | Path | bytes) -> dict[str, str]:
    """ModelProto.metadata_props of a .onnx (path or bytes), read from the protobuf wire format; no onnx import."""
    if isinstance(source, (bytes, bytearray)):
        return _props(bytes(source), "the .onnx bytes")
    path = Path(source)
    try:
        with path.open("rb") as handle:
            if path.stat().st_size == 0:
                raise ModelError(f"'{path}' is empty", _FIX)
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _props(data, f"'{path}'")
    except OSError as exc:
        raise ModelError(f"cannot read '{path}': {exc.strerror or exc}", "Check the path") from exc


def read_onnx_meta(source: str | Path | bytes) -> ModelMeta | None:
    """The ModelMeta embedded in a .onnx; None when it carries none."""
    props = read_onnx_props(source)
    name = "the .onnx bytes" if isinstance(source, (bytes, bytearray)) else f"'{source}'"
    return None if META_KEY not in props else meta_from_json(props[META_KEY], name)


def _props(data: Any, name: str) -> dict[str, str]:
    try:
        found: dict[str, str] = {}
        for number, value in _fields(data, 0, len(data)):
            if number == _METADATA_PROPS and isinstance(value, tuple):
                entry = {n: bytes(data[v[0] : v[1]]).decode("utf-8") for n, v in _fields(data, *value) if isinstance(v, tuple)}
                found[entry.get(_KEY, "")] = entry.get(_VALUE, "")
        return found
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ModelError(f"{name} is not a readable ONNX model ({exc})", _FIX) from exc


def _varint(data: Any, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(data: Any, start: int, end: int) -> list[tuple[int, int | tuple[int, int]]]:
    """(field number, varint value or (start, end) of a length-delimited payload) of one message."""
    fields: list[tuple[int, int | tuple[int, int]]] = []
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos, end)
            fields.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise ValueError(f"field {number} runs past the end")
            fields.append((number, (pos, pos + length)))
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire} for field {number}")
    if pos != end:
        raise ValueError("truncated message")
    return fields
