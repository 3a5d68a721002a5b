"""`edgecls bench`: latency and accuracy of artifacts, side by side."""
from __future__ import annotations

from pathlib import Path

import typer

from edgecls.bench.report import Accuracy, BenchResult, FailedArtifact
from edgecls.cli.common import print_json, print_table, say

_COLUMNS = ["artifact", "format", "precision", "size", "ran as", "p50 / p90 / p99 ms", "FPS", "accuracy", "top-5", "vs reference"]


def bench_command(
    models: list[Path] = typer.Argument(..., help="Artifacts (.tflite/.onnx/.xml) or run folders (every artifact in RUN/export/)."),
    data: Path | None = typer.Option(None, "--data", help="Labelled ImageFolder tree for accuracy and top-5."),
    device_profile: str | None = typer.Option(None, "--device", help="Device profile (pi5, coral-usb-pi, intel-cpu, ...) or a .toml path."),
    backend_device: str | None = typer.Option(
        None, "--backend-device", help="cpu | coral | gpu | npu | auto [default: the profile's, else cpu]"),
    threads: int | None = typer.Option(None, "--threads", help="Inference threads [default: the profile's, else the runtime's]."),
    runs: int = typer.Option(200, "--runs", help="Timed runs per artifact, after warm-up."),
    warmup: int = typer.Option(20, "--warmup", help="Untimed runs per artifact before timing."),
    limit: int = typer.Option(1000, "--limit", help="Images of --data to score, at most."),
    out: Path | None = typer.Option(
        None, "--out", help="JSON report, chart beside it (.png) [default: RUN/bench/bench_report.json, or bench/ by the artifact]."),
    timeout: float = typer.Option(
        3600.0, "--timeout", help="Seconds one artifact may take; past it, it is recorded as failed and the others still run."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON only."),
) -> None:
    """Like `yolo benchmark`, with percentiles, the precision that actually ran, and accuracy per artifact."""
    from edgecls.bench.runner import bench, default_report_path

    def progress(result: BenchResult) -> None:
        if not as_json:
            say(f"measured {result.artifact}", stderr=True)

    report = bench(list(models), data, device_profile, threads, runs, warmup, limit, backend_device, on_result=progress,
                   out=out or default_report_path(list(models)), timeout_s=timeout)
    if as_json:
        print_json(report.as_dict())
    else:
        title = (f"edgecls bench ({report.device}, threads {report.threads or 'default'}, "
                 f"{report.runs} runs after {report.warmup} warm-up)")
        print_table(title, _COLUMNS, [_row(r) for r in report.results])
        outputs = report.outputs or {}
        say(f"report: {outputs.get('json')}" + (f", chart: {outputs['chart']}" if outputs.get("chart") else ""))
    if report.failed:
        raise typer.Exit(1)


def _row(result: BenchResult) -> tuple[str, ...]:
    if isinstance(result, FailedArtifact):
        return (result.artifact, "-", "-", "-", "-", "-", "-", "-", "-", result.error)
    lat, scores = result.latency, result.scores
    artifact = Path(result.artifact)
    return (
        f"{artifact.parent.name}/{artifact.name}", result.format, result.precision, f"{result.size_bytes / 1e6:.2f} MB",
        result.precision_ran, f"{lat.p50_ms:.2f} / {lat.p90_ms:.2f} / {lat.p99_ms:.2f}", f"{lat.fps:.0f}",
        f"{scores.accuracy:.4f}" if scores is not None else "-", _top5_cell(scores),
        result.reference.verdict if result.reference is not None else "-",
    )


def _top5_cell(scores: Accuracy | None) -> str:
    if scores is None:
        return "-"
    return "n/a (< 5 classes)" if scores.top5 is None else f"{scores.top5:.4f}"


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)
