"""Benchmark: peak RSS and throughput of a short training run, images streamed from disk vs held in memory.

    python bench/train_streaming.py --images 20000 --img-size 224        # generates bench/work/stream-20000 once

Generates an ImageFolder of synthetic PNGs (10 classes), then runs `edgecls train` twice in fresh processes
(`--stream off`, `--stream on`; plain_cnn, 1 epoch, no fine-tune), each measured with os.wait4 (peak RSS of that
process) and from its metrics.json (train seconds, train images/s). Writes bench/results/train_streaming-<settings>.json
and prints Markdown rows for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = 10


def _write_image(job: tuple[Path, int, int, int]) -> None:
    """A smooth, class-dependent picture (PNG compresses it like a photo rather than like noise)."""
    from PIL import Image

    path, label, index, size = job
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = 2 * np.pi * label / CLASSES
    wave = np.sin((x * np.cos(angle) + y * np.sin(angle)) * (4 + label) * np.pi + rng.uniform(0, 2 * np.pi))
    tint = rng.uniform(0.3, 1.0, 3)
    pixels = (127.5 + 100 * wave[..., None] * tint + rng.normal(0, 6, (size, size, 3))).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, compress_level=1)


def make_tree(root: Path, images: int, size: int, workers: int) -> Path:
    done = root / ".complete"
    if done.is_file():
        return root
    jobs = []
    for index in range(images):
        label = index % CLASSES
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((folder / f"{index:06d}.png", label, index, size))
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_image, jobs, chunksize=256))
    done.write_text("ok")
    return root


def run_train(data: Path, out: Path, stream: str, args: argparse.Namespace) -> dict:
    if out.exists():
        shutil.rmtree(out)
    command = [sys.executable, "-m", "edgecls", "train", "--data", str(data), "--model", "plain_cnn", "--weights", "none",
               "--alpha", str(args.alpha), "--img-size", str(args.img_size), "--epochs", "1", "--fine-tune-epochs", "0",
               "--batch", str(args.batch), "--val-split", "0.05", "--test-split", "0.05", "--no-augment", "--stream", stream,
               "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"edgecls train --stream {stream} failed:\n{stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    meta = json.loads((out / "meta.json").read_text())
    train_images = meta["dataset"]["counts"]["train"]
    return {
        "stream": stream,
        "streamed": "streaming from disk" in stderr,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "wall_seconds": round(wall, 1),
        "train_seconds": metrics["train_seconds"],
        "train_images": train_images,
        "train_images_per_second": round(train_images / metrics["train_seconds"], 1),  # 1 epoch, validation included
        "test_accuracy": metrics.get("accuracy"),
    }


def pipeline_child(data: Path, mode: str, args: argparse.Namespace) -> None:
    """One epoch of training batches (make_dataset, no model) over every image of `data`: decode in memory, or cache on
    disk then stream; prints one JSON line (seconds of decode/cache and of the epoch)."""
    import tensorflow as tf

    from edgecls.data.folder import load_splits
    from edgecls.training.disk_cache import cache_images
    from edgecls.training.pipeline import load_images, make_dataset

    tf.config.experimental.enable_op_determinism()  # as edgecls train does
    splits = load_splits(data, val_split=0.0, test_split=0.0, seed=0)
    paths, labels = list(splits.train.paths), np.asarray(splits.train.labels, np.int64)
    size = (args.img_size, args.img_size)
    start = time.perf_counter()
    cache = args.work / f"pipeline-cache-{args.images}"
    images = cache_images(paths, size, cache, "train", "bench") if mode == "on" else load_images(paths, size)
    decode = time.perf_counter() - start
    dataset = make_dataset(images, labels, CLASSES, args.batch, True, None, 0, (0, 1))
    start = time.perf_counter()
    count = sum(int(x.shape[0]) for x, _ in dataset)
    epoch = time.perf_counter() - start
    shutil.rmtree(cache, ignore_errors=True)
    print(json.dumps({"images": count, "decode_or_cache_seconds": round(decode, 1), "epoch_seconds": round(epoch, 1),
                      "batches_images_per_second": round(count / epoch, 1)}))


def run_pipeline_isolated(data: Path, mode: str, args: argparse.Namespace) -> dict:
    """The pipeline child in a fresh process, waited for with os.wait4: its own peak RSS."""
    command = [sys.executable, __file__, "--child", mode, "--images", str(args.images), "--img-size", str(args.img_size),
               "--batch", str(args.batch), "--work", str(args.work)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"pipeline --stream {mode} failed:\n{err[-3000:]}")
    return {"stream": mode, "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), **json.loads(out.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--alpha", type=float, default=0.25, help="plain_cnn width: a tiny model, so data loading shows")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--modes", default="off,on", help="--stream values to run, in order")
    parser.add_argument("--work", type=Path, default=Path("bench/work"))
    parser.add_argument("--what", choices=("train", "pipeline"), default="train",
                        help="train: edgecls train runs; pipeline: one epoch of make_dataset batches, no model")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = args.work / f"stream-{args.images}-{args.img_size}px"
    if args.child:
        pipeline_child(data_dir, args.child, args)
        return

    started = time.perf_counter()
    data = make_tree(data_dir, args.images, args.img_size, os.cpu_count() or 1)
    generate_seconds = time.perf_counter() - started
    load = list(os.getloadavg())
    if args.what == "pipeline":
        runs = [run_pipeline_isolated(data, mode, args) for mode in args.modes.split(",")]
    else:
        runs = [run_train(data, args.work / f"run-stream-{mode}", mode, args) for mode in args.modes.split(",")]
    tag = f"{args.what}-{args.images}img-{args.img_size}px"
    record = {
        "command": "python bench/train_streaming.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                                 (("what", args.what), ("images", args.images), ("img_size", args.img_size),
                                                                  ("alpha", args.alpha), ("batch", args.batch), ("modes", args.modes))),
        "dataset": {"images": args.images, "classes": CLASSES, "size_px": args.img_size, "format": "PNG",
                    "decoded_gib": round(args.images * args.img_size**2 * 3 / 1024**3, 2),
                    "generate_seconds": round(generate_seconds, 1)},
        "what": (f"edgecls train: plain_cnn alpha {args.alpha}, --weights none, 1 epoch, no fine-tune, --no-augment, batch {args.batch}"
                 if args.what == "train" else f"one epoch of make_dataset training batches (batch {args.batch}, no model)"),
        "runs": runs,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_at_start": load, "load_at_end": list(os.getloadavg())},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"train_streaming-{tag}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    for run in runs:
        speed = run.get("train_images_per_second", run.get("batches_images_per_second"))
        print(f"| {args.what} | {args.images} PNG at {args.img_size} px | --stream {run['stream']} | "
              f"{run['peak_rss_mib']:.0f} MiB | {speed} img/s |")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
