"""Benchmark several artifacts, each in its own process; compare with a device profile; table, JSON, PNG.

The report goes beside what it measures unless --out says otherwise (see default_report_path), and no output
may land on an artifact, its meta.json or weights, or inside --data: checked before any measurement.
One artifact that fails or runs past its timeout is recorded with the reason; the others are still measured.
The report is typed (edgecls.bench.report); its `as_dict()` is the JSON.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from edgecls.bench.report import BenchReport, BenchResult, FailedArtifact, ReferenceCheck, result_from_dict
from edgecls.errors import ConfigError, ModelError

ARTIFACT_SUFFIXES = (".tflite", ".onnx", ".xml")
REPORT_NAME = "bench_report.json"
REPORT_FOLDER = "bench"
DEFAULT_TIMEOUT_S = 3600.0


def expand(models: list[str | Path]) -> list[Path]:
    """Artifact files; a run folder stands for every artifact under RUN/export/."""
    found: list[Path] = []
    for model in models:
        path = Path(model)
        if path.is_file():
            if path.suffix not in ARTIFACT_SUFFIXES:
                raise ConfigError(f"'{path}' is not an exported artifact", f"Pass {', '.join(ARTIFACT_SUFFIXES)} files or a run folder")
            found.append(path)
        elif path.is_dir():
            # a run folder, an export folder (RUN/export), or one artifact folder
            artifacts = [p for pattern in ("export/*/*", "*/*", "*") for p in sorted(path.glob(pattern))
                         if p.suffix in ARTIFACT_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(path).parts)]
            if not artifacts:
                raise ModelError(f"'{path}' holds no exported artifacts", f"Export first: edgecls export {path} --int8 --target all")
            found.extend(artifacts)
        else:
            raise ModelError(f"'{path}' does not exist", "Pass artifact files or run folders")
    return list(dict.fromkeys(found))


def _is_run(folder: Path) -> bool:
    return (folder / "meta.json").is_file() and ((folder / "model.keras").is_file() or (folder / "export").is_dir())


def _run_folder_of(path: Path) -> Path | None:
    """The run folder when `path` is RUN, RUN/export, RUN/export/<name> or RUN/export/<name>/<artifact>; else None."""
    if path.is_dir() and _is_run(path):
        return path
    for export in (path, path.parent, path.parent.parent):
        if export.name == "export" and _is_run(export.parent) and path.is_relative_to(export):
            return export.parent
    return None


def default_report_path(models: list[str | Path]) -> Path:
    """Where the report goes without --out: RUN/bench/bench_report.json for a run (or an artifact inside RUN/export/),
    else FOLDER/bench/bench_report.json beside the first folder or artifact measured; never the current folder."""
    first = Path(models[0]).expanduser().absolute()
    run = _run_folder_of(first)
    base = run if run is not None else (first if first.is_dir() else first.parent)
    return base / REPORT_FOLDER / REPORT_NAME


def artifact_files(path: Path) -> dict[str, Path]:
    """The files one artifact is made of, named for error messages: model, meta.json and OpenVINO weights."""
    files = {"artifact": path, "artifact meta.json": path.parent / "meta.json"}
    if path.suffix == ".xml":
        files["artifact weights"] = path.with_suffix(".bin")
    return files


def check_report_paths(outputs: dict[str, Path], artifacts: list[Path], data: Path | None) -> None:
    """Refuse (ConfigError, one line naming both) any output that is, lies in or contains an artifact file or --data,
    lies in an artifact's folder (its golden set, export report and marker are inputs too) other than its bench/
    sub-folder (where a lone artifact's report goes by default), is a folder, or cannot be written; and a report
    named like its own chart (.png)."""
    from edgecls.fsutil import check_outputs, check_parent

    report = outputs.get("--out")
    if report is not None and report.suffix.lower() == ".png":
        raise ConfigError(f"--out '{report}' is where the chart goes (the chart is written beside the report as .png)",
                          "Name the JSON report with .json, e.g. --out bench_report.json")
    check_outputs(outputs, {"--data": data})
    for artifact in artifacts:
        check_outputs(outputs, artifact_files(artifact))
    for folder in dict.fromkeys(artifact.parent for artifact in artifacts):
        own_reports = folder.resolve() / REPORT_FOLDER
        check_outputs({name: path for name, path in outputs.items() if own_reports not in path.resolve().parents},
                      {"artifact folder": folder})
    for name, path in outputs.items():
        if path.is_dir():
            raise ConfigError(f"{name} '{path}' is a folder", "Pass a file name for the report, e.g. --out bench_report.json")
        check_parent(path)  # an unwritable folder is found now, not after every artifact was measured


def run_one(path: Path, device: str, threads: int | None, runs: int, warmup: int, data: Path | None, limit: int,
            timeout_s: float = DEFAULT_TIMEOUT_S) -> BenchResult:
    """Measure one artifact in its own process; a failure or a timeout comes back as a FailedArtifact."""
    args = {"path": str(path), "device": device, "threads": threads, "runs": runs, "warmup": warmup,
            "data": str(data) if data else None, "limit": limit}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        proc = subprocess.run([sys.executable, "-m", "edgecls.bench.measure", json.dumps(args)], capture_output=True, text=True, env=env,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:  # subprocess.run has killed the process
        return FailedArtifact(str(path), f"timed out after {timeout_s:g} s (the benchmark process was stopped)", timed_out=True)
    for line in proc.stdout.splitlines():
        if line.startswith("EDGECLS-BENCH "):
            return result_from_dict(json.loads(line.removeprefix("EDGECLS-BENCH ")))
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return FailedArtifact(str(path), f"benchmark process failed (exit {proc.returncode}): {tail}")


def bench(models: list[str | Path], data: str | Path | None = None, device_profile: str | None = None, threads: int | None = None,
          runs: int = 200, warmup: int = 20, limit: int = 1000, device: str | None = None,
          on_result: Callable[[BenchResult], None] | None = None, out: str | Path | None = None,
          timeout_s: float = DEFAULT_TIMEOUT_S) -> BenchReport:
    """Measure every artifact; the report's `as_dict()` is bench_report.json.

    With `out`, the JSON report is written there and the chart beside it (.png); both paths are checked against
    the inputs before anything is measured. Each artifact gets `timeout_s` seconds.
    """
    from edgecls.devices import compare, load_profile

    if runs < 1 or warmup < 0 or limit < 1:
        raise ConfigError(f"--runs {runs} / --warmup {warmup} / --limit {limit} out of range", "Use runs >= 1, warmup >= 0, limit >= 1")
    if not timeout_s > 0:
        raise ConfigError(f"--timeout {timeout_s} out of range", "Use a timeout in seconds above 0")
    profile = load_profile(device_profile) if device_profile else None
    threads = threads if threads is not None else (profile.threads if profile else None)
    device = device or (profile.backend_device if profile else "cpu")
    artifacts = expand(models)
    data_path = Path(data) if data else None
    outputs = {"--out": Path(out), "--out chart": Path(out).with_suffix(".png")} if out is not None else {}
    check_report_paths(outputs, artifacts, data_path)
    report = BenchReport(profile.name if profile else None, threads, device, runs, warmup)
    for path in artifacts:
        result = run_one(path, device, threads, runs, warmup, data_path, limit, timeout_s)
        if profile and not isinstance(result, FailedArtifact):
            ref = profile.reference_for(result.architecture, result.input_size[0], result.precision, result.format)
            if ref:
                result.reference = ReferenceCheck(compare(result.latency.p50_ms, ref), ref.latency_ms, ref.source)
            else:
                result.reference = ReferenceCheck(f"no {profile.name} reference for {result.architecture} {result.input_size[0]} px "
                                                  f"{result.precision}")
        report.results.append(result)
        if on_result:
            on_result(result)
    if out is not None:
        write_report(report, Path(out))
    return report


def write_report(report: BenchReport, out: Path) -> None:
    """The chart (when matplotlib is installed) beside the JSON, then the JSON, which names both; both atomic."""
    from edgecls.fsutil import write_json

    png = chart(report, out.with_suffix(".png"))
    report.outputs = {"json": str(out), "chart": str(png) if png else None}
    write_json(out, report.as_dict())


def chart(report: BenchReport, path: Path) -> Path | None:
    """Latency (p50) vs accuracy, one point per artifact; needs matplotlib (skipped without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from edgecls.fsutil import atomic_path

    points = report.measured
    if not points:
        return None
    fig, axis = plt.subplots(figsize=(7, 4.5))
    for index, r in enumerate(points):
        y = r.scores.accuracy if r.scores is not None else 0
        axis.scatter(r.latency.p50_ms, y, s=60)
        axis.annotate(f"{Path(r.artifact).parent.name}", (r.latency.p50_ms, y),
                      textcoords="offset points", xytext=(5, 5 + 11 * (index % 3)), fontsize=8)  # staggered: points may coincide
    axis.set_xlabel("latency p50 (ms, batch 1)")
    axis.set_ylabel("accuracy" if any(r.scores is not None for r in points) else "(no --data: accuracy not measured)")
    axis.set_title("edgecls bench: latency vs accuracy")
    axis.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
