"""`edgecls verify`: re-run an artifact's golden set through the runtime installed on this machine; say what is wrong.

The golden set (golden.npz beside the artifact, edgecls.metadata.golden) holds a few held-out images at the model's
input size and the scores the validated export gave them, with the runtime that computed those scores. Here the
images go through edgecls' own preprocessing (colour order and normalisation from the artifact's meta; no resize:
they are at the input size already) and the runtime and delegate that `predict` and `camera` would use. The check
fails when a top-1 differs or a score drifts beyond the precision's tolerance, and names the likely cause: wrong
labels, preprocessing drift (the same pixels fed straight in agree), a golden set made for another precision or
model, the runtime, version, device or machine that differs from the run that made the set, an Edge TPU missing.

numpy only (no TensorFlow): a Raspberry Pi with edgecls[pi] runs it, and install.sh runs it as its last step.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import EdgeclsError, MissingDependencyError, ModelError
from edgecls.metadata.golden import (
    GOLDEN_FILE,
    GoldenReport,
    GoldenSet,
    check_golden,
    label_problems,
    load_golden,
    runtime_summary,
    tolerance_for,
)
from edgecls.preprocess import prepare
from edgecls.runtime import RUNTIMES, EdgeTPUError, load_backend
from edgecls.runtime.base import Backend
from edgecls.runtime.common import BackendRunError, describe_runtime

VERIFY_FAILED = 1  # exit code of a verification that ran and failed (2 stays "bad input")
# describe_runtime() keys whose difference can change the numbers, in the order a diagnosis names them
COMPARED = ("runtime", "version", "device", "delegate", "machine", "system")


class VerificationError(EdgeclsError):
    """The artifact ran its golden set on this machine and failed: the message holds the diagnosis."""

    exit_code = VERIFY_FAILED


@dataclass
class ImageCheck:
    """One golden image: the expected top-1 and what this machine gave."""

    index: int
    expected: str
    expected_score: float
    got: str
    got_score: float  # this run's score of its own top-1
    drift: float  # largest |score - expected| over the expected top-k classes
    ok: bool
    decisive: bool = True  # False: a near tie in the golden set, whose top-1 may change within the tolerance


@dataclass
class VerifyResult:
    artifact: str
    golden: str
    ok: bool
    precision: str  # the golden set's
    tolerance: float
    images: int
    top1_agreement: float | None  # None until the golden images ran
    max_drift: float | None
    made_with: dict[str, str]  # the run that made the golden set (describe_runtime), or {"source": ...} for older sets
    this_run: dict[str, str]  # {} when the artifact did not load
    meta_source: str
    problems: list[str] = field(default_factory=list)
    checks: list[ImageCheck] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        state = "passed" if self.ok else "FAILED"
        if self.top1_agreement is None:
            return f"verify {state}: the {self.images} golden images did not run ({self.precision} tolerance {self.tolerance:g})"
        if self.max_drift is None:
            return f"verify {state}: the scores of the {self.images} golden images cannot be compared (see the error)"
        return (f"verify {state}: {self.images} golden images, top-1 agreement {self.top1_agreement:.0%}, largest score drift "
                f"{self.max_drift:.4f} ({self.precision} tolerance {self.tolerance:g})")


def resolve_artifact(path: str | Path) -> Path:
    """The artifact file: `path` itself, or the one artifact in the folder `path` (an export folder)."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in RUNTIMES and not p.name.startswith(".") and p.is_file())
        if len(found) != 1:
            what = f"{len(found)} artifacts ({', '.join(p.name for p in found)})" if found else "no .tflite, .onnx or .xml artifact"
            raise ModelError(f"folder '{path}' holds {what}", "Pass the artifact file itself, e.g. EXPORT/tflite-int8/model.tflite")
        return found[0]
    if not path.exists():
        raise ModelError(f"artifact '{path}' does not exist", "Pass an exported .tflite, .onnx or .xml file (made by 'edgecls export')")
    if path.suffix.lower() not in RUNTIMES:
        raise ModelError(f"'{path}' is not an exported artifact (suffix '{path.suffix}')", f"Pass a {', '.join(RUNTIMES)} file")
    return path


