"""A golden set stored beside an artifact, and the check of a runtime's outputs against it (numpy only).

`golden.npz` (compressed) holds a few held-out images already at the model's input size (uint8 RGB, so
no resize or colour step can differ), the scores the validated run gave them, the labels, the precision
and its tolerance. `check_golden` compares a runtime's outputs for the same pixels and says what is
wrong: labels (renamed, reordered, a different count), scores that are not probabilities (logits),
preprocessing (the raw pixels agree but the runtime's own preprocessing path does not, or the outputs
are what the model gives for channel-swapped pixels), or numerics beyond the tolerance of the precision
(runtime or delegate version).
"""
from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ModelError

GOLDEN_FILE = "golden.npz"
GOLDEN_VERSION = 1
DEFAULT_COUNT = 8
TOP_K = 5
# Largest allowed |score - expected| on the expected top-k classes, per precision. fp32 leaves room for
# another CPU's kernels (x86 vs Arm XNNPACK, OpenVINO vs LiteRT); int8 for a few quantisation steps of a
# uint8 output (1/256 each) after integer kernels that round differently.
TOLERANCES = {"fp32": 2e-3, "fp16": 1e-2, "dynamic": 3e-2, "int8": 6e-2}
Runner = Callable[[np.ndarray], np.ndarray]  # uint8 (N, h, w, 3) RGB -> float (N, classes)


@dataclass
class GoldenSet:
    images: np.ndarray  # uint8 (N, h, w, 3) RGB at the model's input size
    probabilities: np.ndarray  # float32 (N, classes): what the validated run gave
    labels: list[str]
    precision: str
    tolerance: float
    source: str = ""  # what produced the expected scores, e.g. "litert 2.3.0 x86_64"
    top_k: int = TOP_K
    # the run that produced them, as edgecls.runtime.common.describe_runtime gives it (runtime, version, device,
    # delegate, precision_ran, machine, system, python, edgecls); {} for sets made before it was recorded
    runtime: dict[str, str] = field(default_factory=dict)

    def expected_top(self) -> tuple[np.ndarray, np.ndarray]:
        """(indices, scores) of the expected top-k per image, best first."""
        k = min(self.top_k, self.probabilities.shape[1])
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return order, np.take_along_axis(self.probabilities, order, axis=1)

    def decisive(self) -> np.ndarray:
        """Which images must keep their top-1: those whose expected top-1 leads by more than twice the tolerance.

        Scores that each move by at most the tolerance cannot flip such a top-1; a near tie (a weakly trained model has
        them) may flip within tolerance, so it is judged on its scores alone.
        """
        top2 = -np.sort(-self.probabilities.astype(np.float64), axis=1)[:, :2]
        lead = top2[:, 0] - (top2[:, 1] if top2.shape[1] > 1 else 0.0)
        return np.asarray(lead > 2 * self.tolerance)


@dataclass
class GoldenReport:
    ok: bool
    images: int
    top1_agreement: float
    max_drift: float
    tolerance: float
    problems: list[str] = field(default_factory=list)  # one line each: what is wrong and the likely cause

    def summary(self) -> str:
        head = (f"golden set: {self.images} images, top-1 agreement {self.top1_agreement:.0%}, "
                f"largest score drift {self.max_drift:.4f} (tolerance {self.tolerance:g})")
        return head if self.ok else head + "; " + "; ".join(self.problems)


def tolerance_for(precision: str) -> float:
    """The score tolerance of a precision ("int8" also for edgetpu, int8 with any I/O type)."""
    key = "int8" if precision.startswith(("int8", "edgetpu")) else precision
    if key not in TOLERANCES:
        raise ModelError(f"precision '{precision}' has no golden-set tolerance", f"Use one of: {', '.join(TOLERANCES)}")
    return TOLERANCES[key]


