"""Benchmark: peak RSS and throughput of a short training run, images streamed from disk vs held in memory.

    python bench/train_streaming.py --images 20000 --img-size 224        # generates bench/work/stream-20000 once
    python bench/train_streaming.py --work /big --images 200000 --holdout 1000 --format jpg \
        --weights random-file --epochs 3 --fine-tune-epochs 1 --time-budget 22m --modes on   # the issue's 200,000-image demo

Generates an ImageFolder of synthetic PNGs or JPEGs (10 classes; flat, or pre-split with --holdout), then runs
`edgecls train` in fresh processes, one per --modes value (plain_cnn, 1 epoch, no fine-tune, or the --time-budget
recipe with --weights random-file), each measured with os.wait4 (peak RSS of that
process) and from its metrics.json (train seconds, train images/s). Writes bench/results/train_streaming-<settings>.json
and prints Markdown rows for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = 10


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return y, x


def _write_image(job: tuple[Path, int, int, int]) -> None:
    """A smooth, class-dependent picture (PNG/JPEG compress it like a photo rather than like noise). Written under a
    temporary name and renamed: an interrupted generation leaves no truncated image, and a rerun skips finished ones."""
    from PIL import Image

    path, label, index, size = job
    if path.is_file() and path.stat().st_size > 0:
        return
    rng = np.random.default_rng(index)
    y, x = _grid(size)
    angle = 2 * np.pi * label / CLASSES
    wave = np.sin((x * np.cos(angle) + y * np.sin(angle)) * (4 + label) * np.pi + rng.uniform(0, 2 * np.pi))
    tint = rng.uniform(0.3, 1.0, 3).astype(np.float32)
    noise = rng.integers(-10, 11, (size, size, 3), dtype=np.int16)
    pixels = (127.5 + 100 * wave[..., None] * tint + noise).clip(0, 255).astype(np.uint8)
    partial = path.with_name(path.name + ".part")
    if path.suffix == ".png":
        Image.fromarray(pixels).save(partial, format="PNG", compress_level=1)
    else:
        Image.fromarray(pixels).save(partial, format="JPEG", quality=90)
    os.replace(partial, path)


def make_tree(root: Path, images: int, size: int, workers: int, fmt: str = "png", holdout: int = 0) -> Path:
    """`images` pictures in class folders under `root`; with `holdout` > 0 a pre-split tree instead: train/ with
    `images`, val/ and test/ with `holdout` each. Resumable: finished files are skipped, `.complete` marks the end."""
    done = root / ".complete"
    if done.is_file():
        return root
    splits = [("", images)] if holdout <= 0 else [("train", images), ("val", holdout), ("test", holdout)]
    jobs, first = [], 0
    for split, count in splits:
        for index in range(first, first + count):
            label = index % CLASSES
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append((folder / f"{index:06d}.{fmt}", label, index, size))
        first += count
    for stale in root.rglob("*.part"):
        stale.unlink()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_image, jobs, chunksize=256))
    done.write_text("ok")
    return root


class _Monitor(threading.Thread):
    """Samples the train process every 2 s: its RSS (/proc), and the streaming cache under its run folder (bytes on
    disk, when each split's manifest appeared): the RSS timeline shows whether memory stays flat while the cache fills."""

    def __init__(self, pid: int, cache: Path) -> None:
        super().__init__(daemon=True)
        self.pid, self.cache, self.started = pid, cache, time.perf_counter()
        self.samples: list[tuple[float, float, float]] = []  # (seconds, RSS MiB, cache GiB on disk)
        self.events: dict[str, float] = {}
        self.stop = threading.Event()

    def _rss_mib(self) -> float:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def _cache_gib(self) -> float:
        total = 0
        try:
            for entry in os.scandir(self.cache):
                if entry.name.endswith(".u8"):
                    total += entry.stat().st_blocks * 512
                elif entry.name.endswith(".json"):
                    self.events.setdefault(f"{entry.name[:-5]}_cache_written_s", round(time.perf_counter() - self.started, 1))
        except OSError:
            pass
        return total / 1024**3

    def run(self) -> None:
        while not self.stop.wait(2.0):
            gib = self._cache_gib()
            if gib > 0:
                self.events.setdefault("cache_first_bytes_s", round(time.perf_counter() - self.started, 1))
            self.samples.append((round(time.perf_counter() - self.started, 1), round(self._rss_mib(), 1), round(gib, 2)))

    def summary(self) -> dict:
        cache_max = max((gib for _, _, gib in self.samples), default=0.0)
        timeline = self.samples[:: max(1, len(self.samples) // 40)]  # about 40 points
        return {"cache_gib_on_disk_max": cache_max, "events": self.events,
                "rss_timeline_s_mib_cachegib": [list(point) for point in timeline]}


def run_train(data: Path, out: Path, stream: str, args: argparse.Namespace) -> dict:
    if out.exists():
        shutil.rmtree(out)
    command = [sys.executable, "-m", "edgecls", "train", "--data", str(data), "--model", "plain_cnn", "--weights", args.weights,
               "--alpha", str(args.alpha), "--img-size", str(args.img_size), "--epochs", str(args.epochs),
               "--fine-tune-epochs", str(args.fine_tune_epochs), "--batch", str(args.batch), "--no-augment", "--stream", stream,
               "--out", str(out)]
    if args.holdout <= 0:  # a flat tree: edgecls splits it
        command += ["--val-split", "0.05", "--test-split", "0.05"]
    if args.time_budget:
        command += ["--time-budget", args.time_budget]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    monitor = _Monitor(proc.pid, out / "stream_cache")
    monitor.start()
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    monitor.stop.set()
    monitor.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    (out.parent / f"{out.name}.stderr.log").write_text(stderr)
    if proc.returncode != 0:
        raise SystemExit(f"edgecls train --stream {stream} failed:\n{stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    meta = json.loads((out / "meta.json").read_text())
    train_images = meta["dataset"]["counts"]["train"]
    run = {
        "stream": stream,
        "streamed": "streaming from disk" in stderr,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "wall_seconds": round(wall, 1),
        "train_seconds": metrics["train_seconds"],
        "train_images": train_images,
        "test_accuracy": metrics.get("accuracy"),
        **{key: metrics[key] for key in ("feature_images_per_second", "fine_tune_images_per_second") if key in metrics},
        "time_plan": metrics.get("decisions", {}).get("time_plan"),
        **monitor.summary(),
    }
    if not args.time_budget and args.weights == "none":  # one full scratch epoch: images / train seconds (validation included)
        run["train_images_per_second"] = round(train_images / metrics["train_seconds"], 1)
    if args.keep_runs:
        return run
    shutil.rmtree(out, ignore_errors=True)
    return run


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
    command = [sys.executable, __file__, "--child", mode, "--what", args.what, "--images", str(args.images),
               "--img-size", str(args.img_size),
               "--batch", str(args.batch), "--work", str(args.work), "--format", args.format, "--holdout", str(args.holdout)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"pipeline --stream {mode} failed:\n{err[-3000:]}")
    return {"stream": mode, "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), **json.loads(out.strip().splitlines()[-1])}


def setup_child(data: Path, mode: str, args: argparse.Namespace) -> None:
    """`edgecls train`'s data setup alone (training.pipeline.load_training_data: scan, verify, decode, hash, and with
    --stream on the uint8 cache), in this fresh process; prints one JSON line (seconds, counts)."""
    from rich.console import Console

    from edgecls.training.pipeline import load_training_data

    run_dir = args.work / f"setup-run-{args.images}-{mode}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    val_test = (0.0, 0.0) if args.holdout > 0 else (0.05, 0.05)
    start = time.perf_counter()
    loaded = load_training_data(str(data), *val_test, 0, (args.img_size, args.img_size), mode, run_dir, Console(stderr=True))
    seconds = time.perf_counter() - start
    counts = {name: len(loaded.arrays[name]) for name in ("train", "val", "test")}
    shutil.rmtree(run_dir, ignore_errors=True)
    print(json.dumps({"setup_seconds": round(seconds, 1), "streamed": loaded.streamed, "counts": counts,
                      "skipped": len(loaded.splits.skipped), "digests": len(loaded.digests),
                      "images_per_second": round(sum(counts.values()) / seconds, 1)}))


def random_backbone_weights(args: argparse.Namespace) -> str:
    """A plain_cnn backbone (this alpha), randomly initialised with seed 0, saved as a .weights.h5 file: passed as
    --weights it makes `edgecls train` follow the pretrained recipe (frozen-backbone head on features, then a fine-tune
    in budget-sized epochs), the only recipe --time-budget can end inside one pass over 200,000 images."""
    path = args.work / f"plain_cnn-alpha{args.alpha}-random.weights.h5"
    if not path.is_file():
        import keras

        from edgecls.zoo.keras_apps import plain_cnn

        keras.utils.set_random_seed(0)
        path.parent.mkdir(parents=True, exist_ok=True)
        plain_cnn((args.img_size, args.img_size), None, args.alpha).save_weights(path)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--alpha", type=float, default=0.25, help="plain_cnn width: a tiny model, so data loading shows")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--modes", default="off,on", help="--stream values to run, in order")
    parser.add_argument("--work", type=Path, default=Path("bench/work"), help="generated data and run folders (use a big disk)")
    parser.add_argument("--what", choices=("train", "pipeline", "setup"), default="train",
                        help="train: edgecls train runs; pipeline: one epoch of make_dataset batches, no model; "
                             "setup: training's data setup alone (scan, verify, decode, cache)")
    parser.add_argument("--format", choices=("png", "jpg"), default="png", help="generated images (jpg: ~14 KB each, for large N)")
    parser.add_argument("--holdout", type=int, default=0,
                        help="> 0: a pre-split tree (train/ with --images, val/ and test/ with this many each)")
    parser.add_argument("--gen-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--weights", default="none",
                        help="none (from scratch, one full epoch), or 'random-file': a random plain_cnn backbone saved to a file (see "
                             "random_backbone_weights), so --time-budget can bound a run over any number of images")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--fine-tune-epochs", type=int, default=0)
    parser.add_argument("--time-budget", default=None, help="passed to edgecls train")
    parser.add_argument("--keep-runs", action="store_true", help="keep the run folders (default: removed after measuring)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    suffix = ("" if args.format == "png" else f"-{args.format}") + (f"-presplit{args.holdout}" if args.holdout > 0 else "")
    data_dir = args.work / f"stream-{args.images}-{args.img_size}px{suffix}"
    if args.child:
        (setup_child if args.what == "setup" else pipeline_child)(data_dir, args.child, args)
        return

    started = time.perf_counter()
    data = make_tree(data_dir, args.images, args.img_size, args.gen_workers, args.format, args.holdout)
    generate_seconds = time.perf_counter() - started
    if args.weights == "random-file":
        args.weights = random_backbone_weights(args)
    load = list(os.getloadavg())
    if args.what in ("pipeline", "setup"):
        runs = [run_pipeline_isolated(data, mode, args) for mode in args.modes.split(",")]
    else:
        runs = [run_train(data, args.work / f"run-stream-{mode}", mode, args) for mode in args.modes.split(",")]
    tag = f"{args.what}-{args.images}img-{args.img_size}px" + (f"-budget{args.time_budget}" if args.time_budget else "")
    options = (("what", args.what), ("images", args.images), ("img_size", args.img_size), ("alpha", args.alpha), ("batch", args.batch),
               ("modes", args.modes), ("format", args.format), ("holdout", args.holdout), ("weights", args.weights),
               ("epochs", args.epochs), ("fine_tune_epochs", args.fine_tune_epochs), ("time_budget", args.time_budget))
    record = {
        "command": "python bench/train_streaming.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options if v is not None),
        "dataset": {"images": args.images, "holdout_each": args.holdout, "classes": CLASSES, "size_px": args.img_size,
                    "format": args.format.upper(), "decoded_gib": round(args.images * args.img_size**2 * 3 / 1024**3, 2),
                    "source_gib_on_disk": round(sum(f.stat().st_blocks * 512 for f in data.rglob("*") if f.is_file()) / 1024**3, 2),
                    "generate_seconds": round(generate_seconds, 1)},
        "what": (f"edgecls train: plain_cnn alpha {args.alpha}, --weights {args.weights}, --epochs {args.epochs}, "
                 f"--fine-tune-epochs {args.fine_tune_epochs}, --time-budget {args.time_budget}, --no-augment, batch {args.batch}"
                 if args.what == "train" else f"one epoch of make_dataset training batches (batch {args.batch}, no model)"
                 if args.what == "pipeline" else "load_training_data alone (scan, verify, decode, hash; --stream on: the uint8 cache)"),
        "runs": runs,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_at_start": load, "load_at_end": list(os.getloadavg())},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"train_streaming-{tag}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    for run in runs:
        speed = run.get("fine_tune_images_per_second", run.get("train_images_per_second", run.get("batches_images_per_second",
                                                                                                   run.get("images_per_second"))))
        print(f"| {args.what} | {args.images} {args.format.upper()} at {args.img_size} px | --stream {run['stream']} | "
              f"{run['peak_rss_mib']:.0f} MiB | {speed} img/s |")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
