"""Read every layer's output of a float model and of its INT8 artifact, per target, for the sensitivity report.

Each probe takes the export's cache (the float model the quantizer started from: TFLite's calibrated
model, ONNX's pre-processed graph, OpenVINO's converted model) and the int8 artifact, and returns the
graph's nodes plus a function mapping one uint8 image to {node id: (float output, int8 output)}, the
int8 output dequantized exactly as the runtime would see it (TFLite: the int8 tensor with its scale and
zero point; ONNX: the DequantizeLinear after the tensor; OpenVINO: the FakeQuantize after the op).

ONNX is read with graph optimizations off, so its QDQ graph is simulated in float: onnxruntime's fused
integer kernels, which validation runs, can be worse (u8s8 saturation on AVX2 CPUs without VNNI; see
export/onnx.py), and that shows in the judged agreement, not in this per-layer table.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import require
from edgecls.export.sensitivity import Node

Runner = Callable[[np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]
TFLITE_COMPUTE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL", "CONV_3D"}
ONNX_COMPUTE = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
OPENVINO_COMPUTE = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData", "GroupConvolutionBackpropData"}


def short_label(name: str) -> str:
    """A readable layer name out of a TF/tf2onnx tensor name ('a/b/conv2_1/convolution;...' -> 'conv2_1/convolution')."""
    parts = name.split(";")
    part = next((p for p in parts if any(k in p for k in ("convolution", "MatMul", "depthwise", "Conv2D"))), parts[0])
    return "/".join(part.removesuffix(":0").split("/")[-2:])


# ----------------------------------------------------------------------------- TFLite
def tflite_probe(cache: dict[str, Any], artifact: Path) -> tuple[list[Node], Runner]:
    from edgecls.export.tflite import CALIBRATED
    from edgecls.export.tflite_inspect import graph, open_interpreter

    calibrated = cache[CALIBRATED]
    fg, qg = graph(calibrated), graph(artifact)
    quantized = {qg["tensors"][t]["name"]: t for op in qg["ops"] for t in op["outputs"]}
    producer = {t: op for op in fg["ops"] for t in op["outputs"]}
    integer_output = qg["tensors"][qg["outputs"][0]]["dtype"] in ("int8", "uint8")
    nodes, pairs = [], {}
    for op in fg["ops"]:
        out = op["outputs"][0]
        name = fg["tensors"][out]["name"]
        inputs = [fg["tensors"][producer[t]["outputs"][0]]["name"] for t in op["inputs"] if t in producer]
        q = quantized.get(name)
        probed = q is not None and fg["tensors"][out]["dtype"] == "float32" and qg["tensors"][q]["quantization"] is not None
        if probed:
            pairs[name] = (out, q, qg["tensors"][q]["quantization"])
        fixed = integer_output and out in fg["outputs"]  # the artifact's own output type: --io, not the fallback, sets it
        nodes.append(Node(name, short_label(name), op["op"], inputs, op["op"] in TFLITE_COMPUTE, probed, fixed))
    reference = open_interpreter(calibrated, preserve_all_tensors=True)
    int8 = open_interpreter(artifact, preserve_all_tensors=True)
    for interpreter in (reference, int8):
        interpreter.allocate_tensors()

    def run(image: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        pixels = image[None].astype(np.float32)
        reference.set_tensor(reference.get_input_details()[0]["index"], pixels)
        reference.invoke()
        detail = int8.get_input_details()[0]
        x = pixels
        if detail["dtype"] != np.float32:
            scale, zero = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            x = np.clip(np.round(pixels / scale + zero), info.min, info.max).astype(detail["dtype"])
        int8.set_tensor(detail["index"], x)
        int8.invoke()
        found = {}
        for name, (f_index, q_index, quantization) in pairs.items():
            raw = int8.get_tensor(q_index).astype(np.float32)
            found[name] = (reference.get_tensor(f_index), (raw - quantization["zero_point"]) * quantization["scale"])
        return found

    return nodes, run


# ----------------------------------------------------------------------------- ONNX
def onnx_probe(cache: dict[str, Any], artifact: Path) -> tuple[list[Node], Runner]:
    from edgecls.export.base import INPUT_NAME
    from edgecls.export.onnx import PREPARED

    onnx = require("onnx", "export")
    ort = require("onnxruntime", "export")
    prepared, _ = cache[PREPARED]
    float_model = onnx.load_from_string(prepared)
    int8_model = onnx.load(str(artifact))
    graph = float_model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    in_int8 = {out for node in int8_model.graph.node for out in node.output}
    producer = {out: node.name for node in graph.node for out in node.output}
    nodes, pairs = [], {}
    twin: str | None
    for node in graph.node:
        tensor = node.output[0]
        dequantized = f"{tensor}_DequantizeLinear_Output"
        twin = dequantized if dequantized in in_int8 else tensor if tensor in in_int8 else None
        probed = twin is not None and types.get(tensor) == onnx.TensorProto.FLOAT
        if twin is not None and probed:
            pairs[node.name] = (tensor, twin)
        inputs = [producer[t] for t in node.input if t in producer]
        fixed = twin == tensor  # not quantized in the artifact (the float head): nothing to fall back
        nodes.append(Node(node.name, short_label(tensor), node.op_type, inputs, node.op_type in ONNX_COMPUTE, probed, fixed))

    def session(model: Any, names: list[str]) -> Any:
        present = {o.name for o in model.graph.output}
        model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names if n not in present)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # QDQ simulated, every tensor kept
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    keys = list(pairs)
    float_names, int8_names = [pairs[k][0] for k in keys], [pairs[k][1] for k in keys]
    reference, int8 = session(float_model, float_names), session(int8_model, int8_names)

    def run(image: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        feed = {INPUT_NAME: image[None].astype(np.float32)}
        floats, ints = reference.run(float_names, feed), int8.run(int8_names, feed)
        return {key: (f, q) for key, f, q in zip(keys, floats, ints)}

    return nodes, run


# ----------------------------------------------------------------------------- OpenVINO
def openvino_probe(cache: dict[str, Any], artifact: Path) -> tuple[list[Node], Runner]:
    from edgecls.export.openvino import FLOAT_MODEL
    from edgecls.openvino_import import import_openvino

    ov = import_openvino("export")
    float_model = cache[FLOAT_MODEL][0].clone()
    int8_model = ov.Core().read_model(str(artifact))
    for model in (float_model, int8_model):
        shape = model.input(0).get_partial_shape()
        shape[0] = 1
        model.reshape({model.input(0): shape})
    int8_ops = {op.get_friendly_name(): op for op in int8_model.get_ordered_ops()}
    constant: set[str] = set()
    nodes, float_ports, int8_ports = [], [], []
    for op in float_model.get_ordered_ops():
        name, kind = op.get_friendly_name(), op.get_type_name()
        sources = [port.get_source_output().get_node() for port in op.inputs()]
        if kind == "Constant" or (sources and all(s.get_friendly_name() in constant for s in sources)):
            constant.add(name)
            continue
        if kind in ("Parameter", "Result"):
            continue
        inputs = [s.get_friendly_name() for s in sources if s.get_friendly_name() not in constant and s.get_type_name() != "Parameter"]
        twin = int8_ops.get(f"{name}/fq_output_0") or int8_ops.get(name)
        probed = twin is not None and op.get_output_element_type(0) == ov.Type.f32
        if twin is not None and probed:
            float_ports.append(op.output(0))
            int8_ports.append(twin.output(0))
        label = f"{name} {op.get_output_partial_shape(0)}"
        nodes.append(Node(name, label, kind, inputs, kind in OPENVINO_COMPUTE, probed))
    keys = [node.id for node in nodes if node.probed]
    float_at, int8_at = _as_outputs(float_model, float_ports), _as_outputs(int8_model, int8_ports)
    core, config = ov.Core(), {"INFERENCE_PRECISION_HINT": "f32"}
    reference, int8 = core.compile_model(float_model, "CPU", config), core.compile_model(int8_model, "CPU", config)

    def run(image: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        pixels = image[None].astype(np.float32)
        floats, ints = reference(pixels), int8(pixels)
        return {key: (floats[reference.output(f)], ints[int8.output(q)]) for key, f, q in zip(keys, float_at, int8_at)}

    return nodes, run


def _as_outputs(model: Any, ports: list[Any]) -> list[int]:
    """Make `ports` model outputs; their positions in model.outputs (an op that already was an output is not added twice)."""
    model.add_outputs(ports)
    where = {}
    for position, output in enumerate(model.outputs):
        source = output.get_node().input_value(0)
        where[(source.get_node().get_friendly_name(), source.get_index())] = position
    return [where[(port.get_node().get_friendly_name(), port.get_index())] for port in ports]


PROBES: dict[str, Callable[[dict[str, Any], Path], tuple[list[Node], Runner]]] = {
    "tflite": tflite_probe, "edgetpu": tflite_probe, "onnx": onnx_probe, "openvino": openvino_probe,
}
