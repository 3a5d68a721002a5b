"""Benchmark several artifacts, each in its own process; compare with a device profile; table, JSON, PNG."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgecls.errors import ConfigError, ModelError

ARTIFACT_SUFFIXES = (".tflite", ".onnx", ".xml")


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


def run_one(path: Path, device: str, threads: int | None, runs: int, warmup: int, data: Path | None, limit: int) -> dict[str, Any]:
    args = {"path": str(path), "device": device, "threads": threads, "runs": runs, "warmup": warmup,
            "data": str(data) if data else None, "limit": limit}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "edgecls.bench.measure", json.dumps(args)], capture_output=True, text=True, env=env, timeout=3600)
    for line in proc.stdout.splitlines():
        if line.startswith("EDGECLS-BENCH "):
            return json.loads(line.removeprefix("EDGECLS-BENCH "))
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"artifact": str(path), "error": f"benchmark process failed (exit {proc.returncode}): {tail}"}


def bench(models: list[str | Path], data: str | Path | None = None, device_profile: str | None = None, threads: int | None = None,
          runs: int = 200, warmup: int = 20, limit: int = 1000, device: str | None = None, on_result: Any = None) -> dict[str, Any]:
    """Measure every artifact; returns {"results": [...], "profile": ...}."""
    from edgecls.devices import compare, load_profile

    if runs < 1 or warmup < 0 or limit < 1:
        raise ConfigError(f"--runs {runs} / --warmup {warmup} / --limit {limit} out of range", "Use runs >= 1, warmup >= 0, limit >= 1")
    profile = load_profile(device_profile) if device_profile else None
    threads = threads if threads is not None else (profile.threads if profile else None)
    device = device or (profile.backend_device if profile else "cpu")
    results = []
    for path in expand(models):
        result = run_one(path, device, threads, runs, warmup, Path(data) if data else None, limit)
        if profile and "latency" in result:
            ref = profile.reference_for(result["architecture"], result["input_size"][0], result["precision"], result["format"])
            result["reference"] = ({"latency_ms": ref.latency_ms, "source": ref.source, "verdict": compare(result["latency"]["p50_ms"], ref)}
                                   if ref else {"verdict": f"no {profile.name} reference for {result['architecture']} {result['input_size'][0]} px {result['precision']}"})
        results.append(result)
        if on_result:
            on_result(result)
    return {"profile": profile.name if profile else None, "threads": threads, "device": device, "runs": runs, "warmup": warmup, "results": results}


def chart(report: dict[str, Any], path: Path) -> Path | None:
    """Latency (p50) vs accuracy, one point per artifact; needs matplotlib (skipped without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from edgecls.fsutil import atomic_path

    points = [r for r in report["results"] if "latency" in r]
    if not points:
        return None
    fig, axis = plt.subplots(figsize=(7, 4.5))
    for index, r in enumerate(points):
        y = r.get("accuracy")
        axis.scatter(r["latency"]["p50_ms"], y if y is not None else 0, s=60)
        axis.annotate(f"{Path(r['artifact']).parent.name}", (r["latency"]["p50_ms"], y if y is not None else 0),
                      textcoords="offset points", xytext=(5, 5 + 11 * (index % 3)), fontsize=8)  # staggered: points may coincide
    axis.set_xlabel("latency p50 (ms, batch 1)")
    axis.set_ylabel("accuracy" if any("accuracy" in r for r in points) else "(no --data: accuracy not measured)")
    axis.set_title("edgecls bench: latency vs accuracy")
    axis.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
