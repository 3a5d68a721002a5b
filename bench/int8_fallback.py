"""Benchmark: a model that really quantizes badly, before and after the INT8 float fallback, on every target.

    python bench/int8_fallback.py [--run RUN] [--work DIR] [--per-class 200] [--factor 1000]

Without --run it writes real Fashion-MNIST images (Debian's IDX files, `edgecls data fashion-mnist`) and trains a
small plain_cnn through the CLI. The run is then copied with one backbone channel scaled by --factor after `pool1`
(edgecls.quantize.outlier: the next convolution compensates, so the float model is unchanged) and exported to
tflite, onnx and openvino INT8 with the default accuracy gate and fallback, next to the untouched run's INT8.
Prints a Markdown table for the docs and writes bench/results/int8_fallback-<run>.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = ("tflite", "onnx", "openvino")


def _cli(*args: str | Path) -> None:
    subprocess.run([sys.executable, "-c", "from edgecls.cli.app import main; main()", *map(str, args)], check=True)


def train_run(work: Path, per_class: int) -> Path:
    data, run = work / "fmnist", work / "plain-run"
    if not data.exists():
        _cli("data", "fashion-mnist", data, "--per-class", per_class, "--no-download")
    if not run.exists():
        _cli("train", "--data", data, "--model", "plain_cnn", "--img-size", "32", "--epochs", "6", "--fine-tune-epochs", "2",
             "--batch", "32", "--out", run, "--seed", "1")
    return run


def outlier_run(run: Path, work: Path, factor: float) -> Path:
    from edgecls.quantize.outlier import with_outlier_channel
    from edgecls.run_folder import load_run, save_model

    bad = work / f"{run.name}-outlier"
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(run, bad, ignore=shutil.ignore_patterns("export", "bench-*"))
    model, _ = load_run(bad)
    save_model(with_outlier_channel(model, factor=factor), bad / "model.keras")
    return bad


def _points(drop: float | None) -> str:
    """An accuracy drop as the change in points (-69.40: 69.4 points lost)."""
    return "-" if drop is None else f"{-drop * 100 + 0.0:+.2f}"


def record(result: Any) -> dict[str, Any]:
    report, validation, fallback = result.report, result.report.validation, result.report.fallback
    row: dict[str, Any] = {
        "target": result.target, "published": result.passed, "error": result.error,
        "keras_accuracy": validation.reference_accuracy if validation else None,
        "int8_accuracy": validation.artifact_accuracy if validation else None,
        "drop": validation.accuracy_drop if validation else None,
        "agreement": validation.top1_agreement if validation else None,
        "ran_as": validation.precision_ran if validation else None, "size_bytes": report.size_bytes,
        "worst_layer": report.sensitivity.worst(1)[0].label if report.sensitivity and report.sensitivity.layers else None,
        "export_seconds": result.seconds,
    }
    if fallback is not None:
        candidate = fallback.candidate
        row["fallback"] = {
            "full_int8_agreement": fallback.full_int8_agreement, "full_int8_drop": fallback.full_int8_accuracy_drop,
            "float_layers": len(candidate.float_nodes) if candidate else 0, "labels": candidate.layers if candidate else [],
            "tries": len(fallback.tries), "outcome": fallback.outcome, "tuned_on": fallback.tuned_on,
            "size_bytes": fallback.size_bytes, "full_int8_size_bytes": fallback.full_int8_size_bytes,
            "latency_ms": fallback.latency_ms, "full_int8_latency_ms": fallback.full_int8_latency_ms,
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a trained run (default: train plain_cnn on Fashion-MNIST in --work)")
    parser.add_argument("--work", type=Path, default=Path("runs/int8-fallback"))
    parser.add_argument("--per-class", type=int, default=200, help="Fashion-MNIST images per class and split (no --run)")
    parser.add_argument("--factor", type=float, default=1000.0, help="how much wider the outlier channel's range is")
    args = parser.parse_args()

    from edgecls.export import export
    from edgecls.fsutil import write_json

    args.work.mkdir(parents=True, exist_ok=True)
    run = args.run or train_run(args.work, args.per_class)
    bad = outlier_run(run, args.work, args.factor)
    rows = []
    for target in TARGETS:
        [plain] = export(run, target=target, precision="int8", out=args.work / "exports-plain")
        [outlier] = export(bad, target=target, precision="int8", out=args.work / "exports-outlier")
        rows.append({"target": target, "plain": record(plain), "outlier": record(outlier)})
        print(f"{target}: plain {'ok' if plain.passed else 'FAILED'}, outlier {'ok' if outlier.passed else 'FAILED'}", flush=True)
    source = f"--run {args.run}" if args.run else f"--per-class {args.per_class}"
    command = f"python bench/int8_fallback.py {source} --factor {args.factor:g}"
    write_json(RESULTS / f"int8_fallback-{run.name}.json", {
        "command": command, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
        "run": str(run), "factor": args.factor, "targets": rows,
    })
    print("| target | Keras acc | int8 of the run (pt) | outlier model, full int8: agreement (pt) | after fallback: agreement (pt) "
          "| kept float | size full int8 -> fallback | latency p50 full int8 -> fallback | published |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        plain, out = row["plain"], row["outlier"]
        fb = out.get("fallback") or {}
        print(f"| {row['target']} | {plain['keras_accuracy']:.4f} | {plain['int8_accuracy']:.4f} ({_points(plain['drop'])}) | "
              f"{fb.get('full_int8_agreement', out['agreement']):.3f} ({_points(fb.get('full_int8_drop', out['drop']))}) | "
              f"{out['agreement']:.3f} ({_points(out['drop'])}) | {fb.get('float_layers', 0)} ({', '.join(fb.get('labels', []))}) | "
              f"{(fb.get('full_int8_size_bytes') or 0) / 1e6:.2f} -> {(fb.get('size_bytes') or 0) / 1e6:.2f} MB | "
              f"{fb.get('full_int8_latency_ms')} -> {fb.get('latency_ms')} ms | {'yes' if out['published'] else 'no'} |")


if __name__ == "__main__":
    main()
