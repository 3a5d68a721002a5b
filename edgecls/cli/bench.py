"""`edgecls bench`: latency and accuracy of artifacts, side by side."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgecls.cli.common import print_json, print_table, say


def bench_command(
    models: list[Path] = typer.Argument(..., help="Artifacts (.tflite/.onnx/.xml) or run folders (every artifact in RUN/export/)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Labelled ImageFolder tree for accuracy and top-5."),
    device_profile: Optional[str] = typer.Option(None, "--device", help="Device profile (pi5, coral-usb-pi, intel-cpu, ...) or a .toml path."),
    backend_device: Optional[str] = typer.Option(None, "--backend-device", help="cpu | coral | gpu | npu | auto [default: the profile's, else cpu]"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    runs: int = typer.Option(200, "--runs", help="Timed runs per artifact, after warm-up."),
    warmup: int = typer.Option(20, "--warmup"),
    limit: int = typer.Option(1000, "--limit", help="Images of --data to score, at most."),
    out: Path = typer.Option(Path("bench_report.json"), "--out", help="JSON report; the chart goes beside it as .png."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON only."),
) -> None:
    """Like `yolo benchmark`, with percentiles, the precision that actually ran, and accuracy per artifact."""
    from edgecls.bench.runner import bench, chart
    from edgecls.fsutil import write_json

    def progress(result: dict) -> None:
        if not as_json:
            say(f"measured {result['artifact']}", stderr=True)

    report = bench(models, data, device_profile, threads, runs, warmup, limit, backend_device, on_result=progress)
    write_json(out, report)
    png = chart(report, out.with_suffix(".png"))
    if as_json:
        print_json(report)
    else:
        rows = []
        for r in report["results"]:
            if "error" in r:
                rows.append((r["artifact"], "-", "-", "-", "-", "-", "-", "-", "-", r["error"]))
                continue
            lat = r["latency"]
            rows.append((
                f"{Path(r['artifact']).parent.name}/{Path(r['artifact']).name}", r["format"], r["precision"], f"{r['size_bytes'] / 1e6:.2f} MB", r["precision_ran"],
                f"{lat['p50_ms']:.2f} / {lat['p90_ms']:.2f} / {lat['p99_ms']:.2f}", f"{lat['fps']:.0f}",
                f"{r['accuracy']:.4f}" if "accuracy" in r else "-", f"{r['top5']:.4f}" if "top5" in r else "-",
                r.get("reference", {}).get("verdict", "-"),
            ))
        print_table(f"edgecls bench ({report['device']}, threads {report['threads'] or 'default'}, {report['runs']} runs after {report['warmup']} warm-up)",
                    ["artifact", "format", "precision", "size", "ran as", "p50 / p90 / p99 ms", "FPS", "accuracy", "top-5", "vs reference"], rows)
        say(f"report: {out}" + (f", chart: {png}" if png else ""))
    if any("error" in r for r in report["results"]):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)
