"""Edge TPU (Coral) export: a full-integer, batch-1, uint8-I/O TFLite file plus a compatibility report.

The report walks the ops in execution order against Coral's supported-op table
(https://coral.ai/docs/edgetpu/models-intro/#supported-operations, encoded below), checks 8-bit
tensors, static shapes and the <=3 non-unit dimensions rule, and says where the first unsupported op
cuts the graph: the compiler maps one TPU segment from the start, and every op from the first
unsupported one on runs on the CPU. When `edgetpu_compiler` is on PATH (x86-64 Debian only) it is
run and its log parsed; otherwise the report gives the exact command.

The report weighs the cut by compute: multiply-accumulates per op from the flatbuffer's static shapes
(MAC_METHOD). The export gates on it: when less than MIN_TPU_MAC_SHARE of the MACs would run on the
Edge TPU (MobileNetV3's HARD_SWISH cuts the graph at op 4), it fails naming the share, the first
unsupported op and the fix, unless the request allows CPU ops (`--allow-cpu-ops`).

Files in out_dir: `<stem>.tflite` (INT8, runs on any CPU, the compiler's input) and, when compiled,
`<stem>_edgetpu.tflite` + `<stem>_edgetpu.log` (Coral's own naming: X.tflite / X_edgetpu.tflite).
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgecls.errors import ExportError
from edgecls.export.base import Artifact, ExportRequest
from edgecls.export.formats import FORMATS, check_request
from edgecls.export.tflite_inspect import graph

SOURCE = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"
COMPILER = "edgetpu_compiler"
COMPILER_TIMEOUT_S = 300  # the compiler has its own 180 s timer
APT_REPO = "https://packages.cloud.google.com/apt coral-edgetpu-stable main"
INSTALL_COMMANDS = [
    "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo gpg --dearmor -o /usr/share/keyrings/coral-edgetpu.gpg",
    f'echo "deb [signed-by=/usr/share/keyrings/coral-edgetpu.gpg] {APT_REPO}" | sudo tee /etc/apt/sources.list.d/coral-edgetpu.list',
    "sudo apt-get update && sudo apt-get install -y edgetpu-compiler",
]
EIGHT_BIT = ("int8", "uint8")
SOFTMAX_MAX_ELEMENTS = 16_000
# The default gate: at least this share of the model's multiply-accumulates must run on the Edge TPU.
MIN_TPU_MAC_SHARE = 0.9
# Ops whose cost is their weights times their outputs; every other op costs one MAC per output element.
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL", "CONV_3D")
MAC_METHOD = ("multiply-accumulates from the flatbuffer's static shapes: CONV_2D/CONV_3D output elements x kernel size x input "
              "channels, DEPTHWISE_CONV_2D output elements x kernel size, FULLY_CONNECTED/BATCH_MATMUL output elements x inner "
              "dimension, TRANSPOSE_CONV input elements x kernel size x output channels; one per output element for every other op")
# What to change when the graph is cut at this op (the generic advice follows for the rest).
OP_FIXES = {
    "HARD_SWISH": "hard-swish has no Edge TPU kernel (MobileNetV3): train mobilenet_v3_small_minimalistic or "
                  "mobilenet_v3_large_minimalistic (ReLU, no squeeze-excite), or efficientnet_lite0",
    "LEAKY_RELU": "LEAKY_RELU has no Edge TPU kernel: use ReLU/ReLU6, or PReLU with shared_axes=[1, 2]",
    "GELU": "GELU has no Edge TPU kernel: use ReLU/ReLU6",
    "DEQUANTIZE": "a float tensor inside the graph: every op needs an int8 kernel (full-integer INT8)",
}


@dataclass(frozen=True)
class TpuOp:
    """One row of Coral's table: a TFLite builtin the Edge TPU compiler can map."""

    limitations: str = ""
    runtime: str = "all"  # Edge TPU runtime/compiler version that added it
    unsure: bool = False  # our encoding of this row could not be checked against the live page


