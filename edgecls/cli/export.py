"""`edgecls export`: convert, quantize and validate artifacts."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from edgecls.cli.common import err_console, print_json, print_table, say
from edgecls.export.formats import DEFAULTS, FORMATS, OPTIONS, PRECISIONS
from edgecls.export.report import ExportResult

_TARGETS = " | ".join([*FORMATS, "all"])
_PRECISIONS_BY_TARGET = "; ".join(f"{f.name}: {', '.join(f.precisions)}" for f in FORMATS.values())


def _option_help(name: str) -> str:
    """Help of a format option from the FORMATS table: what it does, its default and the targets that take it."""
    option = OPTIONS[name]
    takers = ", ".join(f.name for f in FORMATS.values() if name in f.options)
    default = "" if option.default is None else f" Default {option.default}."
    return f"{option.help}{default} Targets: {takers}."


def export_command(
    model: str = typer.Argument(..., help="Run folder, or a zoo name (efficientnet_lite0: ImageNet, offline)."),
    target: str = typer.Option(DEFAULTS.target, "--target", help=f"{_TARGETS}. 'all' exports every target that takes the precision."),
    int8: bool = typer.Option(False, "--int8", help="Full-integer INT8 post-training quantization (same as --precision int8)."),
    fp16: bool = typer.Option(False, "--fp16", help="float16 weights, tflite and openvino (same as --precision fp16)."),
    precision: str | None = typer.Option(
        None, "--precision", help=f"{' | '.join(PRECISIONS)} (instead of --int8/--fp16; default fp32, edgetpu int8). "
                                  f"{_PRECISIONS_BY_TARGET}."),
    calib: Path | None = typer.Option(
        None, "--calib", help="Folder of representative images for INT8 calibration; images also in the run's val/test "
                              "splits are dropped (default: a stratified sample of the run's training split)."),
    calib_size: int = typer.Option(DEFAULTS.calib_size, "--calib-size", help="Calibration images, at most (minimum 10)."),
    max_drop: float | None = typer.Option(
        None, "--max-drop", help="Fail an export whose accuracy drops more than this fraction on the held-out images "
                                 "(0.01 = 1 point); openvino INT8 also uses it for NNCF accuracy control."),
    io: str | None = typer.Option(None, OPTIONS["io_type"].flag, help=_option_help("io_type")),
    opset: int | None = typer.Option(None, OPTIONS["opset"].flag, help=_option_help("opset")),
    batch: int | None = typer.Option(None, OPTIONS["batch"].flag, help=_option_help("batch")),
    holdout_size: int = typer.Option(DEFAULTS.holdout_size, "--holdout-size",
                                     help="Held-out test (else val) images that validate each artifact, at most."),
    threads: int | None = typer.Option(None, "--threads", help="Runtime threads during validation (default: the runtime's)."),
    out: Path | None = typer.Option(
        None, "--out", help="Export folder; each artifact goes to OUT/<target>-<precision>/ (default: RUN/export, "
                            "models/<zoo name>-imagenet/export for a zoo model)."),
    seed: int = typer.Option(DEFAULTS.seed, "--seed", help="Seed of the calibration and held-out samples."),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON only."),
) -> None:
    """Export validated artifacts: RUN/export/<target>-<precision>/ with the model, meta.json and export_report.json.

    INT8 exports record their calibration images in RUN/export/calibration/manifest.json.
    """
    from edgecls.errors import ConfigError
    from edgecls.export.api import export

    chosen = [name for name, flag in (("int8", int8), ("fp16", fp16)) if flag] + ([precision] if precision else [])
    if len(chosen) > 1:
        raise ConfigError(f"conflicting precisions {' and '.join(chosen)}", "Pass only one of --int8, --fp16, --precision")
    results = export(
        model, target=target, precision=chosen[0] if chosen else None, calib=calib, calib_size=calib_size,
        max_drop=max_drop, io_type=io, opset=opset, batch=batch, holdout_size=holdout_size, seed=seed, threads=threads, out=out,
        on_step=None if as_json else (lambda message: err_console.print(f"[dim]{escape(message)}...[/dim]")),
    )
    if as_json:
        print_json([r.as_dict() for r in results])
    else:
        _render(results)
    failed = [r for r in results if not r.passed]
    if failed:
        for result in failed:
            say(f"error: {result.error}", stderr=True)
        raise typer.Exit(1)


def _render(results: list[ExportResult]) -> None:
    rows = []
    for r in results:
        v = r.validation
        accuracy = "-"
        if v is not None and v.accuracy_drop is not None:
            accuracy = f"{v.reference_accuracy:.4f} -> {v.artifact_accuracy:.4f} ({(-v.accuracy_drop * 100) + 0.0:+.2f} pt)"
        ratio = r.report.size_ratio_vs_fp32_weights or 0
        rows.append((
            r.target, r.precision, f"{r.size_bytes / 1e6:.2f} MB" if r.size_bytes else "-", f"{ratio * 100:.0f}%" if r.size_bytes else "-",
            f"{v.top1_agreement:.4f}" if v else "-", accuracy, f"{v.max_abs_diff:.1e}" if v else "-",
            v.precision_ran if v else "-", f"{r.seconds:.1f} s", "ok" if r.passed else "FAILED",
        ))
    columns = ["target", "precision", "size", "vs fp32", "top-1 agree", "accuracy (Keras -> artifact)", "max |diff|", "ran as", "time",
               "status"]
    print_table("Export", columns, rows)
    for r in results:
        if not r.passed:
            continue
        say(f"{r.target}-{r.precision}: {r.artifact}")
        tpu = r.report.edgetpu
        if tpu is not None:
            say(f"  edge tpu: {tpu.ops_on_tpu}/{tpu.ops_total} ops would map to the TPU ({tpu.tpu_share * 100:.0f}%); {tpu.cut}")
            if not tpu.compiler_ran:
                say(f"  {tpu.compiler_message}; compile with: {tpu.compiler_command}")
        v = r.validation
        if v is not None and v.classes_that_lost_accuracy:
            say(f"  classes that lost accuracy: {', '.join(v.classes_that_lost_accuracy[:8])}")
        if v is not None and v.warning:
            err_console.print(f"[yellow]warning:[/yellow] {escape(r.target)}-{escape(r.precision)}: {escape(v.warning)}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
