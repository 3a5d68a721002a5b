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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--alpha", type=float, default=0.25, help="plain_cnn width: a tiny model, so data loading shows")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--modes", default="off,on", help="--stream values to run, in order")
    parser.add_argument("--work", type=Path, default=Path("bench/work"))
    args = parser.parse_args()

    started = time.perf_counter()
    data = make_tree(args.work / f"stream-{args.images}-{args.img_size}px", args.images, args.img_size, os.cpu_count() or 1)
    generate_seconds = time.perf_counter() - started
    load = list(os.getloadavg())
    runs = [run_train(data, args.work / f"run-stream-{mode}", mode, args) for mode in args.modes.split(",")]
    tag = f"{args.images}img-{args.img_size}px"
    record = {
        "command": "python bench/train_streaming.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                                 (("images", args.images), ("img_size", args.img_size),
                                                                  ("alpha", args.alpha), ("batch", args.batch), ("modes", args.modes))),
        "dataset": {"images": args.images, "classes": CLASSES, "size_px": args.img_size, "format": "PNG",
                    "decoded_gib": round(args.images * args.img_size**2 * 3 / 1024**3, 2),
                    "generate_seconds": round(generate_seconds, 1)},
        "model": f"plain_cnn alpha {args.alpha}, --weights none, 1 epoch, no fine-tune, --no-augment, batch {args.batch}",
        "runs": runs,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_at_start": load, "load_at_end": list(os.getloadavg())},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"train_streaming-{tag}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    for run in runs:
        print(f"| {args.images} PNG at {args.img_size} px | --stream {run['stream']} | {run['peak_rss_mib']:.0f} MiB | "
              f"{run['train_images_per_second']} img/s | {run['wall_seconds']} s |")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
