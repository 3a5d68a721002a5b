"""Validate an exported artifact against the Keras model it came from, reporting every failure at once.

Float artifacts: probabilities within a stated tolerance. IMX500 (int8 only): MCT's quantized model, which simulates
the sensor's arithmetic, run in the toolchain venv (export/imx500.py). Quantized artifacts: the accuracy gate
(gate.py: top-1 agreement floor and accuracy drop on held-out images, overall and per class), and
proof read from the file that it really computes in integers; an INT8 artifact whose fallback kept
layers float says so ("int8+float fallback") instead of passing as full-integer or failing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.export.formats import QUANTIZED
from edgecls.export.gate import Gate, agreement_and_drop, scores_of
from edgecls.export.report import ClassAccuracy, ValidationReport

TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}  # max abs difference of probabilities
MIN_AGREEMENT = {"fp32": 0.99, "fp16": 0.98}
WARN_DROP = 0.01


@dataclass
class Holdout:
    """Held-out images (never used for calibration), their labels when known, and Keras' probabilities."""

    images: np.ndarray  # uint8 (N, h, w, 3)
    labels: np.ndarray | None
    reference: np.ndarray  # Keras probabilities (N, classes)
    source: str


def run_backend(backend: Any, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Probabilities of `images` (uint8) through an open edgecls.runtime backend, `batch` at a time."""
    chunks = [backend.run(images[i : i + batch].astype(np.float32)) for i in range(0, len(images), batch)]
    return np.concatenate(chunks).astype(np.float32)


def integer_check(path: Path, fmt: str, float_nodes: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """How much of the compute graph is integer, read from the file itself. With `float_nodes` (the fallback's layers)
    the file is mixed: "integer" stays False for TFLite, "mixed" is True, and "unexpected_float_ops" lists any float op
    nobody asked for (only those fail)."""
    if fmt in ("tflite", "edgetpu"):
        from edgecls.export.tflite import unexpected_float_ops
        from edgecls.export.tflite_inspect import tensor_types

        types = tensor_types(path)
        float_ops = types.get("float_ops", [])
        check = {"integer": not float_ops, "float_ops": float_ops, "input": types.get("input"), "output": types.get("output")}
        if float_nodes:
            check.update(mixed=True, float_fallback_nodes=list(float_nodes), unexpected_float_ops=unexpected_float_ops(path, float_nodes))
        return check
    if fmt == "onnx":
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        producers = {out: node.op_type for node in graph.node for out in node.output}
        compute = [n for n in graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
        quantized = [n for n in compute if len(n.input) > 1 and producers.get(n.input[1]) == "DequantizeLinear"]
        float_ops = [f"{n.op_type} {n.name}" for n in compute if n not in quantized]
        qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)
        check = {"integer": bool(quantized) and qdq > 0, "quantized_compute_ops": len(quantized), "float_compute_ops": float_ops,
                 "qdq_nodes": qdq}
        if float_nodes:
            check.update(mixed=True, float_fallback_nodes=list(float_nodes))
        return check
    if fmt == "openvino":
        from edgecls.openvino_import import import_openvino

        ov = import_openvino("export")

        model = ov.Core().read_model(str(path))
        kinds = [op.get_type_name() for op in model.get_ordered_ops()]
        compute_ops = kinds.count("Convolution") + kinds.count("GroupConvolution") + kinds.count("MatMul")
        fake_quantize = kinds.count("FakeQuantize")
        check = {"integer": fake_quantize > 0, "fake_quantize_ops": fake_quantize, "compute_ops": compute_ops}
        if float_nodes:
            check.update(mixed=True, float_fallback_nodes=list(float_nodes))
        return check
    if fmt == "imx500":
        from edgecls.export.imx500 import integer_check as imx500_integer_check

        return imx500_integer_check(path)
    raise ValueError(fmt)


def validate(path: Path, fmt: str, precision: str, holdout: Holdout, labels: list[str], gate: Gate | None = None,
             threads: int | None = None, float_nodes: tuple[str, ...] | list[str] = ()) -> ValidationReport:
    """The validation report of one artifact; report.passed says whether export may succeed.

    `gate` judges quantized precisions (None: report the numbers, judge nothing); `float_nodes`: the layers an
    int8 fallback kept float (they make the file mixed precision, which is then reported, not failed)."""
    if fmt == "imx500":  # no runtime reads packerOut.zip here: MCT's quantized model simulates the sensor's arithmetic
        from edgecls.export.imx500 import simulated_scores

        scores, precision_ran = simulated_scores(path, holdout.images)
    else:
        scores, precision_ran = scores_of(path, fmt, holdout.images, threads)
    reference = holdout.reference
    diff = np.abs(scores - reference)
    agreed, _ = agreement_and_drop(scores, reference, None)
    agreement = agreed.overall
    if float_nodes:  # the runtime reads a file with float ops as dynamic range; it is int8 with float layers
        precision_ran = f"int8+float fallback ({len(float_nodes)} layers float)"
    report = ValidationReport(images=len(holdout.images), source=holdout.source, precision_ran=precision_ran,
                              max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()), top1_agreement=agreement)
    if precision in QUANTIZED:
        report.decisive_agreement, report.decisive_images, report.agreement_gated = agreed.decisive, agreed.decisive_images, agreed.gated
    failures: list[str] = report.failures
    if scores.shape != reference.shape:
        failures.append(f"output shape {scores.shape} differs from Keras' {reference.shape}")
    if precision in TOLERANCE:
        report.tolerance = TOLERANCE[precision]
        if report.max_abs_diff > TOLERANCE[precision]:
            failures.append(f"max abs difference {report.max_abs_diff:.2e} exceeds the {precision} tolerance {TOLERANCE[precision]:.0e}")
        if agreement < MIN_AGREEMENT[precision]:
            failures.append(f"top-1 agreement {agreement:.3f} is below {MIN_AGREEMENT[precision]}")
    drop = _accuracy(report, holdout.labels, reference, scores, labels) if holdout.labels is not None else None
    if precision in QUANTIZED:
        report.quantized = True
        failures.extend((gate or Gate(None, None)).failures(agreed, drop))
    if drop is not None and drop > WARN_DROP and not any(f.startswith("accuracy drop") for f in failures):
        report.warning = f"accuracy drop {drop * 100:.2f} points (above 1 point)"
    if precision == "int8":
        check = integer_check(path, fmt, float_nodes)
        report.integer_check = check
        if check.get("mixed") and check.get("unexpected_float_ops"):
            failures.append(f"the {fmt} file keeps float ops the fallback did not ask for: {check['unexpected_float_ops'][:3]}")
        elif not check["integer"] and not check.get("mixed"):
            failures.append(f"the {fmt} file is not integer: {check}")
    return report


def _accuracy(report: ValidationReport, truth: np.ndarray, reference: np.ndarray, scores: np.ndarray, labels: list[str]) -> float:
    """Fill the accuracy fields of `report` (overall and per class); returns the accuracy drop."""
    ref_ok = reference.argmax(1) == truth
    art_ok = scores.argmax(1) == truth
    per_class = []
    for index, label in enumerate(labels):
        mask = truth == index
        if mask.any():
            ref_acc, art_acc = float(ref_ok[mask].mean()), float(art_ok[mask].mean())
            per_class.append(ClassAccuracy(label, int(mask.sum()), ref_acc, art_acc, ref_acc - art_acc))
    report.reference_accuracy, report.artifact_accuracy = float(ref_ok.mean()), float(art_ok.mean())
    report.accuracy_drop = report.reference_accuracy - report.artifact_accuracy
    report.per_class = per_class
    report.classes_that_lost_accuracy = [c.label for c in sorted(per_class, key=lambda c: -c.drop) if c.drop > 0]
    return report.accuracy_drop
