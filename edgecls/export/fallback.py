"""INT8 fallback: keep the most sensitive layers float until the TUNING images pass the gate, within a budget.

Candidates grow along the sensitivity ranking (the top 1, 2, 4, 8... layers, each with the nodes that keep
its output float), are re-quantized by the format's own writer (request.float_nodes: TFLite denylisted
nodes, ONNX nodes_to_exclude, NNCF ignored scope) and scored on the tuning split only. The search stops at
the first candidate that passes there, or when the budget (float layers, tries, seconds) runs out; it
returns the candidate that did best on tuning, which the export then judges on the held-out images
that never took part. Formats without a fallback (edgetpu: full-integer only) never get here.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgecls.errors import EdgeclsError
from edgecls.export.base import Artifact, ExportRequest
from edgecls.export.formats import Format
from edgecls.export.gate import Gate, agreement_and_drop, scores_of
from edgecls.export.report import FallbackReport, FallbackTry, SensitivityReport
from edgecls.export.sensitivity import ranked
from edgecls.export.validate import Holdout


@dataclass(frozen=True)
class Budget:
    layers: int  # graph nodes kept float, at most
    tries: int
    seconds: float

    @property
    def off(self) -> bool:
        return self.layers <= 0 or self.tries <= 0 or self.seconds <= 0


def candidates(sensitivity: SensitivityReport, max_layers: int) -> list[tuple[list[str], list[str]]]:
    """(float nodes, layer labels) of the top 1, 2, 4, 8... ranked layers, at most `max_layers` nodes each: a layer
    that would not fit is passed over for the next one."""
    nodes: list[str] = []
    labels: list[str] = []
    found: list[tuple[list[str], list[str]]] = []
    target = 1
    for layer in ranked(sensitivity):
        if layer.added <= 0:
            break
        extra = [n for n in layer.float_nodes if n not in nodes]
        if not extra or len(nodes) + len(extra) > max_layers:
            continue
        nodes, labels = [*nodes, *extra], [*labels, layer.label]
        if len(labels) == target:
            found.append((nodes, labels))
            target *= 2
    if labels and (not found or found[-1][0] != nodes):
        found.append((nodes, labels))  # every layer that fits, when the last power of two was not reached
    return found


def search(fmt: Format, request: ExportRequest, sensitivity: SensitivityReport, tuning: Holdout, gate: Gate, budget: Budget,
           scratch: Path, threads: int | None = None, say: Callable[[str], None] | None = None) -> tuple[FallbackReport, Artifact | None]:
    """Try candidates in `scratch` (each in its own sub-folder); the report and the artifact of the best one (None: none built)."""
    report = FallbackReport(mechanism=fmt.fallback or "", tuned_on=tuning.source,
                            budget={"layers": budget.layers, "tries": budget.tries, "seconds": budget.seconds})
    plan = candidates(sensitivity, budget.layers)
    if not plan:
        report.outcome = "no layer to keep float (the sensitivity report ranks none above zero)"
        return report, None
    start = time.perf_counter()
    built: dict[int, Artifact] = {}
    best: tuple[Any, ...] | None = None
    for nodes, labels in plan:
        if len(report.tries) >= budget.tries:
            report.outcome = f"budget: {budget.tries} tries"
            break
        if time.perf_counter() - start >= budget.seconds:
            report.outcome = f"budget: {budget.seconds:g} s"
            break
        (say or (lambda message: None))(f"fallback: re-quantizing {fmt.name} int8 with {len(nodes)} layers float")
        began = time.perf_counter()
        folder = scratch / f"try{len(report.tries) + 1}"
        folder.mkdir()
        try:
            artifact = fmt.load_writer()(replace(request, out_dir=folder, float_nodes=tuple(nodes)))
            checked = folder / artifact.notes.get("cpu_model", artifact.path.name)
            scores, _ = scores_of(checked, fmt.name, tuning.images, threads)
        except EdgeclsError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            report.tries.append(FallbackTry(nodes, labels, None, None, False, round(time.perf_counter() - began, 2), str(exc)))
            continue
        agreement, drop = agreement_and_drop(scores, tuning.reference, tuning.labels)
        passed = not gate.failures(agreement, drop)
        report.tries.append(FallbackTry(nodes, labels, round(agreement.gated, 4), None if drop is None else round(drop, 4), passed,
                                        round(time.perf_counter() - began, 2)))
        index = len(report.tries) - 1
        built[index] = artifact
        rank = (passed, agreement.gated - (drop or 0.0), -len(nodes))
        if best is None or rank > best[0]:
            best = (rank, index)
        if passed:
            report.outcome = f"passed on the tuning split with {len(nodes)} layers float"
            break
    else:
        report.outcome = f"no candidate within {budget.layers} float layers passed on the tuning split"
    if best is None:
        report.outcome = report.outcome or "every candidate failed to build"
        return report, None
    report.chosen = best[1]
    for index, artifact in built.items():  # keep only the chosen candidate's folder
        if index != best[1]:
            shutil.rmtree(artifact.path.parent, ignore_errors=True)
    return report, built[best[1]]
