"""Benchmark: what `edgecls train` does before its first training step, piece by piece, on one ImageFolder tree.

    python bench/train_setup.py --data bench/work/fashion-mnist-6000 --img-size 64 --rounds 3

Times, in this order and each in this process: decoding the tree into the split arrays (load_training_data, in memory),
the duplicate check over the splits, writing splits.json, touching as much fresh memory as the decoded images take,
importing TensorFlow, and building the backbone with its weights. The first round pays the imports of the decoders; the
table shows the median and the range over the rounds. Writes bench/results/train_setup-<tree>-<px>px.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RESULTS = Path(__file__).resolve().parent / "results"


def _timed(times: dict[str, list[float]], name: str, started: float) -> None:
    times.setdefault(name, []).append(round(time.perf_counter() - started, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="an ImageFolder tree (e.g. bench/work/fashion-mnist-6000)")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    from rich.console import Console

    from edgecls.data.check import cross_split_duplicates
    from edgecls.fsutil import write_json
    from edgecls.run_folder import write_splits
    from edgecls.training.pipeline import load_training_data

    size = (args.img_size, args.img_size)
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="edgecls-setup-bench-") as scratch:
        run = Path(scratch)
        for _ in range(args.rounds):
            started = time.perf_counter()
            loaded = load_training_data(str(args.data), 0.1, 0.0, 0, size, "off", run, Console(stderr=True))
            _timed(times, "decode into split arrays", started)
            started = time.perf_counter()
            cross_split_duplicates(loaded.splits, loaded.digests)
            _timed(times, "duplicate check", started)
            splits = loaded.splits
            started = time.perf_counter()
            write_splits(run, Path(splits.root), list(splits.classes), {n: getattr(splits, n) for n in ("train", "val", "test")})
            _timed(times, "write splits.json", started)
            images = sum(len(array) for array in loaded.arrays.values())
            del loaded, splits
            started = time.perf_counter()
            np.empty((images, *size, 3), np.uint8).fill(1)  # as much fresh memory as the decoded images
            _timed(times, "touch fresh memory of that size", started)
    started = time.perf_counter()
    import tensorflow  # noqa: F401

    _timed(times, "import tensorflow", started)
    from edgecls.zoo.classifier import build_classifier

    started = time.perf_counter()
    build_classifier(args.model, 10, size, "imagenet", None, 0.2)
    _timed(times, f"build {args.model}", started)

    summary = {name: {"median": statistics.median(v), "min": min(v), "max": max(v), "rounds": v} for name, v in times.items()}
    record = {"data": str(args.data), "images": images, "img_size": args.img_size, "pieces": summary,
              "machine": f"{os.cpu_count()} cores", "load_average": list(os.getloadavg()),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    write_json(RESULTS / f"train_setup-{args.data.name}-{args.img_size}px.json", record)
    print(json.dumps(record, indent=2))
    print("| piece | median s | range s |\n|---|---|---|")
    for name, row in summary.items():
        print(f"| {name} | {row['median']} | {row['min']}-{row['max']} |")


if __name__ == "__main__":
    main()
