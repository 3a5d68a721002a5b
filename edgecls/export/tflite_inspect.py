"""What a .tflite file holds, read without TensorFlow (a Pi with ai-edge-litert and numpy is enough).

`metadata_entries` / `read_embedded_meta` read the flatbuffer directly; `graph` and `tensor_types` read
the ops in execution order and every tensor's dtype through an interpreter opened by the runtime's
loader (edgecls.runtime.litert) with no default delegates, so XNNPACK does not fold ops away.
Used by the TFLite writer (is it really integer?), the Edge TPU report and export validation.
"""
from __future__ import annotations

import importlib
import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ModelError
from edgecls.export.base import META_KEY
from edgecls.meta import Quantization

FLOAT_DTYPES = ("float16", "float32", "float64", "bfloat16")


def open_interpreter(model: str | Path | bytes, inspect_only: bool = True, preserve_all_tensors: bool = False) -> Any:
    """An interpreter for a .tflite path or its bytes from the runtime's loader; `inspect_only` skips default delegates,
    `preserve_all_tensors` keeps every intermediate tensor readable after invoke (the sensitivity report)."""
    from edgecls.runtime.litert import interpreter_api

    _, interpreter_cls, _ = interpreter_api()
    kwargs: dict[str, Any] = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    if inspect_only or preserve_all_tensors:
        resolver = importlib.import_module(interpreter_cls.__module__).OpResolverType
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        return interpreter_cls(**kwargs)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"LiteRT cannot load {'the converted model' if isinstance(model, bytes) else repr(str(model))}: {exc}",
                         "Re-export it with 'edgecls export'") from exc


def op_names(model: str | Path | bytes) -> set[str]:
    """The builtin op names a .tflite uses."""
    return {op["op_name"] for op in _ops(open_interpreter(model))}


def io_quantization(model: str | Path | bytes) -> tuple[Quantization | None, Quantization | None]:
    """(input, output) quantization of an integer-I/O model; None for float I/O."""
    interpreter = open_interpreter(model)
    return _quantization(interpreter.get_input_details()[0]), _quantization(interpreter.get_output_details()[0])


def _quantization(detail: dict[str, Any]) -> Quantization | None:
    dtype = np.dtype(detail["dtype"]).name
    if dtype not in ("int8", "uint8"):
        return None
    scale, zero_point = detail["quantization"]
    return Quantization(scale=float(scale), zero_point=int(zero_point), dtype=dtype)


def read_embedded_meta(path: str | Path, key: str = META_KEY) -> dict[str, Any] | None:
    """The JSON embedded under `key` in a .tflite file, or None if it has none. Pure Python, no TensorFlow."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read '{path}': {exc.strerror}", "Check the path") from exc
    try:
        raw = metadata_entries(data).get(key)
        return None if raw is None else json.loads(raw.decode("utf-8"))
    except (struct.error, IndexError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ModelError(f"'{path}' is not a readable TFLite file ({exc})", "Re-export it with 'edgecls export'") from exc


def metadata_entries(data: bytes) -> dict[str, bytes]:
    """name -> bytes of every Model.metadata entry, read straight from the flatbuffer (schema.fbs field order)."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("no TFL3 file identifier")

    def u32(pos: int) -> int:
        return struct.unpack_from("<I", data, pos)[0]

    def field(table: int, index: int) -> int | None:  # absolute position of field `index`, None when absent
        vtable = table - struct.unpack_from("<i", data, table)[0]
        entry = 4 + 2 * index
        if entry >= struct.unpack_from("<H", data, vtable)[0]:
            return None
        offset = struct.unpack_from("<H", data, vtable + entry)[0]
        return table + offset if offset else None

    def vector(pos: int | None) -> tuple[int, int]:  # (length, start of elements)
        if pos is None:
            return 0, 0
        start = pos + u32(pos)
        return u32(start), start + 4

    def table_at(start: int, i: int) -> int:
        return start + 4 * i + u32(start + 4 * i)

    root = u32(0)
    n_buffers, buffers = vector(field(root, 4))  # Model.buffers
    n_meta, metas = vector(field(root, 6))  # Model.metadata
    found: dict[str, bytes] = {}
    for i in range(n_meta):
        entry = table_at(metas, i)
        length, start = vector(field(entry, 0))  # Metadata.name
        name = data[start : start + length].decode("utf-8")
        index_pos = field(entry, 1)  # Metadata.buffer
        index = u32(index_pos) if index_pos is not None else 0
        if index >= n_buffers:
            raise IndexError(f"metadata '{name}' points at buffer {index} of {n_buffers}")
        buffer = table_at(buffers, index)
        length, start = vector(field(buffer, 0))  # Buffer.data
        if not length:  # large models keep buffers after the flatbuffer: Buffer.offset / Buffer.size
            offset_pos, size_pos = field(buffer, 1), field(buffer, 2)
            if offset_pos is not None and size_pos is not None:
                start, length = struct.unpack_from("<Q", data, offset_pos)[0], struct.unpack_from("<Q", data, size_pos)[0]
        found[name] = bytes(data[start : start + length])
    return found


