"""ONNX export: fp32 through tf2onnx, int8 through onnxruntime static QDQ quantization.

The graph takes float32 "pixels" (batch, h, w, 3) in 0..255 and returns float32 "probabilities";
the batch dimension is dynamic. The ModelMeta JSON is embedded in metadata_props["edgecls_meta"].
Also holds the checks and the traced tf.function that the OpenVINO writer shares.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, ExportError, ModelError, require
from edgecls.export.base import Artifact, ExportRequest
from edgecls.meta import ModelMeta

INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
META_KEY = "edgecls_meta"
ONNX_PRECISIONS = ("fp32", "int8")
MIN_CALIBRATION = 10
OPSET_RANGE = (13, 18)  # 13: per-channel QDQ; 18: newest opset tf2onnx 1.17 emits
CALIBRATION_BATCH = 8
HEAD_OPS = ("MatMul", "Gemm")
# Ops allowed between the classifier's Dense and the graph output (bias add, softmax, reshapes).
TAIL_OPS = ("Softmax", "Add", "Reshape", "Identity", "Flatten", "Squeeze", "Cast")


# ---------------------------------------------------------------- shared with openvino.py
def check_precision(request: ExportRequest, allowed: tuple[str, ...], fmt: str) -> None:
    if request.precision not in allowed:
        raise ConfigError(
            f"{fmt} supports {' and '.join(allowed)} (got precision '{request.precision}')",
            f"Use one of: {', '.join(allowed)}",
        )


def input_size(request: ExportRequest) -> tuple[int, int]:
    """(h, w) from the meta, checked against the Keras model's input shape."""
    height, width = (int(v) for v in request.meta.input_size)
    shape = tuple(request.model.input_shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ModelError(f"model input shape {shape} is not (batch, h, w, 3)", "Export a classifier built by edgecls")
    if any(got is not None and got != want for got, want in zip(shape[1:3], (height, width))):
        raise ModelError(
            f"model input is {shape[1]}x{shape[2]} but meta.json says {height}x{width}",
            "Export the run folder's own model and meta.json together",
        )
    return height, width


def check_images(images: Any, size: tuple[int, int], what: str) -> np.ndarray:
    """uint8 (N, h, w, 3) resized RGB pixels, or ConfigError naming what is wrong."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        kind = getattr(images, "dtype", type(images).__name__)
        raise ConfigError(f"{what} must be a uint8 numpy array, got {kind}", "Load images with edgecls' preprocessing")
    if images.ndim != 4 or images.shape[1:] != (*size, 3):
        raise ConfigError(
            f"{what} has shape {images.shape}, expected (N, {size[0]}, {size[1]}, 3)",
            "Resize images to the model's input size",
        )
    return images


def check_calibration(request: ExportRequest, size: tuple[int, int], fmt: str) -> np.ndarray:
    hint = f"Pass at least {MIN_CALIBRATION} calibration images (100-300 training images work well)"
    if request.calibration is None:
        raise ConfigError(f"int8 {fmt} export needs calibration images, none were given", hint)
    images = check_images(request.calibration, size, "calibration images")
    if len(images) < MIN_CALIBRATION:
        raise ConfigError(f"int8 {fmt} export got {len(images)} calibration images, fewer than {MIN_CALIBRATION}", hint)
    return images


def serving_function(model: Any, size: tuple[int, int]) -> Any:
    """The Keras model as a tf.function: "pixels" (None, h, w, 3) -> {"probabilities": ...}."""
    tf = require("tensorflow", "train")
    spec = tf.TensorSpec([None, *size, 3], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(pixels: Any) -> dict[str, Any]:
        return {OUTPUT_NAME: tf.cast(model(pixels, training=False), tf.float32)}

    return serve


def artifact_meta(meta: ModelMeta, fmt: str, precision: str) -> ModelMeta:
    """The meta as it describes an artifact: float in, float out (QDQ / FakeQuantize are internal)."""
    return dataclasses.replace(meta, format=fmt, precision=precision, input_quantization=None, output_quantization=None)


def work_dir(out_dir: Path) -> Path:
    """A scratch folder inside out_dir (writers write nowhere else); the caller removes it."""
    return Path(tempfile.mkdtemp(prefix=".work-", dir=out_dir))


# ---------------------------------------------------------------- onnx
def export_onnx(request: ExportRequest) -> Artifact:
    """Write out_dir/<stem>.onnx at request.precision ("fp32" or "int8")."""
    check_precision(request, ONNX_PRECISIONS, "onnx")
    size = input_size(request)
    low, high = OPSET_RANGE
    if not low <= request.opset <= high:
        raise ConfigError(f"onnx opset {request.opset} is outside {low}..{high}", "Use --opset 17")
    calibration = check_calibration(request, size, "onnx") if request.precision == "int8" else None
    onnx = require("onnx", "export")

    start = time.perf_counter()
    proto, notes = convert_fp32(request.model, size, request.opset)
    path = Path(request.out_dir) / f"{request.stem}.onnx"
    if calibration is not None:
        scratch = work_dir(Path(request.out_dir))
        try:
            notes.update(quantize_int8(proto, calibration, scratch, path))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        proto = onnx.load(str(path))
        if request.max_drop is not None:
            notes["max_drop"] = "ignored: onnx int8 has no accuracy-controlled mode (openvino has)"
    meta = artifact_meta(request.meta, "onnx", request.precision)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta.to_dict())
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the {request.precision} ONNX graph is invalid: {str(exc).splitlines()[0]}", "Report this with the model architecture") from exc
    onnx.save(proto, str(path))
    notes["export_seconds"] = round(time.perf_counter() - start, 2)
    return Artifact(path=path, format="onnx", precision=request.precision, notes=notes)


def convert_fp32(model: Any, size: tuple[int, int], opset: int) -> tuple[Any, dict[str, Any]]:
    """tf2onnx from_function on the traced model (works with Keras 3, no Keras-specific path)."""
    tf = require("tensorflow", "train")
    tf2onnx = require("tf2onnx", "export")
    serve = serving_function(model, size)
    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=opset)
    except Exception as exc:  # tf2onnx raises bare ValueError/KeyError/etc. for unsupported graphs
        raise ExportError(f"tf2onnx could not convert the model: {type(exc).__name__}: {exc}", "Try another --opset or report the architecture") from exc
    names = ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise ExportError(f"tf2onnx produced inputs/outputs {names}, expected (['{INPUT_NAME}'], ['{OUTPUT_NAME}'])", "Report this")
    for value in (proto.graph.input[0], proto.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"  # tf2onnx names it unk__N
    proto.graph.name = f"{model.name}_onnx"
    proto.producer_name = "edgecls"
    notes = {"converter": f"tf2onnx {tf2onnx.__version__} convert.from_function (TF {tf.__version__})", "opset": opset, "batch": "dynamic"}
    return proto, notes


def head_nodes(graph: Any) -> list[str]:
    """Names of the final Dense (MatMul/Gemm) and the nodes after it, walking back from the output."""
    producers = {out: node for node in graph.node for out in node.output}
    constants = {init.name for init in graph.initializer}
    found: list[str] = []
    walked: list[str] = []
    tensor = graph.output[0].name
    while tensor in producers:
        node = producers[tensor]
        found.append(node.name)
        walked.append(node.op_type)
        if node.op_type in HEAD_OPS:
            return found
        if node.op_type not in TAIL_OPS:
            break
        data = [t for t in node.input if t in producers and t not in constants]
        if len(data) != 1:
            break
        tensor = data[0]
    raise ExportError(
        f"no MatMul/Gemm found before the ONNX output (walked back through {walked or 'nothing'})",
        "int8 ONNX export expects a Dense classifier head as the last layer",
    )


def _reader(images: np.ndarray) -> Any:
    """A CalibrationDataReader yielding float32 batches of the uint8 images."""
    quantization = require("onnxruntime.quantization", "export")

    class ImageReader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = (
                images[i : i + CALIBRATION_BATCH].astype(np.float32) for i in range(0, len(images), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    return ImageReader()


def quantize_int8(proto: Any, calibration: np.ndarray, scratch: Path, out_path: Path) -> dict[str, Any]:
    """Static QDQ int8: per-channel int8 weights, uint8 activations, float final Dense + softmax."""
    onnx = require("onnx", "export")
    quantization = require("onnxruntime.quantization", "export")
    fp32_path, prep_path = scratch / "fp32.onnx", scratch / "prep.onnx"
    onnx.save(proto, str(fp32_path))
    # Folds BatchNorm-style Mul/Add into Conv before calibration: without it Lite0 top-1 agreement
    # fell from ~0.92 to ~0.70 on our checks. Symbolic shape inference needs sympy; ONNX's suffices.
    quantization.quant_pre_process(str(fp32_path), str(prep_path), skip_symbolic_shape=True)
    excluded = head_nodes(onnx.load(str(prep_path)).graph)  # quantized softmax output ties argmax
    quantization.quantize_static(
        str(prep_path),
        str(out_path),
        _reader(calibration),
        quant_format=quantization.QuantFormat.QDQ,
        per_channel=True,
        # uint8 activations: same top-1 agreement as int8 in our checks, and u8 x s8 is the native
        # x86 VNNI/AVX2 kernel in onnxruntime's MLAS (Lite0 224 px, 2 threads: p50 18.5 ms vs 21.6 ms).
        activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8,
        nodes_to_exclude=excluded,
        calibrate_method=quantization.CalibrationMethod.MinMax,
        # No CalibMaxIntermediateOutputs: in onnxruntime 1.31 it discards the batches it flushes.
        # MinMax keeps only per-batch ReduceMin/ReduceMax outputs, so memory stays small anyway.
    )
    quantized = onnx.load(str(out_path))
    count = sum(node.op_type == "QuantizeLinear" for node in quantized.graph.node)
    if count == 0:
        raise ExportError("onnxruntime produced no QuantizeLinear nodes: the int8 model is not quantized", "Report the architecture")
    return {
        "quantizer": "onnxruntime.quantization.quantize_static (QDQ, MinMax)",
        "pre_process": "quant_pre_process (ONNX shape inference + optimisation)",
        "weights": "int8 per-channel, symmetric",
        "activations": "uint8 asymmetric",
        "calibration_images": int(len(calibration)),
        "float_nodes": excluded,
        "quantize_linear_nodes": count,
    }