def select_golden(probabilities: np.ndarray, count: int = DEFAULT_COUNT, margin: float = 0.0) -> np.ndarray:
    """Indices of up to `count` images whose top-1 leads the runner-up by more than `margin`, spread over predicted classes.

    A clear margin keeps a check from failing on a near tie that any rounding flips.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    top2 = -np.sort(-probabilities, axis=1)[:, :2]
    lead = top2[:, 0] - (top2[:, 1] if probabilities.shape[1] > 1 else 0.0)
    clear = np.flatnonzero(lead > margin)
    predicted = probabilities.argmax(axis=1)
    ranked = clear[np.argsort(-lead[clear], kind="stable")]
    by_class = {int(c): [int(i) for i in ranked if predicted[i] == c] for c in np.unique(predicted[clear])}
    chosen: list[int] = []
    while len(chosen) < count and any(by_class.values()):
        for picks in by_class.values():  # one per predicted class per round: every class the set can reach
            if picks and len(chosen) < count:
                chosen.append(picks.pop(0))
    return np.asarray(sorted(chosen), dtype=np.int64)


def make_golden(images: np.ndarray, probabilities: np.ndarray, labels: list[str], precision: str,
                count: int = DEFAULT_COUNT, source: str = "", runtime: dict[str, str] | None = None) -> GoldenSet:
    """A golden set of up to `count` images from held-out `images` and the validated run's `probabilities`: clear-margin
    images first (a top-1 that leads by more than twice the tolerance), spread over the predicted classes; a weakly
    trained model with fewer of them gets its clearest near ties too (GoldenSet.decisive: checked on scores only).

    runtime: what computed `probabilities` (`edgecls.runtime.common.describe_runtime(backend)`); `source` defaults to
    its one-line summary.
    """
    images, probabilities = np.asarray(images), np.asarray(probabilities, dtype=np.float32)
    _check_arrays(images, probabilities, labels, "the golden images")
    tolerance = tolerance_for(precision)
    picks = select_golden(probabilities, count, margin=2 * tolerance)
    if len(picks) < count:
        rest = np.setdiff1d(np.arange(len(images)), picks)
        picks = np.sort(np.concatenate([picks, rest[select_golden(probabilities[rest], count - len(picks), margin=0.0)]]))
    if len(picks) == 0:
        raise ModelError(f"none of the {len(images)} held-out images has a top-1 lead above 0 (every one is a tie)",
                         "Pass more held-out images, or a model that has trained longer")
    runtime = {str(k): str(v) for k, v in (runtime or {}).items()}
    return GoldenSet(images[picks], probabilities[picks], list(labels), precision, tolerance, source or runtime_summary(runtime),
                     runtime=runtime)


def runtime_summary(runtime: dict[str, str]) -> str:
    """One line for a describe_runtime() dict, e.g. "litert 2.3.0 on cpu, Linux x86_64, Python 3.11.2"; "" for {}."""
    if not runtime:
        return ""
    device = runtime.get("device", "?") + (f" + {runtime['delegate']} delegate" if runtime.get("delegate") else "")
    return (f"{runtime.get('runtime', '?')} {runtime.get('version', '?')} on {device}, "
            f"{runtime.get('system', '?')} {runtime.get('machine', '?')}, Python {runtime.get('python', '?')}")


def _check_arrays(images: np.ndarray, probabilities: np.ndarray, labels: list[str], what: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ModelError(f"{what} are {images.dtype} {images.shape}, expected uint8 (N, height, width, 3) RGB",
                         "Resize them to the model's input size")
    if probabilities.shape != (len(images), len(labels)):
        raise ModelError(f"{what} have scores of shape {probabilities.shape}, expected ({len(images)}, {len(labels)})",
                         "Give one score per class for every image")


def save_golden(golden: GoldenSet, where: str | Path) -> Path:
    """Write golden.npz into folder `where` (or beside the artifact file `where`), atomically."""
    from edgecls.fsutil import atomic_path

    where = Path(where)
    path = (where if where.is_dir() else where.parent) / GOLDEN_FILE
    info = {"golden_version": GOLDEN_VERSION, "labels": golden.labels, "precision": golden.precision,
            "tolerance": golden.tolerance, "source": golden.source, "top_k": golden.top_k, "runtime": golden.runtime}
    indices, scores = golden.expected_top()
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, images=golden.images, probabilities=golden.probabilities.astype(np.float32),
                            top_indices=indices, top_scores=scores.astype(np.float32), info=np.array(json.dumps(info)))
    return path


def load_golden(where: str | Path) -> GoldenSet:
    """The golden set in folder `where` or beside the artifact `where`; ModelError when missing or damaged."""
    where = Path(where)
    path = (where if where.is_dir() else where.parent) / GOLDEN_FILE
    if not path.is_file():
        raise ModelError(f"no {GOLDEN_FILE} at '{path}'", "Export the artifact again: every export stores its golden set beside it")
    try:
        with np.load(path, allow_pickle=False) as data:
            info: Any = json.loads(str(data["info"]))
            images, probabilities = data["images"], data["probabilities"]
        if not isinstance(info, dict):
            raise ValueError("its info is not a JSON object")
        if int(info.get("golden_version", 0)) > GOLDEN_VERSION:
            raise ModelError(f"'{path}' has golden_version {info['golden_version']}, newer than this edgecls reads", "Upgrade edgecls")
        labels, runtime = info["labels"], info.get("runtime") or {}
        if not isinstance(labels, list) or not isinstance(runtime, dict):
            raise ValueError("its labels or runtime have the wrong type")
        _check_arrays(images, probabilities, labels, f"'{path}'")
        return GoldenSet(images, probabilities, [str(label) for label in labels], str(info["precision"]), float(info["tolerance"]),
                         str(info.get("source", "")), int(info.get("top_k", TOP_K)), {str(k): str(v) for k, v in runtime.items()})
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ModelError(f"'{path}' is not a readable golden set ({exc})", "Export the artifact again") from exc


def check_golden(golden: GoldenSet, outputs: np.ndarray, labels: list[str] | None = None,
                 preprocessed: np.ndarray | None = None, run: Runner | None = None) -> GoldenReport:
    """Compare a runtime's `outputs` for golden.images with the expected scores, and diagnose a failure.

    labels: the label list the runtime reports (from the artifact's metadata); preprocessed: the runtime's
    outputs when the same images go through its own preprocessing path; run: the runtime itself (raw
    golden pixels -> scores), used to test which input mistake reproduces a mismatch.
    """
    problems = label_problems(golden.labels, labels) if labels is not None else []
    outputs = np.asarray(outputs, dtype=np.float64)
    expected = golden.probabilities.astype(np.float64)
    if outputs.shape != expected.shape:
        problems.append(f"the runtime returned scores of shape {outputs.shape}, the golden set expects {expected.shape}: "
                        "a different model or class count")
        return GoldenReport(False, len(expected), 0.0, float("inf"), golden.tolerance, problems)
    if not np.all(np.isfinite(outputs)):
        problems.append("the runtime returned NaN or infinite scores: the runtime or its delegate computes garbage")
        return GoldenReport(False, len(expected), 0.0, float("inf"), golden.tolerance, problems)
    agreement, drift = _compare(golden, outputs)
    good = agreement == 1.0 and drift <= golden.tolerance
    if not good:
        problems.extend(_diagnose(golden, outputs, agreement, drift, run))
    if preprocessed is not None:
        pre_agreement, pre_drift = _compare(golden, np.asarray(preprocessed, dtype=np.float64))
        if good and (pre_agreement < 1.0 or pre_drift > golden.tolerance):
            problems.append(f"preprocessing drift: the golden pixels fed straight in agree, but through the runtime's "
                            f"preprocessing top-1 agreement is {pre_agreement:.0%} and scores drift {pre_drift:.4f}: "
                            "check resize, colour order and normalisation")
    return GoldenReport(not problems, len(expected), agreement, drift, golden.tolerance, problems)


def _compare(golden: GoldenSet, outputs: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement on the decisive images, 1.0 when there are none; largest drift on every image's expected top-k)."""
    indices, scores = golden.expected_top()
    decisive = golden.decisive()
    agreement = float(np.mean(outputs.argmax(axis=1)[decisive] == indices[decisive, 0])) if decisive.any() else 1.0
    drift = float(np.max(np.abs(np.take_along_axis(outputs, indices, axis=1) - scores)))
    return agreement, drift


def label_problems(expected: list[str], got: list[str]) -> list[str]:
    """What is wrong with the labels a runtime reports (`got`) against the golden set's (`expected`); [] when they match."""
    if got == expected:
        return []
    if len(got) != len(expected):
        return [f"wrong labels: the artifact lists {len(got)} classes, the golden set {len(expected)}"]
    if sorted(got) == sorted(expected):
        first = next(i for i, (a, b) in enumerate(zip(expected, got)) if a != b)
        return [f"wrong labels: the same names in another order (output {first} is '{got[first]}', expected '{expected[first]}')"]
    first = next(i for i, (a, b) in enumerate(zip(expected, got)) if a != b)
    return [f"wrong labels: output {first} is named '{got[first]}', the golden set says '{expected[first]}'"]


# What a client may do to the pixels by mistake, and the input that undoes it for the model (fed through `run`).
_INPUT_MISTAKES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "channels swapped (BGR fed to an RGB model)": lambda x: x[..., ::-1],
}


