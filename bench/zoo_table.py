"""Benchmark: every zoo backbone trained from scratch (and pretrained where the weights are offline) on one
Fashion-MNIST subset, then exported to INT8 for each CPU target with the accuracy gate off, to read the raw drop.

    python bench/zoo_table.py --per-class 100 --img-size 32 --epochs 10            # every backbone
    python bench/zoo_table.py --only mobilenet_v3_small efficientnet_lite0         # some

Writes bench/results/zoo_table-<settings>.json after every backbone (a long run keeps what it finished; a run with
--only adds its rows to the file's) and prints
Markdown rows for docs/benchmarks.md. Train time is wall time on this machine: compare rows of one run only.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = ("tflite", "onnx", "openvino")


def train_one(data: Path, run: Path, model: str, weights: str, img_size: int, epochs: int, fine_tune: int) -> dict[str, Any]:
    import edgecls

    if run.is_dir() and (run / ".edgecls-output").is_file():
        shutil.rmtree(run)  # a benchmark run is replaced by the next one
    start = time.perf_counter()
    result = edgecls.train(data=data, model=model, weights=weights, img_size=img_size, epochs=epochs, fine_tune_epochs=fine_tune,
                           out=str(run), test_split=0.0, seed=0)
    return {"test_accuracy": round(float(result.metrics["accuracy"]), 4), "train_seconds": round(time.perf_counter() - start, 1)}


def int8_drops(run: Path) -> dict[str, Any]:
    """Each CPU target's INT8 accuracy and drop vs Keras on the held-out images, gate off (the raw drop)."""
    import edgecls

    drops: dict[str, Any] = {}
    for target in TARGETS:
        try:
            results = edgecls.export_model(run, target=target, precision="int8", max_drop=None, min_agreement=None, fallback_layers=0)
        except Exception as exc:  # noqa: BLE001 - one failing target is a table cell, not the end of the run
            drops[target] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            continue
        for item in results:
            validation = item.report.validation
            if item.error is not None or validation is None:
                drops[target] = {"error": item.error or "no validation"}
                continue
            drops[target] = {"accuracy": validation.artifact_accuracy, "drop": validation.accuracy_drop,
                             "agreement": validation.top1_agreement}
    return drops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=100, help="train (and test) images per class")
    parser.add_argument("--img-size", type=int, default=32, help="input size (raised to a backbone's minimum)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs from scratch (the whole network trains)")
    parser.add_argument("--pretrained-epochs", type=int, nargs=2, default=(5, 3), help="head + fine-tune epochs, pretrained")
    parser.add_argument("--only", nargs="*", default=None, help="backbone names (default: every one)")
    parser.add_argument("--work", type=Path, default=Path("bench/work"))
    args = parser.parse_args()
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing warnings of the validation passes

    from edgecls.data.fashion_mnist import write_fashion_mnist
    from edgecls.fsutil import write_json
    from edgecls.zoo.registry import list_backbones

    data = args.work / f"fashion-mnist-{args.per_class}"
    if not (data / "train").is_dir():
        write_fashion_mnist(data, per_class=args.per_class, source=None, seed=0)
    specs = [s for s in list_backbones() if args.only is None or s.name in args.only]
    tag = f"{args.per_class}pc-{args.img_size}px-{args.epochs}ep"
    out = RESULTS / f"zoo_table-{tag}.json"
    record: dict[str, Any] = {
        "command": "python bench/zoo_table.py " + " ".join(
            [f"--per-class {args.per_class}", f"--img-size {args.img_size}", f"--epochs {args.epochs}"]
            + ([f"--only {' '.join(args.only)}"] if args.only else [])),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"), "rows": [],
    }
    if out.is_file():  # rows of an earlier run with the same settings are kept; a backbone run again replaces its own
        import json

        earlier = json.loads(out.read_text(encoding="utf-8")).get("rows", [])
        names = {s.name for s in specs}
        record["rows"] = [row for row in earlier if row.get("backbone") not in names]
    for spec in specs:
        size = max(args.img_size, spec.min_size)
        modes = [("scratch", "none", args.epochs, 0)]
        if spec.offline_weights:
            modes.append(("pretrained", "auto", *args.pretrained_epochs))
        for mode, weights, epochs, fine_tune in modes:
            run = args.work / f"zoo-{spec.name}-{mode}-{tag}"
            row: dict[str, Any] = {"backbone": spec.name, "mode": mode, "img_size": size, "load_at_start": list(os.getloadavg())}
            try:
                row.update(train_one(data, run, spec.name, weights, size, epochs, fine_tune))
                row["int8"] = int8_drops(run)
            except Exception as exc:  # noqa: BLE001 - the row says what failed; the next backbone still runs
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            row["load_at_end"] = list(os.getloadavg())
            record["rows"].append(row)
            write_json(out, record)
            print(markdown_row(row), flush=True)
    print(f"wrote {out}")


def markdown_row(row: dict[str, Any]) -> str:
    if "error" in row and "test_accuracy" not in row:
        return f"| {row['backbone']} | {row['mode']} | {row['img_size']} | failed: {row['error']} | | | | |"
    cells = []
    for target in TARGETS:
        cell = row.get("int8", {}).get(target, {})
        drop = cell.get("drop")
        cells.append(f"{-100 * drop:+.1f} pt" if drop is not None else f"failed ({cell.get('error', '?')[:60]})")
    return (f"| {row['backbone']} | {row['mode']} | {row['img_size']} | {row['test_accuracy']:.4f} | {row['train_seconds']:.0f} s | "
            + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
