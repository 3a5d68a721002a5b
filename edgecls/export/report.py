"""Typed export and validation reports. `as_dict()` gives the export_report.json layout (same keys as
ever: optional parts are left out when they do not apply) so files and --json readers keep working."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _without_none(data: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None or key in keep}


@dataclass(frozen=True)
class ClassAccuracy:
    """Keras vs artifact accuracy on one class of the held-out images."""

    label: str
    images: int
    reference_accuracy: float
    artifact_accuracy: float
    drop: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ValidationReport:
    """One artifact run through its real runtime on held-out images, compared with the Keras model."""

    images: int
    source: str
    precision_ran: str
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    tolerance: float | None = None  # float precisions
    decisive_agreement: float | None = None  # quantized: agreement on the images Keras is decisive about (gate.py)
    decisive_images: int | None = None
    agreement_gated: float | None = None  # what the --min-agreement floor read
    reference_accuracy: float | None = None  # when the held-out images are labelled
    artifact_accuracy: float | None = None
    accuracy_drop: float | None = None
    per_class: list[ClassAccuracy] | None = None
    classes_that_lost_accuracy: list[str] | None = None
    warning: str | None = None
    integer_check: dict[str, Any] | None = None  # int8: format-specific proof read from the file
    quantized: bool | None = None  # True for quantized precisions
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        data = _without_none(dict(self.__dict__))
        if self.per_class is not None:
            data["per_class"] = [c.as_dict() for c in self.per_class]
        return {**data, "passed": self.passed}


@dataclass(frozen=True)
class GateReport:
    """The accuracy gate that judged a quantized artifact, and what to try when it failed."""

    max_drop: float | None  # None: no accuracy-drop check
    min_agreement: float | None  # None: no agreement floor
    judged_on: str  # the held-out images (never calibration or tuning images)
    passed: bool
    advice: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's INT8 error against the float model (sensitivity.py defines the measures)."""

    name: str  # the node id the fallback uses
    label: str
    op: str
    index: int  # position in the float graph
    error: float
    added: float
    rmse: float
    rmse_per_step: float | None
    float_nodes: tuple[str, ...]  # what the fallback keeps float for this layer

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "float_nodes": list(self.float_nodes)}


@dataclass
class SensitivityReport:
    """Per-layer quantization error of the full-integer INT8 artifact (what the fallback ranks) on calibration images."""

    target: str
    metric: str
    images: int
    layers: list[LayerSensitivity]
    plot: str | None = None  # PNG beside the artifact
    seconds: float | None = None
    measured: str = "the full-integer int8 artifact, before any fallback, against the float model it was quantized from"

    def worst(self, count: int = 5) -> list[LayerSensitivity]:
        return sorted(self.layers, key=lambda layer: (-layer.added, layer.index))[:count]

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "measured": self.measured, "metric": self.metric, "images": self.images, "plot": self.plot,
                "seconds": self.seconds, "worst": [layer.name for layer in self.worst()],
                "layers": [layer.as_dict() for layer in self.layers]}


@dataclass(frozen=True)
class FallbackTry:
    """One re-quantized candidate with `float_nodes` kept float, scored on the tuning split."""

    float_nodes: list[str]
    layers: list[str]  # labels of the sensitivity layers it keeps float
    top1_agreement: float | None
    accuracy_drop: float | None
    passed: bool
    seconds: float
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class FallbackReport:
    """The search for float layers that bring a failed INT8 export within the gate."""

    mechanism: str  # how the format keeps layers float
    tuned_on: str  # the tuning images (never the judging ones)
    budget: dict[str, float]  # layers, tries, seconds
    tries: list[FallbackTry] = field(default_factory=list)
    outcome: str = ""
    chosen: int | None = None  # index into tries of the candidate kept (judged, published or kept aside)
    full_int8_agreement: float | None = None  # the full-integer artifact as judged before the fallback
    full_int8_accuracy_drop: float | None = None
    full_int8_failures: list[str] = field(default_factory=list)
    size_bytes: int | None = None  # the chosen candidate
    full_int8_size_bytes: int | None = None
    latency_ms: float | None = None  # p50 of batch-1 runs on this machine through edgecls.runtime
    full_int8_latency_ms: float | None = None
    latency_note: str = ""

    @property
    def candidate(self) -> FallbackTry | None:
        return None if self.chosen is None else self.tries[self.chosen]

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["tries"] = [t.as_dict() for t in self.tries]
        candidate = self.candidate
        data["float_nodes"] = candidate.float_nodes if candidate else []
        data["float_layers"] = candidate.layers if candidate else []
        return data


@dataclass(frozen=True)
class CalibrationInfo:
    source: str
    images: int
    manifest: str | None


@dataclass(frozen=True)
class EdgeTpuSummary:
    """The lines `edgecls export` prints about an Edge TPU artifact, read from its notes."""

    ops_on_tpu: int
    ops_total: int
    tpu_share: float
    cut: str
    compiler_ran: bool
    compiler_message: str
    compiler_command: str


@dataclass
class ExportReport:
    """export_report.json of one artifact (published, or kept aside in <target>-<precision>.rejected/ when it failed)."""

    target: str
    precision: str
    source: str
    artifact: str | None = None
    files: list[str] | None = None
    size_bytes: int | None = None  # every file of the artifact together
    weights_bytes: int | None = None  # the file that holds the weights: an IR's .bin, else the artifact itself
    graph_bytes: int | None = None  # an IR's .xml (graph, metadata); None where graph and weights share one file
    fp32_weights_bytes: int | None = None
    notes: dict[str, Any] | None = None  # format-specific, from the writer
    calibration: CalibrationInfo | None = None
    size_ratio_vs_fp32_weights: float | None = None  # weights_bytes / fp32_weights_bytes
    validation: ValidationReport | None = None
    validated_file: str | None = None
    export_seconds: float | None = None
    gate: GateReport | None = None  # quantized precisions
    sensitivity: SensitivityReport | None = None  # int8
    fallback: FallbackReport | None = None  # int8 that failed the gate on its first try
    rejected: str | None = None  # the folder an artifact that failed was kept aside in (never published)
    error: str | None = None

    @property
    def edgetpu(self) -> EdgeTpuSummary | None:
        tpu = (self.notes or {}).get("edgetpu")
        if not tpu:
            return None
        compiler = tpu.get("compiler", {})
        return EdgeTpuSummary(tpu["ops_on_tpu"], tpu["ops_total"], tpu["tpu_share"], tpu["cut"], bool(compiler.get("ran")),
                              compiler.get("message", ""), compiler.get("command", ""))

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.__dict__)
        data["calibration"] = None if self.calibration is None else dict(self.calibration.__dict__)
        data["validation"] = None if self.validation is None else self.validation.as_dict()
        for key in ("gate", "sensitivity", "fallback"):
            value = getattr(self, key)
            data[key] = None if value is None else value.as_dict()
        # "calibration" is written (null for float precisions) once an artifact exists, as it always was
        return _without_none(data, keep=("calibration",) if self.artifact is not None else ())


@dataclass
class ExportResult:
    """What `edgecls.export.export` returns for each (target, precision)."""

    target: str
    precision: str
    folder: Path | None
    artifact: Path | None
    size_bytes: int
    seconds: float
    report: ExportReport
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None

    @property
    def validation(self) -> ValidationReport | None:
        return self.report.validation

    def as_dict(self) -> dict[str, Any]:
        """The report plus where it landed, as `edgecls export --json` prints it."""
        return {**self.report.as_dict(), "folder": str(self.folder) if self.folder else None, "passed": self.passed, "error": self.error}
