"""Validate an exported artifact against the Keras model it came from, reporting every failure at once.

Float artifacts: probabilities within a stated tolerance. Quantized artifacts: top-1 agreement,
accuracy and accuracy drop on held-out labelled images (overall and per class), and proof that the
file really computes in integers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.export.formats import QUANTIZED
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
    chunks = [backend.run(images[i : i + batch].astype(np.float32)) for i in range(0, len(images), batch)]
    return np.concatenate(chunks).astype(np.float32)


def integer_check(path: Path, fmt: str) -> dict[str, Any]:
    """How much of the compute graph is integer, read from the file itself."""
    if fmt in ("tflite", "edgetpu"):
        from edgecls.export.tflite_inspect import tensor_types

        types = tensor_types(path)
        float_ops = types.get("float_ops", [])
        return {"integer": not float_ops, "float_ops": float_ops, "input": types.get("input"), "output": types.get("output")}
    if fmt == "onnx":
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        producers = {out: node.op_type for node in graph.node for out in node.output}
        compute = [n for n in graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
        quantized = [n for n in compute if len(n.input) > 1 and producers.get(n.input[1]) == "DequantizeLinear"]
        float_ops = [f"{n.op_type} {n.name}" for n in compute if n not in quantized]
        qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)
        return {"integer": bool(quantized) and qdq > 0, "quantized_compute_ops": len(quantized), "float_compute_ops": float_ops,
                "qdq_nodes": qdq}
    if fmt == "openvino":
        import openvino as ov

        model = ov.Core().read_model(str(path))
        kinds = [op.get_type_name() for op in model.get_ordered_ops()]
        compute_ops = kinds.count("Convolution") + kinds.count("GroupConvolution") + kinds.count("MatMul")
        fake_quantize = kinds.count("FakeQuantize")
        return {"integer": fake_quantize > 0, "fake_quantize_ops": fake_quantize, "compute_ops": compute_ops}
    raise ValueError(fmt)


def validate(path: Path, fmt: str, precision: str, holdout: Holdout, labels: list[str],
             max_drop: float | None, threads: int | None = None) -> ValidationReport:
    """The validation report of one artifact; report.passed says whether export may succeed."""
    from edgecls.runtime import load_backend

    options: dict[str, Any] = {"precision_hint": "f32"} if fmt == "openvino" else {}
    backend = load_backend(path, device="cpu", threads=threads, **options)
    try:
        scores = run_backend(backend, holdout.images)
        precision_ran = backend.precision_ran
    finally:
        backend.close()
    reference = holdout.reference
    diff = np.abs(scores - reference)
    agreement = float(np.mean(scores.argmax(1) == reference.argmax(1)))
    report = ValidationReport(images=len(holdout.images), source=holdout.source, precision_ran=precision_ran,
                              max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()), top1_agreement=agreement)
    failures: list[str] = report.failures
    if scores.shape != reference.shape:
        failures.append(f"output shape {scores.shape} differs from Keras' {reference.shape}")
    if precision in TOLERANCE:
        report.tolerance = TOLERANCE[precision]
        if report.max_abs_diff > TOLERANCE[precision]:
            failures.append(f"max abs difference {report.max_abs_diff:.2e} exceeds the {precision} tolerance {TOLERANCE[precision]:.0e}")
        if agreement < MIN_AGREEMENT[precision]:
            failures.append(f"top-1 agreement {agreement:.3f} is below {MIN_AGREEMENT[precision]}")
    if holdout.labels is not None:
        drop = _accuracy(report, holdout.labels, reference, scores, labels)
        if max_drop is not None and drop > max_drop:
            failures.append(f"accuracy drop {drop * 100:.2f} points exceeds --max-drop {max_drop * 100:.2f} points")
        elif drop > WARN_DROP:
            report.warning = f"accuracy drop {drop * 100:.2f} points (above 1 point)"
    if precision == "int8":
        check = integer_check(path, fmt)
        report.integer_check = check
        if not check["integer"]:
            failures.append(f"the {fmt} file is not integer: {check}")
    if precision in QUANTIZED:
        report.quantized = True
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
