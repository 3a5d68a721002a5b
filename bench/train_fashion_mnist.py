"""Benchmark: fine-tune a backbone on a Fashion-MNIST subset on this machine and report accuracy and speed.

    python bench/train_fashion_mnist.py --per-class 1000 --img-size 96 --epochs 5 --fine-tune-epochs 4
    python bench/train_fashion_mnist.py --per-class 2000 --img-size 48 --time-budget 3m   # train's defaults + a budget

With --time-budget the budget covers the whole edgecls.train call (importing TensorFlow, decoding, building, training,
saving, the final evaluation of the 10,000 test images): compare wall_seconds with it.

Writes bench/results/train_fashion_mnist-<settings>.json and prints a Markdown row for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RESULTS = Path(__file__).resolve().parent / "results"


def _augment_option(mode: str) -> dict[str, Any]:
    from edgecls.training.augment import AugmentConfig

    return {"auto": {}, "on": {"augment": AugmentConfig(auto=False)}, "off": {"augment": None}}[mode]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--per-class", type=int, default=1000, help="train (and test) images per class")
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=None, help="default 5 (train's default with --time-budget)")
    parser.add_argument("--fine-tune-epochs", type=int, default=None, help="default 4 (planned by --time-budget)")
    parser.add_argument("--time-budget", default=None, help="edgecls train --time-budget (e.g. 3m): epochs planned to fit")
    parser.add_argument("--fine-tune-lr", type=float, default=None)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--label-smoothing", type=float, default=None, help="edgecls train --label-smoothing (default: train's)")
    parser.add_argument("--dropout", type=float, default=None, help="edgecls train --dropout (default: train's)")
    parser.add_argument("--unfreeze", type=int, default=None, help="edgecls train --unfreeze (default: train's)")
    parser.add_argument("--augment", choices=("auto", "on", "off"), default="auto",
                        help="train's default (auto: a short budget turns it off), --augment (on) or --no-augment (off)")
    parser.add_argument("--work", type=Path, default=Path("bench/work"))
    parser.add_argument("--suffix", default="", help="appended to the result file's name (keeps an earlier result of the same settings)")
    args = parser.parse_args()

    import edgecls
    from edgecls.data.fashion_mnist import write_fashion_mnist
    from edgecls.fsutil import write_json

    if args.time_budget is None:
        args.epochs = 5 if args.epochs is None else args.epochs
        args.fine_tune_epochs = 4 if args.fine_tune_epochs is None else args.fine_tune_epochs
    epochs = {k: v for k, v in (("epochs", args.epochs), ("fine_tune_epochs", args.fine_tune_epochs)) if v is not None}
    plan = f"budget{args.time_budget}" if args.time_budget else f"{args.epochs}+{args.fine_tune_epochs}ep"
    tag = f"{args.model}-{args.per_class}pc-{args.img_size}px-{plan}" + (f"-unfreeze{args.unfreeze}" if args.unfreeze is not None else "")
    tag += f"-lr{args.fine_tune_lr:g}" if args.fine_tune_lr is not None else ""  # a rate of its own: a file of its own
    tag += f"-ls{args.label_smoothing:g}" if args.label_smoothing is not None else ""
    tag += f"-do{args.dropout:g}" if args.dropout is not None else ""
    tag += {"auto": "", "on": "-augon", "off": "-noaug"}[args.augment]
    result_name = f"train_fashion_mnist-{tag}{args.suffix}.json"
    data = args.work / f"fashion-mnist-{args.per_class}"
    if not (data / "train").is_dir():
        write_fashion_mnist(data, per_class=args.per_class, source=None, seed=0)
    run = args.work / f"run-{tag}"
    if run.is_dir() and (run / ".edgecls-output").is_file():
        shutil.rmtree(run)  # a benchmark run is replaced by the next one
    load_at_start = list(os.getloadavg())
    start = time.perf_counter()
    gc_pauses = _GcPauses(start)
    gc.callbacks.append(gc_pauses.callback)
    result = edgecls.train(
        data=data, model=args.model, img_size=args.img_size, **epochs, time_budget=args.time_budget,
        fine_tune_lr=args.fine_tune_lr, batch=args.batch, out=str(run), test_split=0.0,
        **{name: getattr(args, name) for name in ("unfreeze", "label_smoothing", "dropout") if getattr(args, name) is not None},
        **_augment_option(args.augment),
    )
    wall = time.perf_counter() - start
    gc.callbacks.remove(gc_pauses.callback)
    metrics = result.metrics
    record = {
        "command": "python bench/train_fashion_mnist.py " + " ".join(
            f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in vars(args).items()
            if k not in ("work", "suffix") and v not in (None, False) and (k, v) != ("augment", "auto")),
        "model": args.model, "per_class": args.per_class, "img_size": args.img_size,
        "epochs": args.epochs, "fine_tune_epochs": args.fine_tune_epochs, "time_budget": args.time_budget,
        "head_epochs": sum(row["phase"] == "head" for row in result.history),
        "fine_tune_epochs_run": sum(row["phase"] == "fine_tune" for row in result.history),
        "fine_tune_steps_per_epoch": ((metrics.get("decisions") or {}).get("time_plan") or {}).get("fine_tune_steps_per_epoch"),
        "decisions": metrics.get("decisions"), "load_average_at_start": load_at_start, "load_average_at_end": list(os.getloadavg()),
        "train_images": result.meta.dataset["counts"]["train"], "test_images": metrics.get("num_images"),
        "test_accuracy": metrics.get("accuracy"), "macro_f1": metrics.get("macro", {}).get("f1"),
        "train_seconds": metrics.get("train_seconds"), "wall_seconds": round(wall, 1),
        "run_seconds": round(result.seconds, 1),  # inside the run (its budget's span); the rest: importing TensorFlow, checks
        "gc_pauses": gc_pauses.slow,  # [seconds since start, generation, seconds] of each collection over 0.2 s
        "feature_images_per_second": metrics.get("feature_images_per_second"),
        "fine_tune_images_per_second": metrics.get("fine_tune_images_per_second"),
        "eval_images_per_second": metrics.get("eval_images_per_second"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": _commit(),
    }
    write_json(RESULTS / result_name, record)
    print(json.dumps(record, indent=2))
    if args.time_budget:  # the time-to-accuracy table of docs/benchmarks.md
        load = f"{load_at_start[0]:.1f} -> {record['load_average_at_end'][0]:.1f}"
        print(f"| {args.time_budget} | {args.img_size} | {args.per_class} | {record['test_accuracy']:.4f} | "
              f"{record['train_seconds']:.0f} | {record['wall_seconds']:.0f} | {record['head_epochs']} | "
              f"{record['fine_tune_epochs_run']} | {load} | "
              f"bench/results/{result_name} |")
    else:
        print(f"| {args.model} | {args.per_class * 10} | {args.img_size} | {plan} | "
              f"{record['test_accuracy']:.4f} | {record['train_seconds']:.0f} s | "
              f"{record['fine_tune_images_per_second']} | {record['eval_images_per_second']} |")



class _GcPauses:
    """Python's cyclic GC collections that took over 0.2 s while the benchmark ran (gc.callbacks)."""

    def __init__(self, start: float) -> None:
        self.start, self.began, self.slow = start, 0.0, []

    def callback(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self.began = now
        elif now - self.began > 0.2:
            self.slow.append([round(self.began - self.start, 1), info["generation"], round(now - self.began, 2)])


def _commit() -> str | None:
    """The code's git commit (the edgecls package's checkout), '+' when it has uncommitted changes; None outside git."""
    import subprocess

    import edgecls

    folder = Path(edgecls.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


if __name__ == "__main__":
    main()