def _diagnose(golden: GoldenSet, outputs: np.ndarray, agreement: float, drift: float, run: Runner | None) -> list[str]:
    sums = outputs.sum(axis=1)
    if golden.probabilities.sum(axis=1).mean() > 0.99 and not np.allclose(sums, 1.0, atol=0.02):
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        soft_agreement, soft_drift = _compare(golden, shifted / shifted.sum(axis=1, keepdims=True))
        if soft_agreement == 1.0 and soft_drift <= golden.tolerance:
            return ["the runtime returns logits, not probabilities: softmax them (meta 'output' says which)"]
        return [f"the scores do not sum to 1 (they sum to {sums.min():.3f}..{sums.max():.3f}): not this model's probabilities"]
    if run is not None:  # also when only the scores drift: a swap may keep every top-1
        for mistake, undo in _INPUT_MISTAKES.items():
            mistaken = np.asarray(run(np.ascontiguousarray(undo(golden.images))), dtype=np.float64)
            mistaken_agreement, mistaken_drift = _compare(golden, mistaken)
            if mistaken_agreement == 1.0 and mistaken_drift <= golden.tolerance:
                return [f"preprocessing: the outputs are what the model gives for {mistake}"]
    if agreement == 1.0:
        return [f"scores drift {drift:.4f}, beyond the {golden.precision} tolerance {golden.tolerance:g} with the same top-1: "
                f"the runtime or delegate computes differently from the run that made the golden set ({golden.source or 'unknown'})"]
    decisive = int(golden.decisive().sum())
    wrong = int(round((1 - agreement) * decisive))
    return [f"top-1 differs on {wrong} of {decisive} golden images (scores drift {drift:.4f}, tolerance {golden.tolerance:g}): "
            "wrong model, preprocessing (resize, colour order, normalisation applied twice) or a broken runtime/delegate"]