# TFLite builtin name -> row. Ops absent here (e.g. HARD_SWISH, LEAKY_RELU, GELU, DEQUANTIZE, GATHER,
# ARG_MAX, SIN) run on the CPU; HARD_SWISH / LEAKY_RELU: google-coral/edgetpu#272 (still open).
SUPPORTED_OPS: dict[str, TpuOp] = {
    "ADD": TpuOp(),
    "AVERAGE_POOL_2D": TpuOp("No fused activation function."),
    "CONCATENATION": TpuOp("No fused activation function. If any input is a compile-time constant tensor, there must be only "
                           "2 inputs, and this constant tensor must be all zeroes (effectively, a zero-padding op)."),
    "CONV_2D": TpuOp("Must use the same dilation in x and y dimensions."),
    "DEPTHWISE_CONV_2D": TpuOp("Must use the same dilation in x and y dimensions (runtime <=12: no dilated kernels)."),
    "EXPAND_DIMS": TpuOp(runtime=">=13"),
    "FULLY_CONNECTED": TpuOp("Only the default format is supported for fully-connected weights. Output tensor is one-dimensional."),
    "L2_NORMALIZATION": TpuOp(),
    "LOGISTIC": TpuOp(),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": TpuOp("Unidirectional LSTM only.", ">=14", unsure=True),
    "MAXIMUM": TpuOp(),
    "MAX_POOL_2D": TpuOp("No fused activation function."),
    "MEAN": TpuOp("No reduction in batch dimension. If a z-reduction, the z-dimension must be multiple of 4.", ">=13"),
    "MINIMUM": TpuOp(),
    "MUL": TpuOp(),
    "PACK": TpuOp("No packing in batch dimension.", ">=13"),
    "PAD": TpuOp("No padding in batch dimension (runtime <=12: x/y padding only)."),
    "PRELU": TpuOp("Alpha must be 1-dimensional (only the innermost dimension can be >1 size); Keras PReLU on 4-D input "
                   "needs shared_axes=[1, 2].", ">=13"),
    "QUANTIZE": TpuOp(runtime=">=13"),
    "REDUCE_MAX": TpuOp("Cannot operate on the batch dimension.", ">=14"),
    "REDUCE_MIN": TpuOp("Cannot operate on the batch dimension.", ">=14"),
    "RELU": TpuOp(),
    "RELU6": TpuOp(),
    "RELU_N1_TO_1": TpuOp(),
    "RESHAPE": TpuOp("Certain reshapes might not be mapped for large tensor sizes."),
    "RESIZE_BILINEAR": TpuOp("Input/output is a 3-dimensional tensor. Depending on input/output size, this operation may not "
                             "be mapped to the Edge TPU to avoid loss in precision."),
    "RESIZE_NEAREST_NEIGHBOR": TpuOp("Input/output is a 3-dimensional tensor. Depending on input/output size, this operation "
                                     "may not be mapped to the Edge TPU to avoid loss in precision."),
    "RSQRT": TpuOp(runtime=">=14", unsure=True),
    "SLICE": TpuOp(),
    "SOFTMAX": TpuOp(f"Supports only 1-D input tensor with a max of {SOFTMAX_MAX_ELEMENTS:,} elements."),
    "SPACE_TO_DEPTH": TpuOp(),
    "SPLIT": TpuOp("No splitting in batch dimension."),
    "SQUARED_DIFFERENCE": TpuOp(runtime=">=14", unsure=True),
    "SQUEEZE": TpuOp("Runtime <=12: only when the input is 3-D or less after removing unit dimensions.", unsure=True),
    "STRIDED_SLICE": TpuOp("Supported only when all strides are equal to 1 (effectively a slice), with ellipsis-axis-mask == 0 "
                           "and new-axis-mask == 0."),
    "SUB": TpuOp(),
    "SUM": TpuOp("Cannot operate on the batch dimension.", ">=13"),
    "TANH": TpuOp(),
    "TRANSPOSE": TpuOp(runtime=">=14", unsure=True),
    "TRANSPOSE_CONV": TpuOp(runtime=">=13"),
}
GENERAL_REQUIREMENTS = (
    "Tensor parameters are quantized to 8 bits (int8/uint8); sizes are constant at compile time (static shapes, batch 1); "
    "model parameters such as bias tensors are constant at compile time; tensors are 1-, 2- or 3-dimensional, or if more, "
    "only the 3 innermost dimensions may be larger than 1; only the ops in the table map to the Edge TPU."
)


