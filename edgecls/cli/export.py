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
    max_drop: str = typer.Option(
        f"{DEFAULTS.max_drop:g}", "--max-drop",
        help="Accuracy gate of quantized exports: fail one whose accuracy on the held-out images drops more than this fraction "
             "(0.01 = 1 point); 'none' turns the check off."),
    min_agreement: str = typer.Option(
        f"{DEFAULTS.min_agreement:g}", "--min-agreement",
        help="Accuracy gate of quantized exports: fail one whose top-1 predictions agree with the Keras model on fewer than this "
             "fraction of the held-out images Keras is decisive about (top-1 ahead by 0.05 or more; all images when fewer than 10 "
             "are); the whole gate for unlabelled images. 'none' turns it off."),
    fallback_layers: int = typer.Option(
        DEFAULTS.fallback_layers, "--fallback-layers",
        help="INT8 that fails the gate: keep up to this many of its most sensitive layers float, chosen on separate tuning "
             "images (tflite, onnx, openvino; never edgetpu). 0 turns the fallback off."),
    fallback_tries: int = typer.Option(DEFAULTS.fallback_tries, "--fallback-tries",
                                       help="Re-quantized candidates the fallback tries, at most."),
    fallback_seconds: float = typer.Option(DEFAULTS.fallback_seconds, "--fallback-seconds",
                                           help="Time the fallback search may take, at most."),
    io: str | None = typer.Option(None, OPTIONS["io_type"].flag, help=_option_help("io_type")),
    opset: int | None = typer.Option(None, OPTIONS["opset"].flag, help=_option_help("opset")),
    batch: int | None = typer.Option(None, OPTIONS["batch"].flag, help=_option_help("batch")),
    allow_cpu_ops: bool = typer.Option(False, OPTIONS["allow_cpu_ops"].flag, help=_option_help("allow_cpu_ops")),
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
        max_drop=_fraction("--max-drop", max_drop), min_agreement=_fraction("--min-agreement", min_agreement),
        fallback_layers=fallback_layers, fallback_tries=fallback_tries, fallback_seconds=fallback_seconds,
        io_type=io, opset=opset, batch=batch, allow_cpu_ops=allow_cpu_ops or None,
        holdout_size=holdout_size, seed=seed, threads=threads, out=out,
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


def _fraction(flag: str, text: str) -> float | None:
    """A gate threshold as typed: a number, or 'none' (the check is off)."""
    from edgecls.errors import ConfigError

    if text.strip().lower() in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{flag} '{text}' is not a number", f"Give a fraction such as {flag} 0.01, or {flag} none") from None


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
        _render_int8(r)
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


def _render_int8(r: ExportResult) -> None:
    """The worst layers of the sensitivity report, what the fallback kept float, and where a rejected artifact went."""
    sensitivity, fallback, gate = r.report.sensitivity, r.report.fallback, r.report.gate
    if sensitivity is not None and sensitivity.layers:
        print_table(f"{r.target}-{r.precision}: most sensitive layers ({sensitivity.images} calibration images; "
                    f"{sensitivity.plot})", ["layer", "op", "error", "added", "rmse/step"],
                    [(layer.label, layer.op, f"{layer.error:.3f}", f"{layer.added:+.3f}",
                      "-" if layer.rmse_per_step is None else f"{layer.rmse_per_step:.2f}") for layer in sensitivity.worst(5)])
    if fallback is not None:
        candidate = fallback.candidate
        say(f"  fallback, {fallback.outcome}; tuned on {fallback.tuned_on}; float layers via {fallback.mechanism}")
        if candidate is not None:
            tuning = f"agreement {candidate.top1_agreement}" + ("" if candidate.accuracy_drop is None
                                                              else f", accuracy {-candidate.accuracy_drop * 100 + 0.0:+.2f} pt")
            say(f"  kept float: {len(candidate.float_nodes)} layers ({', '.join(candidate.layers)}); tuning {tuning}")
        if fallback.size_bytes and fallback.full_int8_size_bytes:
            say(f"  size {fallback.full_int8_size_bytes / 1e6:.2f} -> {fallback.size_bytes / 1e6:.2f} MB, latency p50 "
                f"{fallback.full_int8_latency_ms} -> {fallback.latency_ms} ms ({fallback.latency_note})")
    if r.report.rejected:
        say(f"{r.target}-{r.precision}: NOT published, kept aside in {r.report.rejected}")
        for tip in (gate.advice if gate else [])[:4]:
            say(f"  try: {tip}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
