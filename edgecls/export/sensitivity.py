"""Per-layer INT8 sensitivity: how far each layer's quantized output is from the float model's, on calibration images.

The same measure on every target (probes.py reads the tensors of each runtime): for each layer, the
int8 output (dequantized) and the float output of the model the quantizer started from are compared
channel by channel, accumulated from the input.

- `error`: per channel, RMS(int8 - float) / std(float), capped at 1 (1: that channel's signal is gone),
  averaged over channels; the channel axis is whichever of axis 1 / the last axis shows more error
  (NCHW in ONNX and OpenVINO, NHWC in TFLite). A per-channel measure, because the classic INT8 failure
  (one channel's range far wider than the others') hides in a per-tensor RMSE: the wide channel keeps
  its precision while every other channel rounds to zero.
- `added`: `error` minus the largest `error` of the layer's inputs: what quantizing this layer costs.
  Layers are ranked by it; the fallback keeps the top ones float.
- `rmse_per_step`: plain RMSE over the float range / 255 (the TFLite QuantizationDebugger's RMSE/scale).

Each layer also names the graph nodes the fallback keeps float for it: the layer, back to the op that
computes it, and its consumers up to the next op with weights, so the tensor between them stays float
(a float layer whose output is re-quantized for an int8 consumer would not help).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.export.report import LayerSensitivity, SensitivityReport

METRIC = ("error: per-channel RMS(int8 - float) / std(float), capped at 1, averaged over channels, accumulated from the input; "
          "added: error minus the largest error of the layer's inputs (the ranking); rmse_per_step: RMSE / (float range / 255)")
CONSUMER_DEPTH = 4  # ops without weights walked through to reach the consumers that must also stay float
PLOT = "sensitivity.png"


@dataclass
class Node:
    """One op of a target's float graph, as the fallback names it."""

    id: str  # TFLite: output tensor name; ONNX: node name; OpenVINO: op friendly name
    label: str  # short readable name
    op: str
    inputs: list[str]  # ids of the ops producing its activation inputs
    compute: bool  # an op with weights (convolution, matmul, fully connected)
    probed: bool  # its output is compared (present in both models)
    fixed: bool = False  # no fallback can change its output's precision (integer model output, already float)


@dataclass
class _Stats:
    """Running sums of one layer's float and int8 outputs, per channel for each candidate channel axis."""

    sums: dict[int, list[np.ndarray]] = field(default_factory=dict)  # axis -> [n, sum f, sum f^2, sum e^2] per channel
    squared_error: float = 0.0
    count: int = 0
    low: float = np.inf
    high: float = -np.inf

    def add(self, reference: np.ndarray, quantized: np.ndarray) -> None:
        reference = reference.astype(np.float64)
        error = quantized.astype(np.float64) - reference
        self.squared_error += float(np.sum(error**2))
        self.count += reference.size
        self.low, self.high = min(self.low, float(reference.min())), max(self.high, float(reference.max()))
        for axis in sorted({1, reference.ndim - 1}) if reference.ndim >= 2 else []:
            f = np.moveaxis(reference, axis, 0).reshape(reference.shape[axis], -1)
            e = np.moveaxis(error, axis, 0).reshape(reference.shape[axis], -1)
            new = [np.full(len(f), f.shape[1], np.float64), f.sum(1), (f**2).sum(1), (e**2).sum(1)]
            self.sums[axis] = new if axis not in self.sums else [a + b for a, b in zip(self.sums[axis], new)]

    def error(self) -> float:
        worst = 0.0
        for n, total, squares, errors in self.sums.values():
            std = np.sqrt(np.maximum(squares / n - (total / n) ** 2, 0.0))
            alive = std > max(1e-12, 1e-6 * float(std.max(initial=0.0)))
            if alive.any():
                worst = max(worst, float(np.mean(np.minimum(np.sqrt(errors[alive] / n[alive]) / std[alive], 1.0))))
        return worst

    def rmse(self) -> float:
        return float(np.sqrt(self.squared_error / self.count)) if self.count else 0.0