# ----------------------------------------------------------------------------- export
def export_edgetpu(request: ExportRequest) -> Artifact:
    """INT8 batch-1 uint8-I/O `<stem>.tflite`, the compatibility report, and `<stem>_edgetpu.tflite` if the compiler exists.

    ExportError when less than MIN_TPU_MAC_SHARE of the MACs would map to the Edge TPU, unless the request
    allows CPU ops."""
    from edgecls.export.tflite import export_tflite

    check_request(FORMATS["edgetpu"], request)
    artifact = export_tflite(replace(request, io_type="uint8"))  # Coral's default I/O (edgetpu takes no --io)
    report = edgetpu_report(artifact.path)
    report["gate"] = gate(report, bool(request.allow_cpu_ops))  # formats.OPTIONS["allow_cpu_ops"], CLI --allow-cpu-ops
    if not report["gate"]["passed"]:
        artifact.path.unlink(missing_ok=True)  # nothing that looks like an export stays behind
        raise ExportError(gate_failure(report, request.meta.architecture), report["fix"] + "; or pass --allow-cpu-ops "
                          "to accept the partial mapping (the report then lists the ops that run on the CPU)")
    compiler = shutil.which(COMPILER)
    if compiler is None:
        report["compiler"] = compiler_missing(artifact.path.name)
        return replace(artifact, format="edgetpu", notes={**artifact.notes, "edgetpu": report})
    result = compile_model(artifact.path, compiler)
    report["compiler"] = result
    compiled = Path(result["edgetpu_model"])
    log = Path(result["log_file"]) if result.get("log_file") else None
    extra = [artifact.path, *([log] if log else [])]
    return Artifact(path=compiled, format="edgetpu", precision="int8", input_quantization=artifact.input_quantization,
                    output_quantization=artifact.output_quantization, extra_files=extra,
                    notes={**artifact.notes, "edgetpu": report, "cpu_model": artifact.path.name})


def compiler_missing(model_name: str) -> dict[str, Any]:
    stem = model_name.removesuffix(".tflite")
    return {
        "available": False, "ran": False,
        "message": f"{COMPILER} is not on PATH; kept the uncompiled INT8 model {model_name} (runs on the CPU, not on the Edge TPU)",
        "command": f"{COMPILER} -s -o . {model_name}",
        "produces": [f"{stem}_edgetpu.tflite", f"{stem}_edgetpu.log"],
        "where": "an x86-64 Debian/Ubuntu host (the compiler has no ARM build: google-coral/edgetpu#702), "
                 "in the folder holding " + model_name,
        "install": INSTALL_COMMANDS,
    }


def compile_model(model: Path, compiler: str = COMPILER, timeout_s: int = COMPILER_TIMEOUT_S) -> dict[str, Any]:
    """Run `edgetpu_compiler -s -o DIR model.tflite`; the parsed log. ExportError when it fails."""
    command = [compiler, "-s", "-o", str(model.parent), str(model)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"{COMPILER} ran past {timeout_s} s on {model.name}", "Try a smaller input size or model") from exc
    output = proc.stdout + proc.stderr
    compiled = model.with_name(f"{model.stem}_edgetpu.tflite")
    if proc.returncode != 0 or not compiled.is_file():
        tail = " | ".join(output.strip().splitlines()[-6:])
        raise ExportError(f"{COMPILER} failed on {model.name} (exit {proc.returncode}): {tail}",
                          "Check the ops report in the export notes; unsupported ops must come after all supported ones")
    log = model.with_name(f"{model.stem}_edgetpu.log")
    parsed = parse_compiler_log(output)
    return {"available": True, "ran": True, "command": " ".join(command), "edgetpu_model": str(compiled),
            "log_file": str(log) if log.is_file() else None, **parsed}


def parse_compiler_log(text: str) -> dict[str, Any]:
    """Numbers and the per-operator table out of `edgetpu_compiler -s` output."""

    def number(label: str) -> int | None:
        found = re.search(rf"{label}:\s*(\d+)", text)
        return int(found.group(1)) if found else None

    rows = [
        {"op": m.group(1), "count": int(m.group(2)), "status": m.group(3).strip()}
        for m in re.finditer(r"^([A-Z][A-Z0-9_]+)\s+(\d+)\s+(\S.*)$", text, re.MULTILINE)
    ]
    version = re.search(r"Edge TPU Compiler version\s+(\S+)", text)
    total = number("Total number of operations")
    mapped = number("Number of operations that will run on Edge TPU")
    if mapped is None and rows:
        mapped = sum(int(r["count"]) for r in rows if r["status"] == "Mapped to Edge TPU")
    on_cpu = number("Number of operations that will run on CPU")
    if on_cpu is None and total is not None and mapped is not None:
        on_cpu = total - mapped
    return {
        "version": version.group(1) if version else None, "subgraphs": number("Number of Edge TPU subgraphs"),
        "ops_total": total, "ops_mapped": mapped, "ops_on_cpu": on_cpu,
        "not_mapped": [r for r in rows if r["status"] != "Mapped to Edge TPU"], "operators": rows,
    }


