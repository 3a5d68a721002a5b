"""Measure one artifact: latency percentiles on one image and accuracy/top-5 on a labelled folder.

Top-5 needs at least 5 classes: with fewer, "top5" is null (top-k with k = classes is always 1.0, not a top-5).

Run as `python -m edgecls.bench.measure ARGS_JSON` so each backend has its own process and thread pools.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.data.labelled import read_labelled_folder
from edgecls.errors import EdgeclsError
from edgecls.metrics import classification_report
from edgecls.preprocess import prepare_pixels

TOP_K = 5


def percentiles(times_ms: list[float]) -> dict[str, float]:
    values = np.asarray(times_ms, dtype=np.float64)
    p50 = float(np.percentile(values, 50))
    return {"runs": int(values.size), "mean_ms": float(values.mean()), "p50_ms": p50, "p90_ms": float(np.percentile(values, 90)),
            "p99_ms": float(np.percentile(values, 99)), "max_ms": float(values.max()), "fps": 1000.0 / p50 if p50 else 0.0}


def top5(top_k: dict[str, float], classes: int) -> float | None:
    """Top-5 accuracy, or None when the model has fewer than 5 classes (never top-1 under the top-5 name)."""
    return top_k["top5"] if classes >= TOP_K else None


def measure(path: Path, device: str = "cpu", threads: int | None = None, runs: int = 200, warmup: int = 20,
            data: Path | None = None, limit: int = 1000) -> dict[str, Any]:
    from edgecls.runtime import load_backend

    backend = load_backend(path, device=device, threads=threads)
    meta = backend.meta
    result: dict[str, Any] = {
        "artifact": str(path), "format": meta.format, "precision": meta.precision, "backend": backend.name,
        "precision_ran": backend.precision_ran, "threads": threads, "device": device,
        "architecture": meta.architecture, "input_size": list(meta.input_size),
        "size_bytes": sum(p.stat().st_size for p in (path, path.with_suffix(".bin")) if p.is_file()),
    }
    try:
        if data is not None:
            images = read_labelled_folder(data, meta.labels, limit)
            pixels = np.stack([prepare_pixels(p, meta) for p in images.paths])
            scores = np.concatenate([backend.run(pixels[i : i + 32]) for i in range(0, len(pixels), 32)])
            report = classification_report(images.labels, scores, meta.labels)
            result.update({"images": len(images), "skipped_images": len(images.skipped), "accuracy": report["accuracy"],
                           "top5": top5(report["top_k"], len(meta.labels))})
            image = pixels[:1]
        else:
            height, width = meta.input_size
            image = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
        for _ in range(warmup):
            backend.run(image)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            backend.run(image)
            times.append((time.perf_counter() - start) * 1000.0)
        result["latency"] = percentiles(times)
    finally:
        backend.close()
    return result


def main() -> None:
    args = json.loads(sys.argv[1])
    try:
        result = measure(Path(args["path"]), args.get("device", "cpu"), args.get("threads"), args.get("runs", 200),
                         args.get("warmup", 20), Path(args["data"]) if args.get("data") else None, args.get("limit", 1000))
    except EdgeclsError as exc:
        result = {"artifact": args["path"], "error": str(exc)}
    sys.stdout.write("EDGECLS-BENCH " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