def verify(artifact: str | Path, device: str = "cpu", threads: int | None = None) -> VerifyResult:
    """Run the golden set beside `artifact` through this machine's runtime on `device`; the result says what is wrong.

    Raises ModelError (bad input: no artifact, no or damaged golden.npz); a model that does not load or run here is a
    failed result (Edge TPU missing, runtime missing, labels that do not fit the model...), not an exception.
    """
    path = resolve_artifact(artifact)
    golden = load_golden(path)
    made_with = golden.runtime or ({"source": golden.source} if golden.source else {})
    result = VerifyResult(str(path), str(path.parent / GOLDEN_FILE), False, golden.precision, golden.tolerance, len(golden.images),
                          None, None, made_with, {}, "")
    try:
        backend = load_backend(path, device=device, threads=threads)
    except EdgeTPUError as exc:
        result.problems.append(f"Edge TPU missing: {exc}")
        return result
    except MissingDependencyError as exc:
        result.problems.append(f"no runtime for {path.suffix} files on this machine: {exc}")
        return result
    except ModelError as exc:
        result.problems.append(f"the artifact does not load here: {exc}")
        return result
    with backend:
        result.this_run = describe_runtime(backend)
        result.meta_source = str(getattr(backend, "meta_source", ""))
        _check(golden, backend, result)
    return result


def _check(golden: GoldenSet, backend: Backend, result: VerifyResult) -> None:
    meta = backend.meta
    result.problems.extend(label_problems(golden.labels, list(meta.labels)))
    result.problems.extend(_precision_problems(golden, meta.precision, result.meta_source))
    size = tuple(golden.images.shape[1:3])
    if any(want is not None and got != want for got, want in zip(size, backend.input_hw)):
        height, width = backend.input_hw
        result.problems.append(f"the golden images are {size[0]}x{size[1]} but the model takes {height}x{width}: "
                               "the golden set belongs to another model (a different model under this name?)")
        return
    # the runtime's own path for pixels already at the input size: colour order and normalisation from its meta
    as_is = dataclasses.replace(meta, crop_fraction=1.0)

    def through_pipeline(images: np.ndarray) -> np.ndarray:
        return backend.run(np.stack([prepare(image, as_is) for image in images]))

    try:
        outputs = through_pipeline(golden.images)
        raw = backend.run(golden.images.astype(np.float32))
    except (BackendRunError, ModelError) as exc:
        result.problems.append(f"the artifact fails while running here: {exc}")
        return
    numbers = check_golden(golden, outputs, run=through_pipeline)
    result.top1_agreement = numbers.top1_agreement
    result.max_drift = numbers.max_drift if np.isfinite(numbers.max_drift) else None  # inf: another shape, NaN scores
    if outputs.shape == golden.probabilities.shape:
        result.checks = _image_checks(golden, outputs, list(meta.labels))
    if not numbers.ok:
        result.problems.extend(_numeric_problems(golden, numbers, check_golden(golden, raw), result))
    result.ok = not result.problems


def _precision_problems(golden: GoldenSet, precision: str, meta_source: str) -> list[str]:
    """A golden set made for another precision judges the artifact with the wrong tolerance: it belongs to another export."""
    try:
        tolerance_for(precision)
    except ModelError:
        return []  # an artifact precision without a tolerance (an older or foreign meta): nothing to compare
    if _family(precision) == _family(golden.precision):
        return []
    return [f"the golden set was made for {golden.precision} (tolerance {golden.tolerance:g}) but {meta_source or 'the meta'} says "
            f"the artifact is {precision}: the golden set belongs to another export; export again so both come from one run"]


def _family(precision: str) -> str:
    return "int8" if precision.startswith(("int8", "edgetpu")) else precision