def measure(nodes: Sequence[Node], outputs: Iterable[dict[str, tuple[np.ndarray, np.ndarray]]]) -> list[LayerSensitivity]:
    """Sensitivity of every probed node, in graph order, from (float, int8) outputs of each image."""
    stats = {node.id: _Stats() for node in nodes if node.probed}
    images = 0
    for per_image in outputs:
        images += 1
        for key, (reference, quantized) in per_image.items():
            if key in stats and reference.shape == quantized.shape and reference.size:
                stats[key].add(reference, quantized)
    by_id = {node.id: node for node in nodes}
    errors = {key: s.error() for key, s in stats.items() if s.count}
    layers = []
    for index, node in enumerate(nodes):
        if node.id not in errors:
            continue
        upstream = [errors[key] for key in _probed_inputs(node, by_id, errors)]
        s = stats[node.id]
        step = (s.high - s.low) / 255.0
        layers.append(LayerSensitivity(
            name=node.id, label=node.label, op=node.op, index=index, error=round(errors[node.id], 5),
            added=round(errors[node.id] - max(upstream, default=0.0), 5), rmse=round(s.rmse(), 6),
            rmse_per_step=round(s.rmse() / step, 4) if step > 0 else None, float_nodes=fallback_nodes(node, nodes),
        ))
    return layers


def _probed_inputs(node: Node, by_id: dict[str, Node], errors: dict[str, float]) -> list[str]:
    """The nearest probed ancestors of `node` (walking through ops whose output was not compared)."""
    found, stack, seen = [], list(node.inputs), set()
    while stack:
        key = stack.pop()
        if key in seen or key not in by_id:
            continue
        seen.add(key)
        if key in errors:
            found.append(key)
        else:
            stack.extend(by_id[key].inputs)
    return found


def fallback_nodes(node: Node, nodes: Sequence[Node]) -> tuple[str, ...]:
    """What keeps `node`'s output float: the op back to its computing op, and its consumers up to the next ops with weights.
    Nothing for a fixed node."""
    if node.fixed:
        return ()
    by_id = {n.id: n for n in nodes}
    consumers: dict[str, list[str]] = {}
    for n in nodes:
        for key in n.inputs:
            consumers.setdefault(key, []).append(n.id)
    chosen = [node.id]
    current = node
    while not current.compute and len(current.inputs) == 1 and current.inputs[0] in by_id:
        current = by_id[current.inputs[0]]
        chosen.append(current.id)
    frontier = [(key, 1) for key in consumers.get(node.id, [])]
    while frontier:
        key, depth = frontier.pop(0)
        if key in chosen:
            continue
        chosen.append(key)
        if not by_id[key].compute and depth < CONSUMER_DEPTH:
            frontier.extend((nxt, depth + 1) for nxt in consumers.get(key, []))
    return tuple(chosen)


def ranked(report: SensitivityReport) -> list[LayerSensitivity]:
    """Layers by what quantizing them costs, worst first (ties: earlier layer first)."""
    return sorted(report.layers, key=lambda layer: (-layer.added, layer.index))


def sensitivity_report(target: str, nodes: Sequence[Node], run: Callable[[np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]],
                       images: np.ndarray) -> SensitivityReport:
    """Run every image through `run` (one image -> {node id: (float, int8)}) and measure."""
    layers = measure(nodes, (run(image) for image in images))
    return SensitivityReport(target=target, metric=METRIC, images=len(images), layers=layers)


def pick_images(calibration: np.ndarray, count: int) -> np.ndarray:
    """`count` calibration images spread over the set (deterministic)."""
    if len(calibration) <= count:
        return calibration
    return calibration[np.linspace(0, len(calibration) - 1, count).round().astype(int)]


def write_plot(report: SensitivityReport, path: Path, kept_float: Sequence[str] = ()) -> Path:
    """A PNG of every layer's error and added error in graph order, kept-float layers highlighted (matplotlib, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers = report.layers
    kept = set(kept_float)
    figure = Figure(figsize=(max(6.0, 0.22 * len(layers) + 2), 4.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    x = np.arange(len(layers))
    axes.bar(x, [layer.error for layer in layers], color="#9ab", label="error (accumulated)")
    colours = ["#d33" if layer.name in kept else "#246" for layer in layers]
    axes.bar(x, [max(layer.added, 0.0) for layer in layers], width=0.5, color=colours, label="added by this layer")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("per-channel RMS error / std")
    axes.set_title(f"{report.target} int8 sensitivity ({report.images} calibration images; red: kept float)", fontsize=10)
    step = max(1, len(layers) // 40)
    axes.set_xticks(x[::step], [layers[i].label[-28:] for i in range(0, len(layers), step)], rotation=90, fontsize=6)
    axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(str(path))
    return path


def probe_for(target: str, cache: dict[str, Any], artifact: Path) -> tuple[list[Node], Callable[[np.ndarray], Any]]:
    """The nodes and the per-image runner of one target's int8 artifact against the float model in `cache`."""
    from edgecls.export import probes

    return probes.PROBES[target](cache, artifact)
