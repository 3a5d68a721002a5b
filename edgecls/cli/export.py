"""`edgecls export`: convert, quantize and validate artifacts."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rich.markup import escape

from edgecls.cli.common import err_console, print_json, print_table, say


def export_command(
    model: str = typer.Argument(..., help="Run folder, or a zoo name (efficientnet_lite0: ImageNet, offline)."),
    target: str = typer.Option("tflite", "--target", help="tflite | edgetpu | onnx | openvino | all"),
    int8: bool = typer.Option(False, "--int8", help="Full-integer INT8 post-training quantization."),
    fp16: bool = typer.Option(False, "--fp16", help="float16 weights (tflite, openvino)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 | fp16 | dynamic | int8 (instead of --int8/--fp16)."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Folder of representative images [default: the run's training split]."),
    calib_size: int = typer.Option(300, "--calib-size", help="Calibration images (at most)."),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Fail when accuracy drops more than this fraction (0.01 = 1 point)."),
    io: str = typer.Option("uint8", "--io", help="tflite int8 input/output type: uint8 | int8 | float"),
    opset: int = typer.Option(17, "--opset", help="ONNX opset."),
    holdout_size: int = typer.Option(1000, "--holdout-size", help="Held-out test/val images used for validation (at most)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads during validation."),
    out: Optional[Path] = typer.Option(None, "--out", help="Export folder [default: RUN/export]."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON only."),
) -> None:
    """Export validated artifacts: RUN/export/<target>-<precision>/ with the model, meta.json and a report."""
    from edgecls.errors import ConfigError
    from edgecls.export.api import export

    chosen = [name for name, flag in (("int8", int8), ("fp16", fp16)) if flag] + ([precision] if precision else [])
    if len(chosen) > 1:
        raise ConfigError(f"conflicting precisions {' and '.join(chosen)}", "Pass only one of --int8, --fp16, --precision")
    results = export(
        model, target=target, precision=chosen[0] if chosen else None, calib=calib, calib_size=calib_size,
        max_drop=max_drop, io_type=io, opset=opset, holdout_size=holdout_size, seed=seed, threads=threads, out=out,
        on_step=None if as_json else (lambda message: err_console.print(f"[dim]{escape(message)}...[/dim]")),
    )
    if as_json:
        print_json([{**r.report, "folder": str(r.folder) if r.folder else None, "passed": r.passed, "error": r.error} for r in results])
    else:
        _render(results)
    failed = [r for r in results if not r.passed]
    if failed:
        for result in failed:
            say(f"error: {result.error}", stderr=True)
        raise typer.Exit(1)


def _render(results: list) -> None:
    rows = []
    for r in results:
        v = r.report.get("validation", {})
        accuracy = (f"{v['reference_accuracy']:.4f} -> {v['artifact_accuracy']:.4f} ({(-v['accuracy_drop'] * 100) + 0.0:+.2f} pt)"
                    if "accuracy_drop" in v else "-")
        rows.append((
            r.target, r.precision, f"{r.size_bytes / 1e6:.2f} MB" if r.size_bytes else "-",
            f"{r.report.get('size_ratio_vs_fp32_weights', 0) * 100:.0f}%" if r.size_bytes else "-",
            f"{v['top1_agreement']:.4f}" if v else "-", accuracy, f"{v['max_abs_diff']:.1e}" if v else "-",
            v.get("precision_ran", "-"), f"{r.seconds:.1f} s", "ok" if r.passed else "FAILED",
        ))
    print_table("Export", ["target", "precision", "size", "vs fp32", "top-1 agree", "accuracy (Keras -> artifact)", "max |diff|", "ran as", "time", "status"], rows)
    for r in results:
        if r.passed:
            say(f"{r.target}-{r.precision}: {r.artifact}")
            tpu = r.report.get("notes", {}).get("edgetpu")
            if tpu:
                say(f"  edge tpu: {tpu['ops_on_tpu']}/{tpu['ops_total']} ops would map to the TPU ({tpu['tpu_share'] * 100:.0f}%); {tpu['cut']}")
                compiler = tpu.get("compiler", {})
                if not compiler.get("ran"):
                    say(f"  {compiler.get('message', '')}; compile with: {compiler.get('command', '')}")
            lost = r.report.get("validation", {}).get("classes_that_lost_accuracy", [])
            if lost:
                say(f"  classes that lost accuracy: {', '.join(lost[:8])}")
            warning = r.report.get("validation", {}).get("warning")
            if warning:
                err_console.print(f"[yellow]warning:[/yellow] {r.target}-{r.precision}: {escape(warning)}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
