"""Typed bench reports. `as_dict()` gives the bench_report.json layout (same keys and order as ever: the accuracy
keys only when --data was given, `reference` only with a device profile, `outputs` once written), so files and
--json readers keep working. `edgecls.bench.measure` still hands its result over as JSON (it runs in a process of
its own); `ArtifactResult.from_dict` / `result_from_dict` read it back."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Latency:
    """Percentiles of `runs` timed runs (ms) and the FPS of the median."""

    runs: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    fps: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Latency:
        return cls(int(data["runs"]), *(float(data[key]) for key in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "fps")))

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ReferenceCheck:
    """The device profile's published latency for this model, and the verdict (or why there is none)."""

    verdict: str
    latency_ms: float | None = None  # None: the profile has no reference for this model
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.latency_ms is None:
            return {"verdict": self.verdict}
        return {"latency_ms": self.latency_ms, "source": self.source, "verdict": self.verdict}


@dataclass
class Accuracy:
    """Scores on the labelled --data folder. top5 is None with fewer than 5 classes (never top-1 under that name)."""

    images: int
    skipped_images: int
    accuracy: float
    top5: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ArtifactResult:
    """One artifact measured in its own process."""

    artifact: str
    format: str
    precision: str
    backend: str
    precision_ran: str
    threads: int | None
    device: str
    architecture: str
    input_size: list[int]
    size_bytes: int
    latency: Latency
    scores: Accuracy | None = None  # with --data
    reference: ReferenceCheck | None = None  # with a device profile

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactResult:
        scores = None
        if "images" in data:
            scores = Accuracy(int(data["images"]), int(data["skipped_images"]), float(data["accuracy"]),
                              None if data["top5"] is None else float(data["top5"]))
        return cls(artifact=data["artifact"], format=data["format"], precision=data["precision"], backend=data["backend"],
                   precision_ran=data["precision_ran"], threads=data["threads"], device=data["device"],
                   architecture=data["architecture"], input_size=list(data["input_size"]), size_bytes=int(data["size_bytes"]),
                   latency=Latency.from_dict(data["latency"]), scores=scores)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"artifact": self.artifact, "format": self.format, "precision": self.precision, "backend": self.backend,
                                "precision_ran": self.precision_ran, "threads": self.threads, "device": self.device,
                                "architecture": self.architecture, "input_size": list(self.input_size), "size_bytes": self.size_bytes}
        if self.scores is not None:
            data.update(self.scores.as_dict())
        data["latency"] = self.latency.as_dict()
        if self.reference is not None:
            data["reference"] = self.reference.as_dict()
        return data


@dataclass(frozen=True)
class FailedArtifact:
    """An artifact that could not be measured (its process failed, or ran past the timeout); the others still were."""

    artifact: str
    error: str
    timed_out: bool = False

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"artifact": self.artifact, "error": self.error}
        if self.timed_out:
            data["timed_out"] = True
        return data


BenchResult = ArtifactResult | FailedArtifact


def result_from_dict(data: dict[str, Any]) -> BenchResult:
    """What `python -m edgecls.bench.measure` printed, typed."""
    if "error" in data:
        return FailedArtifact(str(data["artifact"]), str(data["error"]), bool(data.get("timed_out", False)))
    return ArtifactResult.from_dict(data)


@dataclass
class BenchReport:
    """Every artifact of one `edgecls bench` run, with the settings they were measured with."""

    profile: str | None
    threads: int | None
    device: str
    runs: int
    warmup: int
    results: list[BenchResult] = field(default_factory=list)
    outputs: dict[str, str | None] | None = None  # {"json", "chart"} once written

    @property
    def failed(self) -> list[FailedArtifact]:
        return [r for r in self.results if isinstance(r, FailedArtifact)]

    @property
    def measured(self) -> list[ArtifactResult]:
        return [r for r in self.results if isinstance(r, ArtifactResult)]

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"profile": self.profile, "threads": self.threads, "device": self.device, "runs": self.runs,
                                "warmup": self.warmup, "results": [r.as_dict() for r in self.results]}
        if self.outputs is not None:
            data["outputs"] = dict(self.outputs)
        return data


__all__ = ["Accuracy", "ArtifactResult", "BenchReport", "BenchResult", "FailedArtifact", "Latency", "ReferenceCheck", "result_from_dict"]
