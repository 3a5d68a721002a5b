"""Measure one artifact: latency percentiles on one image and accuracy/top-5 on a labelled folder.

Run as `python -m edgecls.bench.measure ARGS_JSON` so each backend has its own process and thread pools.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import DataError, EdgeclsError
from edgecls.metrics import classification_report
from edgecls.preprocess import prepare_pixels


def percentiles(times_ms: list[float]) -> dict[str, float]:
    values = np.asarray(times_ms, dtype=np.float64)
    p50 = float(np.percentile(values, 50))
    return {"runs": int(values.size), "mean_ms": float(values.mean()), "p50_ms": p50, "p90_ms": float(np.percentile(values, 90)),
            "p99_ms": float(np.percentile(values, 99)), "max_ms": float(values.max()), "fps": 1000.0 / p50 if p50 else 0.0}


def labelled_images(folder: Path, labels: list[str], limit: int) -> tuple[list[Path], np.ndarray]:
    """Up to `limit` images of an ImageFolder tree (its test/ split if pre-split), stratified, mapped onto `labels`."""
    from edgecls.data.folder import check_image, scan_class_folders
    from edgecls.quantize.calibration import stratified_sample

    if not folder.is_dir():
        raise DataError(f"--data '{folder}' is not a folder", "Pass a labelled ImageFolder tree (a folder per class)")
    test = [p for p in folder.iterdir() if p.is_dir() and p.name.lower() == "test"]
    names, paths, indices = scan_class_folders(test[0] if test else folder)
    unknown = sorted(set(names) - set(labels))
    if unknown:
        raise DataError(f"classes {unknown} in '{folder}' are not among the model's labels", "Use folders named like the model's labels")
    truth = np.asarray([labels.index(names[i]) for i in indices], dtype=np.int64)
    chosen = [i for i in stratified_sample(truth, min(limit, len(paths)), seed=0) if check_image(paths[i]) is None]
    return [paths[i] for i in chosen], truth[chosen]


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
            files, truth = labelled_images(data, meta.labels, limit)
            pixels = np.stack([prepare_pixels(p, meta) for p in files])
            scores = np.concatenate([backend.run(pixels[i : i + 32]) for i in range(0, len(pixels), 32)])
            report = classification_report(truth, scores, meta.labels)
            result.update({"images": len(files), "accuracy": report["accuracy"], "top5": report["top_k"].get("top5", report["top_k"].get("top1"))})
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
