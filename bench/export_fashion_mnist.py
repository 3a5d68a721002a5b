"""Benchmark: fp32 vs INT8 per export target for a trained run: accuracy, agreement, size ratio, export time.

    python bench/export_fashion_mnist.py RUN [--holdout-size 2000]

Exports fp32 and INT8 for tflite, onnx and openvino (and edgetpu INT8) through edgecls.export, each
validated on the run's test split, then prints a Markdown table for docs/benchmarks.md and writes
bench/results/export-<run>.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--holdout-size", type=int, default=2000)
    parser.add_argument("--calib-size", type=int, default=300)
    args = parser.parse_args()

    from edgecls.export import export
    from edgecls.fsutil import write_json

    out = args.run / "bench-export"
    rows = {}
    for precision in ("fp32", "int8"):
        for result in export(args.run, target="all", precision=precision, holdout_size=args.holdout_size,
                             calib_size=args.calib_size, out=out):
            if not result.passed:
                raise SystemExit(f"{result.target}-{result.precision} failed: {result.error}")
            rows[(result.target, precision)] = result
    table, records = [], []
    for target in ("tflite", "edgetpu", "onnx", "openvino"):
        int8 = rows.get((target, "int8"))
        fp32 = rows.get((target, "fp32")) or rows.get(("tflite", "fp32"))
        if int8 is None:
            continue
        v8, v32 = int8.validation, fp32.validation
        assert v8 is not None and v32 is not None and v8.accuracy_drop is not None  # passed exports are validated on labelled images
        record = {
            "target": target, "fp32_accuracy": v32.artifact_accuracy, "int8_accuracy": v8.artifact_accuracy,
            "keras_accuracy": v8.reference_accuracy, "drop_points": round(v8.accuracy_drop * 100, 2),
            "agreement": v8.top1_agreement, "fp32_bytes": fp32.size_bytes, "int8_bytes": int8.size_bytes,
            "size_ratio": round(int8.size_bytes / fp32.size_bytes, 3), "fp32_export_s": fp32.seconds, "int8_export_s": int8.seconds,
            "int8_ran_as": v8.precision_ran, "images": v8.images,
        }
        records.append(record)
        table.append(
            f"| {target} | {record['fp32_accuracy']:.4f} | {record['int8_accuracy']:.4f} | {record['drop_points']:+.2f} | "
            f"{record['agreement']:.4f} | {record['fp32_bytes'] / 1e6:.2f} -> {record['int8_bytes'] / 1e6:.2f} MB "
            f"({record['size_ratio'] * 100:.0f}%) | "
            f"{record['fp32_export_s']:.0f} / {record['int8_export_s']:.0f} s |"
        )
    write_json(RESULTS / f"export-{args.run.name}.json", {
        "command": f"python bench/export_fashion_mnist.py {args.run} --holdout-size {args.holdout_size} --calib-size {args.calib_size}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"), "targets": records,
    })
    print("| target | fp32 acc | int8 acc | drop (pt) | top-1 agreement | size fp32 -> int8 | export time fp32 / int8 |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    main()
