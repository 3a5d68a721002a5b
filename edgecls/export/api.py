"""`edgecls.export.export(...)` (also `edgecls.export_model(...)`): convert a run (or a pretrained zoo model),
validate each artifact, then publish it.

Each artifact is written into a temp folder and renamed to RUN/export/<target>-<precision>/ only after
validation passed (fsutil.atomic_dir: an edgecls output marker, never replacing a folder edgecls did not
make or one that holds an input); a failed or interrupted export leaves nothing that looks valid (a
failed validation report is kept as RUN/export/<target>-<precision>.failed.json for inspection). Stale
temps of killed exports are swept first; an output that is, or would hold, an input is refused before
any work.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecls.errors import ConfigError, DataError, EdgeclsError, ExportError
from edgecls.export import sources
from edgecls.export.base import ExportRequest, artifact_meta
from edgecls.export.formats import DEFAULTS, Format, check_options, plan_exports
from edgecls.export.report import CalibrationInfo, ExportReport, ExportResult
from edgecls.export.validate import Holdout, validate
from edgecls.fsutil import atomic_dir, check_outputs, check_removable, sweep_stale_temps, write_json
from edgecls.meta import META_FILENAME

REPORT = "export_report.json"
COMMAND = "edgecls export"
# What an export folder made before edgecls marked its outputs holds: such a folder may still be replaced.
KNOWN_FILES = ("model*", META_FILENAME, REPORT)


@dataclass(frozen=True)
class _Job:
    """What every artifact of one export call shares."""

    source: sources.Source
    root: Path
    calibration: Any  # quantize.calibration.CalibrationSet | None
    holdout: Holdout
    max_drop: float | None
    options: dict[str, Any]  # format options the caller gave (None: the format's default)
    threads: int | None
    inputs: dict[str, Path | None]


def export(
    model: str | Path,
    target: str = DEFAULTS.target,
    precision: str | None = None,
    calib: str | Path | None = None,
    calib_size: int = DEFAULTS.calib_size,
    max_drop: float | None = None,
    io_type: str | None = None,
    opset: int | None = None,
    batch: int | None = None,
    holdout_size: int = DEFAULTS.holdout_size,
    seed: int = DEFAULTS.seed,
    threads: int | None = None,
    out: str | Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> list[ExportResult]:
    """Export `model` (run folder or zoo name) to one target or `all`, validating every artifact.

    precision None: each target's default (int8 for edgetpu, which takes nothing else; fp32 otherwise).
    io_type (tflite int8), opset (onnx), batch (openvino): format options, None for the defaults in
    formats.OPTIONS; one that no planned export takes is refused.
    """
    say = on_step or (lambda message: None)
    plan = plan_exports(target, precision)
    options = {"io_type": io_type, "opset": opset, "batch": batch}
    check_options(plan, options)
    if max_drop is not None and not 0 <= max_drop < 1:
        raise ConfigError(f"--max-drop {max_drop} is outside [0, 1)", "Give a fraction: --max-drop 0.01 is one accuracy point")
    if holdout_size < 1:
        raise ConfigError(f"--holdout-size {holdout_size} must be positive", "Use e.g. --holdout-size 1000")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads} must be at least 1", "Pass e.g. --threads 4, or leave it out for the runtime's default")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"--out '{out}' is a file", "Pass a folder path to --out")
    if calib is not None and not Path(calib).is_dir():  # before loading the model and the held-out images
        raise DataError(f"--calib '{calib}' is not a folder", "Pass a folder of representative images")
    quantizing = any(p == "int8" for _, p in plan)
    root = sources.export_root(model, out)
    inputs = sources.source_inputs(model, calib)
    manifest = _manifest_path(root)
    where = "--out" if out is not None else "export folder"
    check_outputs({**{f"{where} {fmt.name}-{prec}": root / f"{fmt.name}-{prec}" for fmt, prec in plan},
                   "calibration manifest": manifest if quantizing else None}, inputs)
    for fmt, prec in plan:  # an existing output folder edgecls may not replace is refused now, not after the conversion
        if (root / f"{fmt.name}-{prec}").exists():
            check_removable(root / f"{fmt.name}-{prec}", inputs, KNOWN_FILES)
    if root.is_dir():
        sweep_stale_temps(root)  # temp folders of exports killed with SIGKILL
    with _noticing_interrupts():  # Ctrl-C stops the export even where a converter swallows it
        source = sources.load_source(model)
        calibration = None
        if quantizing:
            say("building the calibration set")
            exclude = sources.holdout_hashes(source) if calib is not None else set()
            calibration = sources.calibration_set(source, Path(calib) if calib else None, calib_size, seed, exclude)
            from edgecls.quantize.calibration import write_manifest

            write_manifest(calibration, manifest, source.meta, seed)
        say("predicting the held-out images with the Keras model")
        from_builtin = calibration is not None and calib is None and source.run is None  # then validate on the other crops
        holdout = sources.holdout_set(source, holdout_size, seed, calib_from_builtin=from_builtin)
        _raise_if_interrupted()

        job = _Job(source, root, calibration, holdout, max_drop, options, threads, inputs)
        results = []
        for fmt, prec in plan:
            say(f"exporting {fmt.name} {prec}")
            results.append(_export_one(job, fmt, prec))
        return results


def _manifest_path(root: Path) -> Path:
    from edgecls.quantize.calibration import manifest_path

    return manifest_path(root)


_INTERRUPTED = threading.Event()


@contextlib.contextmanager
def _noticing_interrupts() -> Iterator[None]:
    """Remember a Ctrl-C, even one that a converter's native code turns into its own error or swallows
    (OpenVINO's frontend reports it as a RuntimeError): the export must stop, not carry on."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        _INTERRUPTED.set()
        previous(signum, frame)

    def unraisable(info: Any) -> None:  # a KeyboardInterrupt raised inside a __del__ is dropped by Python, not by us
        if not (isinstance(info.exc_value, KeyboardInterrupt) and _INTERRUPTED.is_set()):
            previous_hook(info)

    previous_hook = sys.unraisablehook
    _INTERRUPTED.clear()
    signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook
        _INTERRUPTED.clear()


def _raise_if_interrupted() -> None:
    if _INTERRUPTED.is_set():
        raise KeyboardInterrupt


def _export_one(job: _Job, fmt: Format, precision: str) -> ExportResult:
    source, calibration = job.source, job.calibration
    name = f"{fmt.name}-{precision}"
    final = job.root / name
    failed_report = job.root / f"{name}.failed.json"
    start = time.perf_counter()
    report = ExportReport(target=fmt.name, precision=precision, source=str(source.run or source.name))
    options = {key: value for key, value in job.options.items() if value is not None and fmt.takes(key, precision)}
    try:
        with atomic_dir(final, inputs=job.inputs, command=COMMAND, known_files=KNOWN_FILES) as tmp:
            int8 = calibration is not None and precision == "int8"
            accuracy_control = job.max_drop is not None and job.holdout.labels is not None
            request = ExportRequest(
                model=source.model, meta=source.meta, precision=precision, out_dir=tmp,
                calibration=calibration.images if calibration is not None else None, max_drop=job.max_drop,
                holdout=(job.holdout.images, job.holdout.labels) if accuracy_control else None, **options,  # type: ignore[arg-type]
            )
            artifact = fmt.load_writer()(request)
            artifact_meta(source.meta, fmt.name, precision, artifact.input_quantization, artifact.output_quantization).save(tmp)
            files = [artifact.path, *artifact.extra_files]
            report.artifact, report.files = artifact.path.name, [p.name for p in files]
            report.size_bytes = sum(p.stat().st_size for p in files)
            report.fp32_weights_bytes = int(source.model.count_params()) * 4
            report.notes = artifact.notes
            if int8:
                report.calibration = CalibrationInfo(calibration.source, len(calibration), str(calibration.manifest))
            report.size_ratio_vs_fp32_weights = round(report.size_bytes / report.fp32_weights_bytes, 4)
            # A compiled *_edgetpu.tflite needs a Coral to run: validate the CPU model it was compiled from.
            checked = tmp / artifact.notes.get("cpu_model", artifact.path.name)
            report.validation = validate(checked, fmt.name, precision, job.holdout, source.meta.labels, job.max_drop, job.threads)
            report.validated_file = checked.name
            report.export_seconds = round(time.perf_counter() - start, 2)
            if not report.validation.passed:
                raise ExportError(f"{name} failed validation: " + "; ".join(report.validation.failures), f"See {failed_report}")
            _raise_if_interrupted()  # before the rename: an interrupted export leaves nothing that looks valid
            write_json(tmp / REPORT, report.as_dict())
        failed_report.unlink(missing_ok=True)
        return ExportResult(fmt.name, precision, final, final / artifact.path.name, report.size_bytes, report.export_seconds, report)
    except Exception as exc:
        if _INTERRUPTED.is_set():
            raise KeyboardInterrupt from exc
        if not isinstance(exc, EdgeclsError):
            raise
        report.error = str(exc)
        if report.validation is not None:
            write_json(failed_report, report.as_dict())
        seconds = round(time.perf_counter() - start, 2)
        return ExportResult(fmt.name, precision, None, None, report.size_bytes or 0, seconds, report, str(exc))


__all__ = ["ExportResult", "export"]
