"""`edgecls.export.export(...)` (also `edgecls.export_model(...)`): convert a run (or a pretrained zoo model),
validate each artifact, then publish it.

One artifact goes through these steps (`_export_one`), in a temp folder:
1. the format's writer;
2. `_post_process`: the one place an artifact is changed after its writer and before validation: meta.json beside
   it, the standard metadata of its format embedded in it (artifact_metadata.py);
3. `_judge`: validation against Keras on the judging held-out images, with the accuracy gate for
   quantized precisions (gate.py);
4. int8: the per-layer sensitivity report (sensitivity.py, probes.py), export_report.json + a PNG;
5. int8 that failed the gate: the fallback (fallback.py) keeps the most sensitive layers float, chosen
   on the separate tuning images; its candidate goes through steps 2-3 again;
6. an artifact that passed: golden.npz beside it (the scores `edgecls verify` checks on a device).
The temp folder is renamed to RUN/export/<target>-<precision>/ only when the artifact passed (fsutil.atomic_dir:
an edgecls output marker, never replacing a folder edgecls did not make or one that holds an input). One
that failed is kept aside, never published: RUN/export/<target>-<precision>.rejected/ holds it with its
report (why, and what to try). A failed or interrupted export leaves nothing that looks valid. Stale
temps of killed exports are swept first; an output that is, or would hold, an input is refused before
any work.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgecls.errors import ConfigError, DataError, EdgeclsError, ExportError
from edgecls.export import fallback, sources
from edgecls.export.artifact_metadata import GOLDEN_SUFFIXES, embed_artifact, store_golden, with_metadata
from edgecls.export.base import Artifact, ExportRequest, artifact_meta
from edgecls.export.formats import DEFAULTS, Format, check_fallback_budget, check_gate, check_options, plan_exports
from edgecls.export.gate import Gate, advice, latency_ms
from edgecls.export.interrupts import interrupted, noticing_interrupts, raise_if_interrupted
from edgecls.export.probes import PROBES
from edgecls.export.report import CalibrationInfo, ExportReport, ExportResult, GateReport, ValidationReport
from edgecls.export.validate import Holdout, validate
from edgecls.fsutil import (
    OUTPUT_MARKER,
    TEMP_PREFIX,
    atomic_dir,
    check_outputs,
    check_removable,
    remove_output_folder,
    sweep_stale_temps,
    write_json,
)

REPORT = "export_report.json"
REJECTED = ".rejected"  # RUN/export/<target>-<precision>.rejected/: an artifact that failed, kept aside with its report
COMMAND = "edgecls export"


@dataclass(frozen=True)
class _Job:
    """What every artifact of one export call shares."""

    source: sources.Source
    root: Path
    calibration: Any  # quantize.calibration.CalibrationSet | None
    holdout: Holdout  # judges every artifact
    tuning: Holdout | None  # the int8 fallback tunes on it (never judging images)
    gate: Gate
    budget: fallback.Budget
    options: dict[str, Any]  # format options the caller gave (None: the format's default)
    threads: int | None
    inputs: dict[str, Path | None]
    say: Callable[[str], None] = lambda message: None


def export(
    model: str | Path,
    target: str = DEFAULTS.target,
    precision: str | None = None,
    calib: str | Path | None = None,
    calib_size: int = DEFAULTS.calib_size,
    max_drop: float | None = DEFAULTS.max_drop,
    io_type: str | None = None,
    opset: int | None = None,
    batch: int | None = None,
    holdout_size: int = DEFAULTS.holdout_size,
    seed: int = DEFAULTS.seed,
    threads: int | None = None,
    out: str | Path | None = None,
    on_step: Callable[[str], None] | None = None,
    min_agreement: float | None = DEFAULTS.min_agreement,
    fallback_layers: int = DEFAULTS.fallback_layers,
    fallback_tries: int = DEFAULTS.fallback_tries,
    fallback_seconds: float = DEFAULTS.fallback_seconds,
    allow_cpu_ops: bool | None = None,
) -> list[ExportResult]:
    """Export `model` (run folder or zoo name) to one target or `all`, validating every artifact.

    precision None: each target's default (int8 for edgetpu, which takes nothing else; fp32 otherwise).
    io_type (tflite int8), opset (onnx), batch (openvino), allow_cpu_ops (edgetpu): format options, None for the defaults in
    formats.OPTIONS; one that no planned export takes is refused.
    max_drop / min_agreement: the accuracy gate of quantized exports (None turns a check off).
    fallback_layers / fallback_tries / fallback_seconds: the int8 fallback's budget (0: no fallback).
    An artifact that fails is not published: its result has `error` set and `report.rejected` names where it was kept.
    """
    say = on_step or (lambda message: None)
    plan = plan_exports(target, precision)
    options = {"io_type": io_type, "opset": opset, "batch": batch, "allow_cpu_ops": allow_cpu_ops}
    check_options(plan, options)
    check_gate(max_drop, min_agreement)
    check_fallback_budget(fallback_layers, fallback_tries, fallback_seconds)
    if holdout_size < 1:
        raise ConfigError(f"--holdout-size {holdout_size} must be positive", "Use e.g. --holdout-size 1000")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads} must be at least 1", "Pass e.g. --threads 4, or leave it out for the runtime's default")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"--out '{out}' is a file", "Pass a folder path to --out")
    if calib is not None and not Path(calib).is_dir():  # before loading the model and the held-out images
        raise DataError(f"--calib '{calib}' is not a folder", "Pass a folder of representative images")
    quantizing = any(p == "int8" for _, p in plan)
    if quantizing:
        from edgecls.quantize.calibration import check_calib_size

        check_calib_size(calib_size)  # before the model (and TensorFlow) is loaded
    if any(fmt.name == "imx500" for fmt, _ in plan):
        from edgecls.export.imx500_toolchain import check_java

        check_java()  # Sony's converter runs on Java 17: a missing one is said before the model loads
    root = sources.export_root(model, out)
    inputs = sources.source_inputs(model, calib)
    manifest = _manifest_path(root)
    where = "--out" if out is not None else "export folder"
    outputs = {f"{where} {fmt.name}-{prec}{suffix}": root / f"{fmt.name}-{prec}{suffix}" for fmt, prec in plan for suffix in ("", REJECTED)}
    check_outputs({**outputs, "calibration manifest": manifest if quantizing else None}, inputs)
    for folder in outputs.values():  # an existing output folder edgecls may not replace is refused now, not after the conversion
        if folder.exists():
            check_removable(folder, inputs)
    if root.is_dir():
        sweep_stale_temps(root)  # temp folders of exports killed with SIGKILL
    budget = fallback.Budget(fallback_layers, fallback_tries, fallback_seconds)
    with noticing_interrupts():  # Ctrl-C stops the export even where a converter swallows it
        # A run's calibration set needs only its meta.json and splits: built before the model (and TensorFlow) loads, a
        # --calib folder (or a train split) without enough usable images is refused in a second, not after TensorFlow's import.
        run = sources.load_run_meta(model) if quantizing else None
        calibration = _calibration_set(run, calib, calib_size, seed, say) if run is not None else None
        source = sources.load_source(model)
        if quantizing:
            if calibration is None:
                calibration = _calibration_set(source, calib, calib_size, seed, say)
            from edgecls.quantize.calibration import write_manifest

            write_manifest(calibration, manifest, source.meta, seed)
        say("predicting the held-out images with the Keras model")
        holdout = sources.holdout_set(source, holdout_size, seed)
        gated = max_drop is not None or min_agreement is not None
        falls_back = quantizing and gated and not budget.off and any(p == "int8" and fmt.fallback for fmt, p in plan)
        tuning = sources.tuning_set(source, holdout_size, seed) if falls_back else None
        raise_if_interrupted()

        job = _Job(source, root, calibration, holdout, tuning, Gate(max_drop, min_agreement), budget, options, threads, inputs, say)
        results = []
        for fmt, prec in plan:
            say(f"exporting {fmt.name} {prec}")
            results.append(_export_one(job, fmt, prec))
        return results


def _calibration_set(source: sources.Source, calib: str | Path | None, size: int, seed: int, say: Callable[[str], None]) -> Any:
    say("building the calibration set")
    exclude = sources.holdout_hashes(source) if calib is not None else set()
    return sources.calibration_set(source, Path(calib) if calib else None, size, seed, exclude)


def _manifest_path(root: Path) -> Path:
    from edgecls.quantize.calibration import manifest_path

    return manifest_path(root)


def _export_one(job: _Job, fmt: Format, precision: str) -> ExportResult:
    """Write, post-process, judge (and for int8: measure sensitivity, fall back), then publish or keep aside."""
    name = f"{fmt.name}-{precision}"
    final, aside = job.root / name, job.root / f"{name}{REJECTED}"
    start = time.perf_counter()
    report = ExportReport(target=fmt.name, precision=precision, source=str(job.source.run or job.source.name))
    options = {key: value for key, value in job.options.items() if value is not None and fmt.takes(key, precision)}
    int8 = job.calibration is not None and precision == "int8"
    request = ExportRequest(
        model=job.source.model, meta=job.source.meta, precision=precision, out_dir=job.root,
        calibration=job.calibration.images if int8 else None, cache={}, **options,
    )
    try:
        with atomic_dir(final, inputs=job.inputs, command=COMMAND) as tmp:
            artifact = fmt.load_writer()(replace(request, out_dir=tmp))  # 1. the writer
            artifact = _post_process(artifact, tmp, job)  # 2. changes after the writer, before validation
            validation = _judge(report, artifact, tmp, job, fmt, precision)  # 3. validation and the accuracy gate
            if int8:
                report.calibration = CalibrationInfo(job.calibration.source, len(job.calibration), str(job.calibration.manifest))
                if fmt.name in PROBES:  # imx500: Sony's toolchain has no per-layer probe here
                    _sensitivity(report, request, artifact, tmp, job, fmt)  # 4. per-layer error, report and PNG
                if not validation.passed and _may_fall_back(job, fmt, report):
                    artifact, validation = _fall_back(report, request, artifact, tmp, job, fmt)  # 5. float layers; 2-3 again
            if validation.quantized:
                report.gate = GateReport(job.gate.max_drop, job.gate.min_agreement, job.holdout.source, validation.passed,
                                         [] if validation.passed else _advice(report, job, fmt, precision))
            report.export_seconds = round(time.perf_counter() - start, 2)
            if not validation.passed:
                raise_if_interrupted()  # an interrupted export keeps nothing aside either
                _keep_aside(report, tmp, aside, job)
                tip = f". Try: {report.gate.advice[0]}" if report.gate and report.gate.advice else ""
                failures = "; ".join(validation.failures)
                raise ExportError(f"{name} failed validation: {failures}", f"Not published: kept aside in {aside}{tip}")
            _store_golden(report, artifact, tmp, job)  # 6. the golden set of `edgecls verify`, from the validated artifact
            raise_if_interrupted()  # before the rename: an interrupted export leaves nothing that looks valid
            write_json(tmp / REPORT, report.as_dict())
        _forget_rejected(job.root, name, job.inputs)
        return ExportResult(fmt.name, precision, final, final / artifact.path.name, report.size_bytes or 0, report.export_seconds or 0.0,
                            report)
    except Exception as exc:
        if interrupted():
            raise KeyboardInterrupt from exc
        if not isinstance(exc, EdgeclsError):
            raise
        report.error = str(exc)
        seconds = round(time.perf_counter() - start, 2)
        return ExportResult(fmt.name, precision, None, None, report.size_bytes or 0, seconds, report, str(exc))


def _post_process(artifact: Artifact, folder: Path, job: _Job) -> Artifact:
    """The one place an artifact is changed after its writer and before validation (every fallback candidate that is
    judged passes here too): meta.json beside it, and the standard metadata of its format embedded in it (an Edge TPU
    export: in the compiled model and in the CPU model it came from). The golden set waits for validation (_store_golden)."""
    artifact_meta(job.source.meta, artifact.format, artifact.precision, artifact.input_quantization,
                  artifact.output_quantization).save(folder)
    if "metadata" in artifact.notes:  # a fallback candidate: its writer embedded it (artifact_metadata.with_metadata)
        return artifact
    return embed_artifact(artifact, job.source.meta, _source_run(job))


def _source_run(job: _Job) -> str:
    return str(job.source.run) if job.source.run else ""


def _store_golden(report: ExportReport, artifact: Artifact, folder: Path, job: _Job) -> None:
    """golden.npz beside a validated artifact, for `edgecls verify`; a failure is a note (the artifact stays valid)."""
    checked = folder / artifact.notes.get("cpu_model", artifact.path.name)
    if checked.suffix not in GOLDEN_SUFFIXES:  # an artifact edgecls.runtime does not run (imx500): nothing to verify with
        return
    try:
        golden = store_golden(checked, folder, job.holdout.images, job.threads)
    except EdgeclsError as exc:
        report.notes = {**(report.notes or {}), "golden_error": str(exc)}
        job.say(f"warning: no golden set for {artifact.path.name} ({exc}); 'edgecls verify' will not run on it")
        return
    report.files = [*(report.files or []), golden.name]


def _judge(report: ExportReport, artifact: Artifact, folder: Path, job: _Job, fmt: Format, precision: str) -> ValidationReport:
    """Sizes and notes of `artifact`, then its validation on the judging held-out images (the gate for quantized ones)."""
    files = [artifact.path, *artifact.extra_files]
    report.artifact, report.files = artifact.path.name, [p.name for p in files]
    report.size_bytes = sum(p.stat().st_size for p in files)
    # The weights against the fp32 weights: an IR's .bin (its .xml is the graph), else the artifact file itself (a compiled
    # Edge TPU model without the CPU model and log beside it).
    weights = artifact.path.with_suffix(".bin") if artifact.format == "openvino" else artifact.path
    report.weights_bytes = weights.stat().st_size
    report.graph_bytes = artifact.path.stat().st_size if weights != artifact.path else None
    report.fp32_weights_bytes = int(job.source.model.count_params()) * 4
    report.notes = artifact.notes
    report.size_ratio_vs_fp32_weights = round(report.weights_bytes / report.fp32_weights_bytes, 4)
    # A compiled *_edgetpu.tflite needs a Coral to run: validate the CPU model it was compiled from.
    checked = folder / artifact.notes.get("cpu_model", artifact.path.name)
    float_nodes = tuple(artifact.notes.get("fallback_float_nodes", ()))  # what an int8 fallback kept float
    report.validation = validate(checked, fmt.name, precision, job.holdout, job.source.meta.labels, job.gate, job.threads, float_nodes)
    report.validated_file = checked.name
    return report.validation


def _sensitivity(report: ExportReport, request: ExportRequest, artifact: Artifact, folder: Path, job: _Job, fmt: Format) -> None:
    from edgecls.export import sensitivity

    job.say(f"measuring the per-layer int8 error of {fmt.name}")
    began = time.perf_counter()
    checked = folder / artifact.notes.get("cpu_model", artifact.path.name)
    images = sensitivity.pick_images(job.calibration.images, DEFAULTS.sensitivity_images)
    try:
        nodes, run = sensitivity.probe_for(fmt.name, request.cache or {}, checked)
        result = sensitivity.sensitivity_report(fmt.name, nodes, run, images)
    except Exception as exc:  # noqa: BLE001  a diagnostic that cannot read some graph must not fail a valid export
        if interrupted():
            raise
        report.notes = {**(report.notes or {}), "sensitivity_error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        return
    result.plot = sensitivity.write_plot(result, folder / sensitivity.PLOT).name
    result.seconds = round(time.perf_counter() - began, 2)
    report.sensitivity = result
    report.files = [*(report.files or []), result.plot]


def _may_fall_back(job: _Job, fmt: Format, report: ExportReport) -> bool:
    """A format that can keep layers float, a budget, tuning images and a sensitivity ranking to start from."""
    return fmt.fallback is not None and not job.budget.off and job.tuning is not None and report.sensitivity is not None


def _fall_back(report: ExportReport, request: ExportRequest, artifact: Artifact, folder: Path, job: _Job,
               fmt: Format) -> tuple[Artifact, ValidationReport]:
    """Search float layers on the tuning split; the best candidate replaces the full-int8 artifact in `folder` and is judged."""
    from edgecls.export import sensitivity
    from edgecls.export.serving import work_dir

    assert report.sensitivity is not None and job.tuning is not None and report.validation is not None
    scratch = work_dir(folder)
    try:
        embedding = with_metadata(fmt, job.source.meta, _source_run(job))  # candidates are judged as lone files
        result, candidate = fallback.search(embedding, request, report.sensitivity, job.tuning, job.gate, job.budget, scratch,
                                            job.threads, job.say)
        report.fallback = result
        judged = report.validation
        result.full_int8_agreement, result.full_int8_accuracy_drop = judged.top1_agreement, judged.accuracy_drop
        result.full_int8_failures = list(judged.failures)
        if candidate is None:
            return artifact, report.validation  # as judged in step 3
        full_int8 = folder / artifact.notes.get("cpu_model", artifact.path.name)
        result.full_int8_size_bytes = report.size_bytes
        sample = job.holdout.images[0]
        result.full_int8_latency_ms = latency_ms(full_int8, fmt.name, sample, DEFAULTS.latency_runs, job.threads)
        for old in [artifact.path, *artifact.extra_files]:
            old.unlink(missing_ok=True)
        moved = {path: folder / path.name for path in [candidate.path, *candidate.extra_files]}
        for source, target in moved.items():
            os.replace(source, target)
        artifact = replace(candidate, path=moved[candidate.path], extra_files=[moved[p] for p in candidate.extra_files])
        artifact = _post_process(artifact, folder, job)
        validation = _judge(report, artifact, folder, job, fmt, "int8")
        report.files = [*(report.files or []), sensitivity.PLOT]
        result.size_bytes = report.size_bytes
        result.latency_ms = latency_ms(folder / artifact.notes.get("cpu_model", artifact.path.name), fmt.name, sample,
                                       DEFAULTS.latency_runs, job.threads)
        result.latency_note = f"p50 of {DEFAULTS.latency_runs} batch-1 runs through edgecls.runtime on this machine"
        kept = result.candidate.float_nodes if result.candidate else []
        sensitivity.write_plot(report.sensitivity, folder / sensitivity.PLOT, kept)
        return artifact, validation
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _advice(report: ExportReport, job: _Job, fmt: Format, precision: str) -> list[str]:
    validation = report.validation
    assert validation is not None
    agreement = validation.agreement_gated if validation.agreement_gated is not None else validation.top1_agreement
    return advice(fmt.name, precision, job.gate, validation.accuracy_drop, agreement, validation.images,
                  len(job.calibration) if job.calibration is not None else None, report.fallback,
                  fallback_off=job.budget.off and fmt.fallback is not None)


def _keep_aside(report: ExportReport, folder: Path, aside: Path, job: _Job) -> None:
    """Publish what failed to <name>.rejected/ (its own marked folder, replaced by the next failure) with its report."""
    report.rejected = str(aside)
    with atomic_dir(aside, inputs=job.inputs, command=COMMAND) as kept:
        for entry in folder.iterdir():
            if not entry.name.startswith(TEMP_PREFIX) and entry.name != OUTPUT_MARKER:
                os.replace(entry, kept / entry.name)
        write_json(kept / REPORT, report.as_dict())


def _forget_rejected(root: Path, name: str, inputs: dict[str, Path | None]) -> None:
    """A published artifact makes an earlier failure of the same export stale: remove its rejected folder (and the
    .failed.json older versions wrote)."""
    stale = root / f"{name}{REJECTED}"
    if stale.is_dir():
        with contextlib.suppress(EdgeclsError):
            remove_output_folder(stale, inputs)
    (root / f"{name}.failed.json").unlink(missing_ok=True)


__all__ = ["ExportResult", "export"]
