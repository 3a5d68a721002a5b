"""TFLite writer: fp32 / fp16 / dynamic / full-integer INT8 at a static batch of 1, no metadata yet.

Conversion path (Keras 3.15, TF 2.21): a `tf.function` with a [1, h, w, 3] input signature, converted
with `TFLiteConverter.from_concrete_functions([fn], holder)` where `holder` is a `tf.Module` that
tracks the model's underlying `tf.Variable`s. Passing the Keras 3 model itself as the trackable
object leaves the weights unfrozen (VAR_HANDLE / READ_VARIABLE ops, no weights in the file), so the
converted graph is checked for such ops. TF Select is never enabled.

INT8 runs in two steps, as the converter does inside: calibration (`_experimental_calibrate_only`: a
float model carrying the activation ranges) and the MLIR quantizer (`convert.mlir_quantize`, the
QuantizationDebugger's own path). The calibrated model is kept in `request.cache`: it is the float
reference of the sensitivity report, and the int8 fallback re-quantizes it with `denylisted_nodes`
(layers kept float, by output tensor name) without calibrating again. Only nodes named in
`request.float_nodes` may stay float; any other float op is refused.

The metadata (TFLITE_METADATA, labels.txt, edgecls_meta) is written by export's post-processing through
edgecls.metadata (artifact_metadata.embed_metadata), for every judged file alike.
Reading a .tflite back (embedded meta, op list, is it integer?) needs no TensorFlow: tflite_inspect.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ExportError, ModelError
from edgecls.export.base import INPUT_NAME, Artifact, ExportRequest, input_size
from edgecls.export.formats import FORMATS, IO_TYPES, check_request
from edgecls.export.tflite_inspect import graph, io_quantization, op_names, open_interpreter, tensor_types
from edgecls.quantize.calibration import check_calibration

CONVERSION_PATH = "tf.function([1,h,w,3]) -> TFLiteConverter.from_concrete_functions(tf.Module tracking tf.Variables)"
UNFROZEN_OPS = {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"}
EDGE_OPS = {"QUANTIZE", "DEQUANTIZE"}
CALIBRATION_SEED = 0
CALIBRATED = "tflite_calibrated"  # request.cache key: the calibrated float model (bytes)


# ----------------------------------------------------------------------------- export
def export_tflite(request: ExportRequest) -> Artifact:
    """Convert `request.model` to `out_dir/<stem>.tflite` at `request.precision` (metadata: export's post-processing)."""
    check_request(FORMATS["tflite"], request)
    size = input_size(request)
    if request.precision == "int8":
        cache = request.cache if request.cache is not None else {}
        if CALIBRATED not in cache:
            cache[CALIBRATED] = calibrate(request.model, size, request.calibration)
        content = quantize_calibrated(cache[CALIBRATED], request.io_type, request.float_nodes)
    else:
        content = convert(request.model, size, request.precision)
    path = Path(request.out_dir) / f"{request.stem}.tflite"
    input_q, output_q = io_quantization(content)
    path.write_bytes(content)
    try:
        types = _verify_file(path, request)
    except Exception:
        path.unlink(missing_ok=True)  # never leave a file that looks like a valid export
        raise
    notes = {
        "conversion": CONVERSION_PATH, "batch": 1, "io_type": request.io_type if request.precision == "int8" else "float",
        "ops": types["ops"], "tensor_dtypes": types["tensor_dtypes"], "float_ops": types["float_ops"],
    }
    if request.precision == "int8":
        notes["calibration_images"] = len(request.calibration)  # type: ignore[arg-type]
        notes["quantizer"] = "TFLite MLIR quantizer (calibrate, then convert.mlir_quantize)"
    if request.float_nodes:
        notes["fallback_float_nodes"] = list(request.float_nodes)
    return Artifact(path=path, format="tflite", precision=request.precision,
                    input_quantization=input_q, output_quantization=output_q, notes=notes)


def convert(model: Any, size: tuple[int, int], precision: str, calibration: np.ndarray | None = None,
            io_type: str = "uint8") -> bytes:
    """The TFLite flatbuffer of `model` at batch 1 (no metadata added)."""
    if precision == "int8":
        return quantize_calibrated(calibrate(model, size, calibration), io_type)
    return _convert(model, size, precision)


def calibrate(model: Any, size: tuple[int, int], calibration: np.ndarray | None) -> bytes:
    """The float TFLite model of `model` carrying the activation ranges seen on `calibration` (not yet quantized)."""
    check_calibration(calibration, size, "tflite")
    return _convert(model, size, "int8", calibration)


def quantize_calibrated(calibrated: bytes, io_type: str = "uint8", float_nodes: tuple[str, ...] | list[str] = ()) -> bytes:
    """Full-integer INT8 of a calibrated model with `io_type` I/O; `float_nodes` (op output tensor names) stay float."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as lite_convert

    io = dict(zip(IO_TYPES, (tf.uint8, tf.int8, tf.float32)))[io_type]
    try:
        return bytes(lite_convert.mlir_quantize(calibrated, False, input_data_type=io, output_data_type=io,
                                                denylisted_nodes=list(float_nodes) or None))
    except Exception as exc:  # the quantizer raises ConverterError / RuntimeError with MLIR call sites
        raise ExportError(_conversion_failure("int8", exc), _conversion_hint("int8")) from exc


def _convert(model: Any, size: tuple[int, int], precision: str, calibration: np.ndarray | None = None) -> bytes:
    """fp32 / fp16 / dynamic flatbuffers; for "int8" the calibrated float model (quantize_calibrated finishes it)."""
    import tensorflow as tf

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
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(calibration)  # type: ignore[arg-type]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter._experimental_calibrate_only = True  # the quantization itself: quantize_calibrated
    try:
        content = bytes(converter.convert())
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError...
        raise ExportError(_conversion_failure(precision, exc), _conversion_hint(precision)) from exc
    ops = op_names(content)
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


def _verify_file(path: Path, request: ExportRequest) -> dict[str, Any]:
    """Load and run the written file in LiteRT; prove INT8 is integer with the requested I/O types."""
    types = tensor_types(path)
    try:
        interpreter = open_interpreter(path, inspect_only=False)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
        interpreter.invoke()
        out = interpreter.get_output_details()[0]
        probabilities = interpreter.get_tensor(out["index"])
    except (RuntimeError, ValueError, ModelError) as exc:
        raise ExportError(f"'{path.name}' does not run in LiteRT: {exc}",
                          "Report this with your TensorFlow and ai-edge-litert versions") from exc
    classes = request.meta.num_classes
    if tuple(probabilities.shape) != (1, classes) or tuple(detail["shape"]) != (1, *request.meta.input_size, 3):
        raise ExportError(f"'{path.name}' maps {tuple(detail['shape'])} -> {tuple(probabilities.shape)}, "
                          f"expected batch 1 and {classes} classes",
                          "Check the model against its meta.json")
    if request.precision != "int8":
        return types
    expected = dict(zip(IO_TYPES, ("uint8", "int8", "float32")))[request.io_type]
    wrong = [f"{side} is {types[side]['dtype']}" for side in ("input", "output") if types[side]["dtype"] != expected]
    if wrong:
        raise ExportError(f"int8 '{path.name}' should have {expected} I/O but its {' and '.join(wrong)}",
                          "Report this with your TensorFlow version")
    culprits = unexpected_float_ops(path, request.float_nodes)
    if culprits:  # e.g. SIN: TF 2.21 keeps it float between DEQUANTIZE/QUANTIZE even with TFLITE_BUILTINS_INT8 only
        named = ", ".join(f"{entry.split()[1]} ({entry.split()[0]})" for entry in culprits[:5])
        raise ExportError(
            f"int8 '{path.name}' is not fully integer: op {named} stayed float "
            f"({len(types['float_ops'])} ops touch float tensors: {'; '.join(types['float_ops'][:4])})",
            "Replace that op with one that has an int8 TFLite kernel, or export --precision fp16/dynamic for a float model",
        )
    return types


def unexpected_float_ops(path: str | Path | bytes, float_nodes: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Float ops of an INT8 file that nobody asked for: not a kept-float node nor a QUANTIZE/DEQUANTIZE around one.

    Entries as in tensor_types' float_ops ("#7 CONV_2D ('name' float32)"), the op to blame first; empty when integer."""
    entries = tensor_types(path)["float_ops"]
    if entries and float_nodes:
        g, kept = graph(path), set(float_nodes)
        ops = {op["index"]: op for op in g["ops"]}

        def asked(entry: str) -> bool:  # the quantizer renames a kept op's float output NAME to NAME1 when it re-quantizes it
            op = ops[int(entry.split()[0][1:])]
            names = [g["tensors"][t]["name"] for t in op["outputs"]]
            return op["op"] in EDGE_OPS or any(n in kept or (n.endswith("1") and n[:-1] in kept) for n in names)

        entries = [entry for entry in entries if not asked(entry)]
    return [entry for entry in entries if entry.split()[1] not in EDGE_OPS] or entries
