"""Benchmark: where edgecls' OpenVINO latency differs from `benchmark_app -hint latency` (issue 12), in alternating rounds.

    python bench/openvino_overhead.py bench/work/lite0-224/openvino-int8/model.xml --threads 2 --rounds 7

Every variant runs in its own process, the order rotating from round to round. Two clocks:
"infer" is the InferRequest's own C++ clock around the inference (`InferRequest.latency`: what benchmark_app
reports; no Python in it), "python" is time.perf_counter around the whole Python call.

- `benchmark_app`: `-hint latency`, which runs its sync API (`infer()` in a loop), for --seconds seconds; "infer" clock.
- `benchmark_app-async`: the same with `-api async -nireq 1` (start_async, latency from start to the callback).
- `bare`: only openvino and numpy imported, compiled like the backend (LATENCY hint, f32 elsewhere,
  INFERENCE_NUM_THREADS), `InferRequest.infer()` on a preallocated shared input: the floor a Python caller reaches.
- `bare-like-app`: as `bare` but compiled and fed as benchmark_app does (no INFERENCE_NUM_THREADS; an
  OpenVINO-allocated input tensor holding its uniform 0..255 random floats).
- `bare-async`: as `bare` with `start_async()` + `wait()` instead of `infer()`.
- `backend`: `load_backend(...).run(image)` (uint8 image in: conversion into the input buffer, infer, output
  copy, dequantize, softmax when the model outputs logits, the shape checks), in a process that has imported
  what `edgecls.bench.measure` imports; both clocks in the same iterations, so python - infer is what the
  Python call adds. `--code NAME=DIR` adds `backend-NAME`, the same with edgecls from DIR.
- `edgecls-bench`: the measurement bench/runtime_latency.py and `edgecls bench` make (edgecls.bench.measure in
  its own process, perf_counter around `Backend.run`); "python" clock only.

Python variants time --runs calls after --warmup and also report CPU time per call (all threads), context
switches and garbage collections during the timed calls, and their threads (name, state, allowed CPUs). Prints
a Markdown table (median over rounds of each round's p50; each round's ratio to benchmark_app in the same
round: median and range); writes --out JSON with every round.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
BARE_VARIANTS = ("bare", "bare-like-app", "bare-async")
PY_VARIANTS = (*BARE_VARIANTS, "backend")
VENDOR_VARIANTS = ("benchmark_app", "benchmark_app-async")
ALL_VARIANTS = (*VENDOR_VARIANTS, *PY_VARIANTS, "edgecls-bench")
CHILD_TAG = "OVERHEAD "


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _threads() -> list[str]:
    """This process's threads: name, state and the CPUs each may run on."""
    found = []
    for tid in sorted(os.listdir("/proc/self/task"), key=int):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            found.append(f"{tid} {stat[0]} cpus={sorted(os.sched_getaffinity(int(tid)))}")
        except OSError:
            continue
    return found


def _bare(variant: str, xml: Path, threads: int, image: Any) -> tuple[Callable[[], object], Any]:
    import numpy as np
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml))
    model.reshape({model.input(0): [1, *image.shape[1:]]})
    properties: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if variant != "bare-like-app":
        properties["INFERENCE_NUM_THREADS"] = threads
    request = core.compile_model(model, "CPU", properties).create_infer_request()
    dtype = model.input(0).get_element_type().to_dtype()
    if variant == "bare-like-app":  # benchmark_app's fill: its own tensor, uniform floats from a seeded MT19937
        random = np.random.RandomState(np.random.MT19937(np.random.SeedSequence(0)))
        request.set_input_tensor(ov.Tensor(random.uniform(0, 255, image.shape).astype(dtype)))
    else:
        request.set_input_tensor(ov.Tensor(image.astype(dtype), shared_memory=True))
    if variant == "bare-async":
        def call() -> None:
            request.start_async()
            request.wait()
        return call, request
    return request.infer, request


