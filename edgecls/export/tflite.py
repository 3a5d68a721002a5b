"""TFLite writer: fp32 / fp16 / dynamic / full-integer INT8 at a static batch of 1, meta embedded.

Conversion path (Keras 3.15, TF 2.21): a `tf.function` with a [1, h, w, 3] input signature, converted
with `TFLiteConverter.from_concrete_functions([fn], holder)` where `holder` is a `tf.Module` that
tracks the model's underlying `tf.Variable`s. Passing the Keras 3 model itself as the trackable
object leaves the weights unfrozen (VAR_HANDLE / READ_VARIABLE ops, no weights in the file), so the
converted graph is checked for such ops. INT8 never falls back to float and never enables TF Select.

`read_embedded_meta` and `tensor_types` need no TensorFlow (a Pi with ai-edge-litert and numpy).
"""
from __future__ import annotations

import json
import re
import struct
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, ExportError, MissingDependencyError, ModelError
from edgecls.export.base import PRECISIONS, Artifact, ExportRequest
from edgecls.meta import Quantization

META_KEY = "edgecls_meta"  # name of the TFLite metadata entry holding ModelMeta as UTF-8 JSON
IO_TYPES = ("uint8", "int8", "float")
INPUT_NAME = "pixels"
CONVERSION_PATH = "tf.function([1,h,w,3]) -> TFLiteConverter.from_concrete_functions(tf.Module tracking tf.Variables)"
UNFROZEN_OPS = {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"}
EDGE_OPS = {"QUANTIZE", "DEQUANTIZE"}
FLOAT_DTYPES = ("float16", "float32", "float64", "bfloat16")
CALIBRATION_SEED = 0


# ----------------------------------------------------------------------------- export
def export_tflite(request: ExportRequest) -> Artifact:
    """Convert `request.model` to `out_dir/<stem>.tflite` at `request.precision`, meta embedded."""
    size = _check_request(request)
    content = convert(request.model, size, request.precision, request.calibration, request.io_type)
    path = Path(request.out_dir) / f"{request.stem}.tflite"
    input_q, output_q = io_quantization(content)
    meta = {
        **request.meta.to_dict(), "format": "tflite", "precision": request.precision,
        "input_quantization": asdict(input_q) if input_q else None,
        "output_quantization": asdict(output_q) if output_q else None,
    }
    path.write_bytes(embed_meta(content, meta))
    try:
        types = _verify_file(path, request)
    except Exception:
        path.unlink(missing_ok=True)  # never leave a file that looks like a valid export
        raise
    notes = {
        "conversion": CONVERSION_PATH, "batch": 1, "io_type": request.io_type if request.precision == "int8" else "float",
        "ops": types["ops"], "tensor_dtypes": types["tensor_dtypes"], "float_ops": types["float_ops"],
        "embedded_meta": META_KEY,
    }
    if request.precision == "int8":
        notes["calibration_images"] = len(request.calibration)  # type: ignore[arg-type]
    return Artifact(path=path, format="tflite", precision=request.precision,
                    input_quantization=input_q, output_quantization=output_q, notes=notes)


def _check_request(request: ExportRequest) -> tuple[int, int]:
    """The (height, width) to convert at; ConfigError for anything that cannot work."""
    if request.precision not in PRECISIONS:
        raise ConfigError(f"unknown tflite precision '{request.precision}'", f"Use one of {', '.join(PRECISIONS)}")
    if request.io_type not in IO_TYPES:
        raise ConfigError(f"io type '{request.io_type}' is not one of {', '.join(IO_TYPES)}", "Use --io uint8 (default), int8 or float")
    shape = tuple(request.model.input_shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ConfigError(f"model input shape {shape} is not (batch, h, w, 3)", "Export a classifier built by edgecls")
    height, width = (int(d) if d else m for d, m in zip(shape[1:3], request.meta.input_size))
    if (height, width) != tuple(request.meta.input_size):
        raise ConfigError(f"model input {height}x{width} differs from meta input_size {request.meta.input_size}", "Re-create meta.json for this model")
    if request.precision == "int8":
        check_calibration(request.calibration, (height, width))
    return height, width


def check_calibration(images: np.ndarray | None, size: tuple[int, int]) -> None:
    """INT8 needs at least MIN_CALIBRATION_IMAGES uint8 (N, h, w, 3) images at the model's size."""
    from edgecls.quantize.calibration import MIN_CALIBRATION_IMAGES

    if images is None:
        raise ConfigError("int8 export needs calibration images, got none", "Pass --calib DIR or export from a run folder with training images")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (*size, 3):
        got = f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
        raise ConfigError(f"calibration images must be uint8 (N, {size[0]}, {size[1]}, 3), got {got}", "Resize them with edgecls.quantize.calibration")
    if len(images) < MIN_CALIBRATION_IMAGES:
        raise ConfigError(f"{len(images)} calibration images is below the minimum of {MIN_CALIBRATION_IMAGES}",
                          "Use --calib-size 300 (the default) or a --calib folder with more images")


def convert(model: Any, size: tuple[int, int], precision: str, calibration: np.ndarray | None = None,
            io_type: str = "uint8") -> bytes:
    """The TFLite flatbuffer of `model` at batch 1 (no metadata added)."""
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise ConfigError(f"unknown tflite precision '{precision}'", f"Use one of {', '.join(PRECISIONS)}")
    if precision == "int8":
        check_calibration(calibration, size)
    spec = tf.TensorSpec([1, *size, 3], tf.float32, name=INPUT_NAME)
    serve = tf.function(lambda pixels: model(pixels, training=False), input_signature=[spec])
    holder = tf.Module()
    holder.model_variables = [getattr(v, "value", v) for v in model.variables]  # the tf.Variables: frozen as constants
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # never SELECT_TF_OPS
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision == "int8":
        io = {"uint8": tf.uint8, "int8": tf.int8, "float": tf.float32}[io_type]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(calibration)  # type: ignore[arg-type]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = io
        converter.inference_output_type = io
    try:
        content = bytes(converter.convert())
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError...
        raise ExportError(_conversion_failure(precision, exc), _conversion_hint(precision)) from exc
    ops = {op["op_name"] for op in _ops(_interpreter(content))}
    if ops & UNFROZEN_OPS:
        raise ExportError(f"the {precision} TFLite graph kept its weights as variables ({', '.join(sorted(ops & UNFROZEN_OPS))})",
                          "Report this with your TensorFlow/Keras versions; the file would not hold the weights")
    return content


def representative_dataset(images: np.ndarray) -> Any:
    """Calibration generator: each uint8 image as float32 pixels 0..255, batch 1, in a seeded order."""
    order = np.random.default_rng(CALIBRATION_SEED).permutation(len(images))

    def generate() -> Any:
        for index in order:
            yield [images[index : index + 1].astype(np.float32)]

    return generate


def _conversion_failure(precision: str, exc: Exception) -> str:
    """One line naming the op the converter choked on (its messages carry long MLIR call-site chains)."""
    text = str(exc)
    names = set(re.findall(r"'tfl?\.(\w+)' op", text))
    for found in re.finditer(r"TF Select ops: ([\w, ]+)", text):
        names.update(name.strip() for name in found.group(1).split(",") if name.strip())
    errors = [line.split("error:", 1)[1].strip() for line in text.splitlines() if "error:" in line]
    summary = errors[0] if errors else " ".join(text.split())
    where = f" at op {', '.join(sorted(names))}" if names else ""
    return f"TFLite {precision} conversion failed{where}: {summary[:300]}"


def _conversion_hint(precision: str) -> str:
    if precision == "int8":
        return ("Full-integer INT8 cannot keep float ops and TF Select ops are never enabled: replace the op named above "
                "with a TFLite builtin that has an int8 kernel, or export --precision fp16/dynamic for a float model")
    return "Replace the op named above with a TFLite builtin (TF Select ops are never enabled)"


def io_quantization(content: bytes) -> tuple[Quantization | None, Quantization | None]:
    """(input, output) quantization of an integer-I/O model; None for float I/O."""
    interpreter = _interpreter(content)
    return _quantization(interpreter.get_input_details()[0]), _quantization(interpreter.get_output_details()[0])


def _quantization(detail: dict[str, Any]) -> Quantization | None:
    dtype = np.dtype(detail["dtype"]).name
    if dtype not in ("int8", "uint8"):
        return None
    scale, zero_point = detail["quantization"]
    return Quantization(scale=float(scale), zero_point=int(zero_point), dtype=dtype)


def _verify_file(path: Path, request: ExportRequest) -> dict[str, Any]:
    """Load and run the written file in LiteRT; prove INT8 is integer with the requested I/O types."""
    types = tensor_types(path)
    try:
        interpreter = load_interpreter(path)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
        interpreter.invoke()
        out = interpreter.get_output_details()[0]
        probabilities = interpreter.get_tensor(out["index"])
    except (RuntimeError, ValueError, ModelError) as exc:
        raise ExportError(f"'{path.name}' does not run in LiteRT: {exc}", "Report this with your TensorFlow and ai-edge-litert versions") from exc
    classes = request.meta.num_classes
    if tuple(probabilities.shape) != (1, classes) or tuple(detail["shape"]) != (1, *request.meta.input_size, 3):
        raise ExportError(f"'{path.name}' maps {tuple(detail['shape'])} -> {tuple(probabilities.shape)}, expected batch 1 and {classes} classes",
                          "Check the model against its meta.json")
    if request.precision != "int8":
        return types
    expected = {"uint8": "uint8", "int8": "int8", "float": "float32"}[request.io_type]
    wrong = [f"{side} is {types[side]['dtype']}" for side in ("input", "output") if types[side]["dtype"] != expected]
    if wrong:
        raise ExportError(f"int8 '{path.name}' should have {expected} I/O but its {' and '.join(wrong)}", "Report this with your TensorFlow version")
    if types["float_ops"]:
        culprits = [entry for entry in types["float_ops"] if entry.split()[1] not in EDGE_OPS] or types["float_ops"]
        named = ", ".join(f"{entry.split()[1]} ({entry.split()[0]})" for entry in culprits[:5])
        raise ExportError(
            f"int8 '{path.name}' is not fully integer: op {named} stayed float "
            f"({len(types['float_ops'])} ops touch float tensors: {'; '.join(types['float_ops'][:4])})",
            "Replace that op with one that has an int8 TFLite kernel, or export --precision fp16/dynamic for a float model",
        )
    return types


# ----------------------------------------------------------------------------- metadata
def embed_meta(content: bytes, meta: dict[str, Any], key: str = META_KEY) -> bytes:
    """`content` with a Model.metadata entry `key` whose buffer is `meta` as UTF-8 JSON (replacing any old one)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    model.metadata = [m for m in (model.metadata or []) if _name(m.name) != key]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = key
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _name(name: str | bytes | None) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else (name or "")


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


# ----------------------------------------------------------------------------- inspection (no TensorFlow)
def load_interpreter(model: str | Path | bytes, inspect_only: bool = False) -> Any:
    """A LiteRT interpreter (ai-edge-litert, else tflite-runtime); `inspect_only` skips default delegates."""
    try:
        from ai_edge_litert import interpreter as litert
    except ImportError:
        try:
            from tflite_runtime import interpreter as litert  # type: ignore[no-redef]
        except ImportError:
            raise MissingDependencyError("ai_edge_litert", "pi") from None
    kwargs: dict[str, Any] = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    if inspect_only:
        kwargs["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        return litert.Interpreter(**kwargs)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"LiteRT cannot load {'the converted model' if isinstance(model, bytes) else repr(str(model))}: {exc}",
                         "Re-export it with 'edgecls export'") from exc


def _interpreter(content: bytes) -> Any:
    return load_interpreter(content, inspect_only=True)


def _ops(interpreter: Any) -> list[dict[str, Any]]:
    return [op for op in interpreter._get_ops_details() if op.get("op_name")]  # execution order


def graph(model: str | Path | bytes) -> dict[str, Any]:
    """Ops in execution order and every tensor they touch (dtype, shape, quantization, constant or not)."""
    interpreter = load_interpreter(model, inspect_only=True)
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