# ----------------------------------------------------------------------------- static report (no TensorFlow)
def edgetpu_report(tflite_path: str | Path) -> dict[str, Any]:
    """Per-op Edge TPU compatibility of a .tflite in execution order, the cut point and the TPU share (of ops and of MACs)."""
    g = graph(Path(tflite_path))
    tensors = g["tensors"]
    ops = []
    for op in g["ops"]:
        row = SUPPORTED_OPS.get(op["op"])
        reasons = [] if row else [f"{op['op']} is not on Coral's supported-op list"]
        reasons += _tensor_problems(op, tensors)
        ops.append({
            "index": op["index"], "op": op["op"], "supported": not reasons, "reasons": reasons,
            "limitations": row.limitations if row else "", "runtime": row.runtime if row else None,
            "unsure": bool(row and row.unsure), "macs": op_macs(op, tensors),
        })
    first = next((o for o in ops if not o["supported"]), None)
    cut = ops.index(first) if first else len(ops)
    for position, o in enumerate(ops):
        o["on_tpu"] = position < cut
    total = len(ops)
    macs_total = sum(o["macs"] for o in ops)
    macs_on_tpu = sum(o["macs"] for o in ops[:cut])
    only_edge_dequantize = first is not None and cut == total - 1 and first["op"] == "DEQUANTIZE"
    return {
        "model": Path(tflite_path).name, "source": SOURCE, "requirements": GENERAL_REQUIREMENTS,
        "ops_total": total, "ops_supported": sum(o["supported"] for o in ops), "ops_on_tpu": cut, "ops_on_cpu": total - cut,
        "tpu_share": round(cut / total, 4) if total else 0.0,
        "macs_total": macs_total, "macs_on_tpu": macs_on_tpu, "macs_on_cpu": macs_total - macs_on_tpu,
        "mac_share": round(macs_on_tpu / macs_total, 4) if macs_total else 0.0, "mac_method": MAC_METHOD,
        "first_unsupported": None if first is None else {"index": first["index"], "op": first["op"], "reasons": first["reasons"]},
        "cut": _cut_text(ops, cut, only_edge_dequantize, macs_total),
        "fix": None if first is None or only_edge_dequantize else fix_for(first),
        "integer": all(t["dtype"] in (*EIGHT_BIT, "int32") for t in tensors.values()),
        "static_shapes": all(-1 not in t["shape_signature"] for t in tensors.values()),
        "batch": tensors[g["inputs"][0]]["shape"][0] if g["inputs"] else None,
        "unsure_rows": sorted({o["op"] for o in ops if o["unsure"]}),
        "cpu_op_types": sorted({o["op"] for o in ops if not o["on_tpu"]}),
        "ops": ops,
    }


def op_macs(op: dict[str, Any], tensors: dict[int, dict[str, Any]]) -> int:
    """Multiply-accumulates of one op from its tensors' static shapes (MAC_METHOD)."""
    outputs = [tensors[t]["shape"] for t in op["outputs"]]
    out_elements = sum(math.prod(shape) for shape in outputs)
    if op["op"] not in WEIGHTED_OPS:
        return out_elements
    shapes = [tensors[t]["shape"] for t in op["inputs"]]
    if op["op"] in ("CONV_2D", "CONV_3D") and len(shapes) >= 2:
        return out_elements * math.prod(shapes[1][1:])  # kernel (out, [d,] kh, kw, in)
    if op["op"] == "DEPTHWISE_CONV_2D" and len(shapes) >= 2:
        return out_elements * math.prod(shapes[1][1:3])  # kernel (1, kh, kw, channels x multiplier)
    if op["op"] == "FULLY_CONNECTED" and len(shapes) >= 2:
        return out_elements * shapes[1][-1]  # weights (units, inner)
    if op["op"] == "BATCH_MATMUL" and shapes and shapes[0]:
        return out_elements * shapes[0][-1]
    if op["op"] == "TRANSPOSE_CONV" and len(shapes) >= 3:
        kernel, activations = shapes[1], shapes[2]  # (output_shape, weights (out, kh, kw, in), input)
        return math.prod(activations) * math.prod(kernel[:3])
    return out_elements


def fix_for(first: dict[str, Any]) -> str:
    """What to change so the whole graph maps: the op's own advice, then the zoo backbones that map fully."""
    from edgecls.zoo import list_backbones  # TF-free: the registry and its members' specs

    mapping = [s.name for s in list_backbones() if s.edgetpu.maps_fully and s.family != "plain"]
    advice = OP_FIXES.get(first["op"]) or (
        f"{first['op']} cannot run on the Edge TPU ({'; '.join(first['reasons'])}): replace it with an op from {SOURCE}")
    return f"{advice}; backbones whose whole graph maps: {', '.join(mapping)}"