def _ops(interpreter: Any) -> list[dict[str, Any]]:
    return [op for op in interpreter._get_ops_details() if op.get("op_name")]  # execution order


def graph(model: str | Path | bytes) -> dict[str, Any]:
    """Ops in execution order and every tensor they touch (dtype, shape, quantization, constant or not)."""
    interpreter = open_interpreter(model)
    ops = _ops(interpreter)
    inputs = [d["index"] for d in interpreter.get_input_details()]
    outputs = [d["index"] for d in interpreter.get_output_details()]
    produced = {int(t) for op in ops for t in op["outputs"]}
    used = sorted({int(t) for op in ops for t in [*op["inputs"], *op["outputs"]] if int(t) >= 0} | set(inputs) | set(outputs))
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    tensors = {}
    for index in used:
        detail = details[index] if index in details else interpreter._get_tensor_details(index, 0)
        scale, zero_point = detail["quantization"]
        tensors[index] = {
            "name": detail["name"], "dtype": np.dtype(detail["dtype"]).name,
            "shape": [int(d) for d in detail["shape"]], "shape_signature": [int(d) for d in detail["shape_signature"]],
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)} if scale else None,
            "constant": index not in produced and index not in inputs,
        }
    return {"ops": [{"index": int(op["index"]), "op": op["op_name"], "inputs": [int(t) for t in op["inputs"] if int(t) >= 0],
                     "outputs": [int(t) for t in op["outputs"]]} for op in ops],
            "tensors": tensors, "inputs": inputs, "outputs": outputs}


def tensor_types(path: str | Path | bytes) -> dict[str, Any]:
    """Proof of what a .tflite computes in: I/O dtypes and quantization, op counts, dtypes of every op tensor.

    `float_ops` lists ops with a float tensor, except a QUANTIZE reading a float model input and a
    DEQUANTIZE writing a float model output (the allowed float I/O of an INT8 model). An INT8 file
    is integer exactly when `float_ops` is empty.
    """
    g = graph(path)
    tensors = g["tensors"]
    float_ops = []
    for op in g["ops"]:
        floats = [t for t in [*op["inputs"], *op["outputs"]] if tensors[t]["dtype"] in FLOAT_DTYPES]
        if op["op"] == "QUANTIZE" and set(op["inputs"]) <= set(g["inputs"]):
            floats = [t for t in floats if t not in g["inputs"]]
        if op["op"] == "DEQUANTIZE" and set(op["outputs"]) <= set(g["outputs"]):
            floats = [t for t in floats if t not in g["outputs"]]
        if floats:
            names = ", ".join(f"'{tensors[t]['name']}' {tensors[t]['dtype']}" for t in floats[:3])
            float_ops.append(f"#{op['index']} {op['op']} ({names})")
    dtypes = Counter(t["dtype"] for t in tensors.values())

    def io(index: int) -> dict[str, Any]:
        t = tensors[index]
        return {"name": t["name"], "dtype": t["dtype"], "shape": t["shape"], "quantization": t["quantization"]}

    return {
        "input": io(g["inputs"][0]), "output": io(g["outputs"][0]),
        "inputs": [io(i) for i in g["inputs"]], "outputs": [io(i) for i in g["outputs"]],
        "ops": dict(Counter(op["op"] for op in g["ops"])), "op_count": len(g["ops"]),
        "tensor_dtypes": dict(dtypes),
        "float_tensors": sum(dtypes[d] for d in FLOAT_DTYPES), "int8_tensors": dtypes["int8"] + dtypes["uint8"],
        "float_ops": float_ops, "integer": not float_ops,
        "static_shapes": all(-1 not in t["shape_signature"] for t in tensors.values()),
    }