def _numeric_problems(golden: GoldenSet, numbers: GoldenReport, raw: GoldenReport, result: VerifyResult) -> list[str]:
    """Why the scores differ: the preprocessing when the same pixels fed straight in agree, else the diagnosis plus
    what differs between the run that made the golden set and this one."""
    if raw.ok:
        named = [p for p in numbers.problems if p.startswith("preprocessing")]  # e.g. "what the model gives for channels swapped"
        return [f"preprocessing drift: the golden pixels fed straight into the model agree, but through edgecls' preprocessing with "
                f"{result.meta_source or 'its meta'} top-1 agreement is {numbers.top1_agreement:.0%} and scores drift "
                f"{numbers.max_drift:.4f}: check color_order, normalization_baked_in, mean and std there", *named]
    problems = list(numbers.problems)
    if not any(p.startswith("preprocessing") or "logits" in p or "NaN" in p for p in problems):
        problems.append(runtime_difference(result.made_with, result.this_run))
    return problems


def runtime_difference(made_with: dict[str, str], this_run: dict[str, str]) -> str:
    """One phrase comparing the run that made the golden set with this one, naming what differs."""
    if "runtime" not in made_with:
        source = made_with.get("source", "")
        return (f"the golden set does not record its runtime{f' ({source})' if source else ''}; "
                f"this run: {runtime_summary(this_run)}")
    changed = [f"{key} {made_with.get(key) or 'none'} -> {this_run.get(key) or 'none'}" for key in COMPARED
               if made_with.get(key, "") != this_run.get(key, "")]
    if not changed:
        return (f"same runtime, version, device and machine as the run that made the golden set ({runtime_summary(this_run)}): "
                "the artifact or its metadata changed since the export (a different model under this name?)")
    return (f"made with {runtime_summary(made_with)}; here {runtime_summary(this_run)} ({', '.join(changed)}): "
            "a runtime, delegate or CPU that computes differently")


def _image_checks(golden: GoldenSet, outputs: np.ndarray, labels: list[str]) -> list[ImageCheck]:
    indices, scores = golden.expected_top()
    decisive = golden.decisive()  # a near tie may change its top-1 within tolerance: judged on its scores
    rows = []
    for i, (expected_top, expected_scores, got) in enumerate(zip(indices, scores, np.asarray(outputs, np.float64))):
        best = int(got.argmax())
        drift = float(np.max(np.abs(got[expected_top] - expected_scores)))
        name = labels[best] if best < len(labels) else f"class {best}"
        rows.append(ImageCheck(i, golden.labels[int(expected_top[0])], float(expected_scores[0]), name, float(got[best]), drift,
                               (best == int(expected_top[0]) or not decisive[i]) and drift <= golden.tolerance, bool(decisive[i])))
    return rows


def golden_from_images(artifact: str | Path, images: list[Path], precision: str | None = None, count: int = 8,
                       device: str = "cpu") -> Path:
    """Make and save golden.npz beside `artifact` from held-out image files run through it here (its validated runtime).

    The images are resized as the artifact's meta says (the golden set keeps them at the input size, RGB), the
    scores are this runtime's, and the runtime is recorded. precision: the artifact's meta precision by default.
    """
    from edgecls.metadata.golden import make_golden, save_golden
    from edgecls.preprocess import load_for_model

    path = resolve_artifact(artifact)
    with load_backend(path, device=device) as backend:
        meta = backend.meta
        pixels = np.stack([load_for_model(image, meta.input_size, meta.crop_fraction, meta.interpolation) for image in images])
        as_is = dataclasses.replace(meta, crop_fraction=1.0)  # what verify feeds: pixels at the input size
        scores = backend.run(np.stack([prepare(image, as_is) for image in pixels]))
        golden = make_golden(pixels, scores, list(meta.labels), precision or meta.precision, count, runtime=describe_runtime(backend))
    return save_golden(golden, path)


def failure_message(result: VerifyResult) -> str:
    """The one-line diagnosis of a failed result."""
    return f"verify failed for '{result.artifact}': " + "; ".join(result.problems)