def child(variant: str, xml: Path, threads: int, runs: int, warmup: int) -> dict[str, Any]:
    """One Python variant in this process: p50 of perf_counter around the call and of the request's C++ clock."""
    import numpy as np

    image = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)  # what edgecls.bench.measure feeds
    if variant == "backend":
        import edgecls.bench.measure  # noqa: F401  (the measuring process's modules)
        from edgecls.runtime import load_backend

        backend = load_backend(xml, device="cpu", threads=threads)
        request = backend._request  # type: ignore[attr-defined]  # the backend's own request, for its C++ clock

        def call() -> object:
            return backend.run(image)
    else:
        call, request = _bare(variant, xml, threads, image)
    for _ in range(warmup):
        call()
    python_ms, infer_ms = [], []
    collections_before = sum(stat["collections"] for stat in gc.get_stats())
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(runs):
        start = time.perf_counter()
        call()
        python_ms.append((time.perf_counter() - start) * 1000.0)
        infer_ms.append(request.latency)
    after = resource.getrusage(resource.RUSAGE_SELF)
    collections = sum(stat["collections"] for stat in gc.get_stats()) - collections_before
    cpu_ms = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000.0
    return {"variant": variant, "python_p50_ms": round(median(python_ms), 4), "infer_p50_ms": round(median(infer_ms), 4),
            "added_p50_ms": round(median([p - i for p, i in zip(python_ms, infer_ms)]), 4),
            "python_first_half_p50_ms": round(median(python_ms[: runs // 2]), 4),
            "python_second_half_p50_ms": round(median(python_ms[runs // 2:]), 4),
            "cpu_ms_per_call": round(cpu_ms / runs, 4), "voluntary_switches_per_call": round((after.ru_nvcsw - before.ru_nvcsw) / runs, 2),
            "involuntary_switches_per_call": round((after.ru_nivcsw - before.ru_nivcsw) / runs, 2), "threads": _threads(),
            "gc_collections": collections,
            "edgecls": os.path.dirname(os.path.dirname(sys.modules["edgecls.runtime"].__file__ or "")) if variant == "backend" else None}


def run_python(variant: str, xml: Path, threads: int, runs: int, warmup: int, code: Path | None = None) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    args = [sys.executable, __file__, str(xml), "--child", variant, "--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(CHILD_TAG):
            return dict(json.loads(line.removeprefix(CHILD_TAG)))
    raise SystemExit(f"{variant} failed (exit {proc.returncode}): {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")


def run_edgecls_bench(xml: Path, threads: int, runs: int, warmup: int) -> dict[str, Any]:
    from edgecls.bench.report import FailedArtifact
    from edgecls.bench.runner import run_one

    measured = run_one(xml, "cpu", threads, runs, warmup, None, 1)
    if isinstance(measured, FailedArtifact):
        raise SystemExit(f"{xml}: {measured.error}")
    return {"variant": "edgecls-bench", "python_p50_ms": round(measured.latency.p50_ms, 4)}


def run_vendor(variant: str, xml: Path, seconds: int) -> dict[str, Any]:
    tool = shutil.which("benchmark_app", path=str(Path(sys.executable).parent)) or shutil.which("benchmark_app")
    if tool is None:
        raise SystemExit("benchmark_app is not installed (pip install openvino)")
    command = [tool, "-m", str(xml), "-d", "CPU", "-hint", "latency", "-t", str(seconds), "-shape", "[1,224,224,3]",
               "-infer_precision", "f32"]
    if variant == "benchmark_app-async":
        command += ["-api", "async", "-nireq", "1"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    numbers = {name.lower(): float(value) for name, value in re.findall(r"(Median|Average|Min|Max):\s+([0-9.]+) ms", text)}
    if "median" not in numbers:
        raise SystemExit(f"{variant} gave no median: {text[-300:]}")
    return {"variant": variant, "command": " ".join(["benchmark_app", *command[1:]]), "infer_p50_ms": numbers["median"],
            "count": int((re.findall(r"Count:\s+(\d+)", text) or ["0"])[0])}


def table(rounds: list[dict[str, Any]], variants: list[str]) -> list[str]:
    rows = []
    for variant in variants:
        for column in ("python_p50_ms", "infer_p50_ms", "added_p50_ms", "cpu_ms_per_call"):
            values = [r[variant][column] for r in rounds if column in r[variant]]
            if not values:
                continue
            ratios = sorted(r[variant][column] / r["benchmark_app"]["infer_p50_ms"] for r in rounds) \
                if "benchmark_app" in variants and column in ("python_p50_ms", "infer_p50_ms") else []
            ratio = f"{median(ratios):.3f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})" if ratios else "-"
            rows.append(f"| {variant} | {column.removesuffix('_ms').removesuffix('_p50')} | {median(values):.3f} | "
                        f"{min(values):.2f}-{max(values):.2f} | {ratio} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("xml", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seconds", type=int, default=5, help="benchmark_app -t")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=list(ALL_VARIANTS), choices=ALL_VARIANTS)
    parser.add_argument("--code", nargs="*", default=[], metavar="NAME=DIR", help="also run `backend` with edgecls from DIR")
    parser.add_argument("--child", choices=PY_VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "openvino_overhead.json")
    args = parser.parse_args()
    if args.child:
        sys.stdout.write(CHILD_TAG + json.dumps(child(args.child, args.xml, args.threads, args.runs, args.warmup)) + "\n")
        return
    codes = {f"backend-{name}": Path(folder).resolve() for name, folder in (item.split("=", 1) for item in args.code)}
    variants = [*args.variants, *codes]
    rounds: list[dict[str, Any]] = []
    for index in range(args.rounds):
        shift = index % len(variants)
        order = variants[shift:] + variants[:shift]
        measured: dict[str, Any] = {"load_average_1min": round(os.getloadavg()[0], 2), "order": order}
        for variant in order:
            if variant in VENDOR_VARIANTS:
                measured[variant] = run_vendor(variant, args.xml, args.seconds)
            elif variant == "edgecls-bench":
                measured[variant] = run_edgecls_bench(args.xml, args.threads, args.runs, args.warmup)
            else:
                measured[variant] = run_python("backend" if variant in codes else variant, args.xml, args.threads, args.runs, args.warmup,
                                               codes.get(variant))
        measured["load_average_1min_after"] = round(os.getloadavg()[0], 2)
        rounds.append(measured)
        print(json.dumps({v: [measured[v].get(k) for k in ("python_p50_ms", "infer_p50_ms")] for v in order}), flush=True)
    loads = [r["load_average_1min"] for r in rounds] + [r["load_average_1min_after"] for r in rounds]
    command = (f"python bench/openvino_overhead.py {args.xml} --threads {args.threads} --runs {args.runs} --warmup {args.warmup} "
               f"--seconds {args.seconds} --rounds {args.rounds} --variants {' '.join(args.variants)}"
               + (f" --code {' '.join(args.code)}" if args.code else ""))
    from edgecls.fsutil import write_json

    write_json(args.out, {"command": command, "machine": f"{os.uname().machine}, {os.cpu_count()} cores",
                          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average_1min": [min(loads), max(loads)],
                          "rounds": rounds})
    print(f"load average {min(loads):.1f}-{max(loads):.1f}")
    print("| variant | clock | p50 ms (median of rounds) | rounds | per-round ratio to benchmark_app: median (range) |")
    print("|---|---|---|---|---|")
    print("\n".join(table(rounds, variants)))


if __name__ == "__main__":
    main()