def gate(report: dict[str, Any], allow_cpu_ops: bool) -> dict[str, Any]:
    """The default Edge TPU gate: at least MIN_TPU_MAC_SHARE of the MACs before the cut, unless CPU ops are allowed."""
    enough = report["mac_share"] >= MIN_TPU_MAC_SHARE
    return {"min_mac_share": MIN_TPU_MAC_SHARE, "mac_share": report["mac_share"], "allow_cpu_ops": allow_cpu_ops,
            "passed": enough or allow_cpu_ops,
            "verdict": "enough of the compute maps to the Edge TPU" if enough else
                       ("partial mapping accepted (--allow-cpu-ops): the ops from the cut on run on the host CPU" if allow_cpu_ops
                        else f"refused: less than {MIN_TPU_MAC_SHARE:.0%} of the MACs map to the Edge TPU")}


def gate_failure(report: dict[str, Any], architecture: str) -> str:
    """One line: how much of the compute would reach the Edge TPU and where the graph is cut."""
    first = report["first_unsupported"]
    reason = "; ".join(first["reasons"])
    return (f"only {report['mac_share']:.1%} of the MACs of {architecture} would run on the Edge TPU "
            f"(at least {MIN_TPU_MAC_SHARE:.0%} needed): the graph is cut at op #{first['index']} {first['op']} ({reason}), "
            f"so {report['ops_on_cpu']} of {report['ops_total']} ops and {report['macs_on_cpu']:,} of {report['macs_total']:,} MACs "
            f"would run on the host CPU")


def _cut_text(ops: list[dict[str, Any]], cut: int, only_edge_dequantize: bool, macs_total: int) -> str:
    if cut == len(ops):
        return f"all {len(ops)} ops are on Coral's supported list: one Edge TPU segment, nothing on the CPU"
    first = ops[cut]
    if only_edge_dequantize:
        return f"only the final DEQUANTIZE (#{first['index']}) runs on the CPU (float output); everything before maps to the Edge TPU"
    share = sum(o["macs"] for o in ops[:cut]) / macs_total if macs_total else 0.0
    return (f"the graph is cut at op #{first['index']} {first['op']} ({'; '.join(first['reasons'])}): "
            f"{cut} of {len(ops)} ops before it ({share:.1%} of the MACs) map to the Edge TPU, "
            f"it and the {len(ops) - cut - 1} ops after it run on the CPU")


def _tensor_problems(op: dict[str, Any], tensors: dict[int, dict[str, Any]]) -> list[str]:
    """Reasons a single op cannot map, from its tensors (dtype, static shape, rank rule, op-specific sizes)."""
    problems = []
    for index in dict.fromkeys([*op["inputs"], *op["outputs"]]):
        t = tensors[index]
        label = f"tensor '{t['name']}'"
        if t["dtype"] not in EIGHT_BIT and not (t["constant"] and t["dtype"] == "int32"):
            problems.append(f"{label} is {t['dtype']} (the Edge TPU needs 8-bit tensors; int32 only for constant bias/shape inputs)")
        if -1 in t["shape_signature"]:
            problems.append(f"{label} has a dynamic shape {t['shape_signature']}")
        if not t["constant"] and not rank_ok(t["shape"]):
            problems.append(f"{label} has shape {t['shape']}: beyond 3-D only the 3 innermost dimensions may exceed 1")
    if op["op"] == "SOFTMAX" and op["inputs"]:
        shape = tensors[op["inputs"][0]]["shape"]
        if math.prod(shape) > SOFTMAX_MAX_ELEMENTS or sum(d > 1 for d in shape) > 1:
            problems.append(f"SOFTMAX input {shape} is not a 1-D tensor of at most {SOFTMAX_MAX_ELEMENTS:,} elements")
    if op["op"] == "FULLY_CONNECTED" and op["outputs"]:
        shape = tensors[op["outputs"][0]]["shape"]
        if math.prod(shape[:-1]) > 1:
            problems.append(f"FULLY_CONNECTED output {shape} is not one-dimensional")
    return problems


def rank_ok(shape: list[int]) -> bool:
    """Coral's rule: a tensor of more than 3 dimensions may only have its 3 innermost ones larger than 1."""
    return all(d == 1 for d in shape[:-3])
