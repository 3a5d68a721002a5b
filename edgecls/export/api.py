"""`edgecls.export(...)`: convert a run (or a pretrained zoo model), validate each artifact, then publish it.

Each artifact is written into a temp folder and renamed to RUN/export/<target>-<precision>/ only after
validation passed; a failed or interrupted export leaves nothing that looks valid (a failed
validation report is kept as RUN/export/<target>-<precision>.failed.json for inspection).
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgecls.errors import ConfigError, DataError, EdgeclsError, ExportError
from edgecls.export.base import PRECISIONS, ExportRequest
from edgecls.export.formats import Format, check_precision, resolve_targets
from edgecls.export.validate import Holdout, validate
from edgecls.fsutil import atomic_dir, write_json
from edgecls.meta import ModelMeta

IO_TYPES = ("uint8", "int8", "float")
REPORT = "export_report.json"


@dataclass
class ExportResult:
    target: str
    precision: str
    folder: Path | None
    artifact: Path | None
    size_bytes: int
    seconds: float
    report: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None


@dataclass
class _Source:
    model: Any
    meta: ModelMeta
    run: Path | None  # None for a zoo model
    name: str


def _load_source(model: str | Path) -> _Source:
    from edgecls.training.run_folder import load_run

    path = Path(model)
    if path.exists():
        keras_model, meta = load_run(path)  # raises a clear ModelError for anything that isn't a run
        return _Source(keras_model, meta, path, path.name)
    from edgecls.predictor import load_classifier

    classifier = load_classifier(str(model))
    return _Source(classifier.model, classifier.meta, None, str(model))


def _calibration(source: _Source, calib: Path | None, size: int, seed: int, exclude: set[str]) -> Any:
    from edgecls.quantize import calibration as cal

    if calib is not None:
        return cal.from_folder(Path(calib), source.meta, size, exclude, seed)
    if source.run is not None:
        return cal.from_run_train_split(source.run, source.meta, size, seed)
    photos = cal.builtin_photos(source.meta)
    return cal.CalibrationSet(photos.images[0::2], photos.source, photos.files[0::2])


def _holdout(source: _Source, size: int, seed: int, calib_from_builtin: bool) -> Holdout:
    from edgecls.quantize.calibration import builtin_photos, stratified_sample
    from edgecls.training.evaluate import predict_arrays
    from edgecls.training.pipeline import load_images
    from edgecls.training.run_folder import read_split

    meta = source.meta
    if source.run is not None:
        split_name = "test"
        files = read_split(source.run, "test")
        if not files.paths:
            split_name, files = "val", read_split(source.run, "val")
        if not files.paths:
            raise ConfigError(f"run '{source.run}' has no val or test images to validate exports on", "Re-train with --val-split 0.1")
        chosen = stratified_sample(files.labels, min(size, len(files.paths)), seed)
        images = load_images([files.paths[i] for i in chosen], meta.input_size, meta.crop_fraction, meta.interpolation)
        labels, where = files.labels[chosen], f"{split_name} split of {source.run} ({len(chosen)} images)"
    else:
        photos = builtin_photos(meta)
        images = photos.images[1::2] if calib_from_builtin else photos.images
        labels, where = None, f"built-in photos ({len(images)} crops, unlabelled: agreement only)"
    return Holdout(images, labels, predict_arrays(source.model, images), where)


def export(
    model: str | Path,
    target: str = "tflite",
    precision: str | None = None,
    calib: str | Path | None = None,
    calib_size: int = 300,
    max_drop: float | None = None,
    io_type: str = "uint8",
    opset: int = 17,
    holdout_size: int = 1000,
    seed: int = 0,
    threads: int | None = None,
    out: str | Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> list[ExportResult]:
    """Export `model` (run folder or zoo name) to one target or `all`, validating every artifact.

    precision None: each target's default (int8 for edgetpu, which takes nothing else; fp32 otherwise).
    """
    say = on_step or (lambda message: None)
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'", f"Use one of {', '.join(PRECISIONS)}")
    if io_type not in IO_TYPES:
        raise ConfigError(f"--io '{io_type}' is not one of {', '.join(IO_TYPES)}", "Use --io uint8 (default), int8 or float")
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
    plan = _plan(target, precision)
    if io_type != "uint8" and not any(fmt.name == "tflite" and prec == "int8" for fmt, prec in plan):
        raise ConfigError(f"--io {io_type} only applies to tflite INT8 exports", "Drop --io, or export --target tflite --int8")
    with _noticing_interrupts():  # Ctrl-C stops the export even where a converter swallows it
        source = _load_source(model)
        root = Path(out) if out else (source.run / "export" if source.run else Path("models") / f"{source.name}-imagenet" / "export")

        calibration = None
        if any(p == "int8" for _, p in plan):
            say("building the calibration set")
            exclude = _holdout_hashes(source) if calib is not None else set()
            calibration = _calibration(source, Path(calib) if calib else None, calib_size, seed, exclude)
            from edgecls.quantize.calibration import write_manifest

            write_manifest(calibration, Path("calibration") / source.name, source.meta, seed)
        say("predicting the held-out images with the Keras model")
        holdout = _holdout(source, holdout_size, seed, calib_from_builtin=calibration is not None and calib is None and source.run is None)
        _raise_if_interrupted()

        results = []
        for fmt, prec in plan:
            say(f"exporting {fmt.name} {prec}")
            results.append(_export_one(source, fmt, prec, root, calibration, holdout, max_drop, io_type, opset, threads))
        return results


def _plan(target: str, precision: str | None) -> list[tuple[Format, str]]:
    """(format, precision) pairs. `all` skips what a format cannot take (without a precision: fp32, so
    no edgetpu); a named target refuses it, so `--fp16 --target edgetpu` is an error, not an INT8 export."""
    formats = resolve_targets(target)
    plan = []
    for fmt in formats:
        if target == "all":
            prec = precision or "fp32"
            if prec not in fmt.precisions:
                continue
        else:
            prec = precision or ("fp32" if "fp32" in fmt.precisions else fmt.precisions[0])
            check_precision(fmt, prec)
        plan.append((fmt, prec))
    return plan


_INTERRUPTED = threading.Event()


@contextlib.contextmanager
def _noticing_interrupts() -> Iterator[None]:
    """Remember a Ctrl-C, even one that a converter's native code turns into its own error or swallows
    (OpenVINO's frontend reports it as a RuntimeError): the export must stop, not carry on."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return

    def handler(signum: int, frame: object) -> None:
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


def _holdout_hashes(source: _Source) -> set[str]:
    from edgecls.quantize.calibration import sha256_file
    from edgecls.training.run_folder import read_split

    if source.run is None:
        return set()
    paths = [*read_split(source.run, "val").paths, *read_split(source.run, "test").paths]
    return {sha256_file(p) for p in paths if p.is_file()}


def _export_one(source: _Source, fmt: Format, precision: str, root: Path, calibration: Any, holdout: Holdout,
                max_drop: float | None, io_type: str, opset: int, threads: int | None) -> ExportResult:
    name = f"{fmt.name}-{precision}"
    final = root / name
    failed_report = root / f"{name}.failed.json"
    start = time.perf_counter()
    report: dict[str, Any] = {"target": fmt.name, "precision": precision, "source": str(source.run or source.name)}
    try:
        with atomic_dir(final) as tmp:
            request = ExportRequest(
                model=source.model, meta=source.meta, precision=precision, out_dir=tmp,
                calibration=calibration.images if calibration is not None else None, io_type=io_type, opset=opset,
                max_drop=max_drop, holdout=(holdout.images, holdout.labels) if (max_drop is not None and holdout.labels is not None) else None,
            )
            artifact = fmt.load_writer()(request)
            meta = replace(source.meta, format=fmt.name, precision=precision,
                           input_quantization=artifact.input_quantization, output_quantization=artifact.output_quantization)
            meta.save(tmp)
            files = [artifact.path, *artifact.extra_files]
            size = sum(p.stat().st_size for p in files)
            report.update({
                "artifact": artifact.path.name, "files": [p.name for p in files], "size_bytes": size,
                "fp32_weights_bytes": int(source.model.count_params()) * 4, "notes": artifact.notes,
                "calibration": {"source": calibration.source, "images": len(calibration), "manifest": str(calibration.manifest)} if (calibration is not None and precision == "int8") else None,
            })
            report["size_ratio_vs_fp32_weights"] = round(size / report["fp32_weights_bytes"], 4)
            # A compiled *_edgetpu.tflite needs a Coral to run: validate the CPU model it was compiled from.
            checked = tmp / artifact.notes.get("cpu_model", artifact.path.name)
            report["validation"] = validate(checked, fmt.name, precision, holdout, source.meta.labels, max_drop, threads)
            report["validated_file"] = checked.name
            report["export_seconds"] = round(time.perf_counter() - start, 2)
            if not report["validation"]["passed"]:
                raise ExportError(f"{name} failed validation: " + "; ".join(report["validation"]["failures"]),
                                  f"See {failed_report}")
            _raise_if_interrupted()  # before the rename: an interrupted export leaves nothing that looks valid
            write_json(tmp / REPORT, report)
            artifact_name = artifact.path.name
        failed_report.unlink(missing_ok=True)
        return ExportResult(fmt.name, precision, final, final / artifact_name, size, report["export_seconds"], report)
    except Exception as exc:
        if _INTERRUPTED.is_set():
            raise KeyboardInterrupt from exc
        if not isinstance(exc, EdgeclsError):
            raise
        report["error"] = str(exc)
        if "validation" in report:
            write_json(failed_report, report)
        return ExportResult(fmt.name, precision, None, None, int(report.get("size_bytes", 0)), round(time.perf_counter() - start, 2), report, str(exc))


__all__ = ["ExportResult", "export"]
