"""Benchmark: edgecls' inference latency per backend vs the vendors' own tools on the same artifact.

    python bench/runtime_latency.py bench/work/lite0-224 --threads 2

For every artifact under the folder (tflite-int8, onnx-int8, openvino-int8, ...): edgecls'
`Backend.run` on one 224 px image (quantize input, invoke, dequantize, softmax), warm-up excluded,
each backend in its own process; then `litert-benchmark` (LiteRT) and `benchmark_app` (OpenVINO) on
the same file with the same thread count, alternating for --rounds rounds (medians; the spread of the rounds,
the median of the per-round ratios and the machine's load average are in the table). Prints a Markdown table;
writes bench/results/runtime_latency.json.

What each side times: edgecls, time.perf_counter around the whole Python call `Backend.run(image)`;
`benchmark_app -hint latency` runs its sync API and reports the InferRequest's own C++ clock around
`infer()` (no Python in it, no input or output handling). So for OpenVINO each round also runs, in their own
processes and in rotating order, bench/openvino_overhead.py's `backend` (the same `Backend.run` loop, read on
both clocks: the C++ clock is benchmark_app's own, python - C++ is what the Python call adds) and `bare`
(`InferRequest.infer()` from Python with nothing else: the floor a Python caller reaches), in a second table.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from openvino_overhead import median, run_python  # bench/ is sys.path[0] when this runs as a script

RESULTS = Path(__file__).resolve().parent / "results"
DECOMPOSE = ("backend", "bare")  # bench/openvino_overhead.py variants run in every OpenVINO round


def litert_benchmark(path: Path, threads: int, runs: int, warmup: int) -> dict | None:
    tool = shutil.which("litert-benchmark", path=str(Path(sys.executable).parent)) or shutil.which("litert-benchmark")
    if tool is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.run([tool, "--model", str(path), "--num_threads", str(threads), "--num_runs", str(runs),
                               "--warmup_runs", str(warmup), "--result_json", str(out)], capture_output=True, text=True, timeout=600)
        data = json.loads(out.read_text()) if out.is_file() else {}
    return {"tool": "litert-benchmark", "raw": data, "stdout_tail": (proc.stdout + proc.stderr)[-400:], **_litert_numbers(data)}


def _litert_numbers(data: dict) -> dict:
    flat = json.dumps(data)
    found = {}
    for key in ("p50", "median", "avg", "mean", "p90", "p99"):
        match = re.search(rf'"[a-z_]*{key}[a-z_]*(?:_ms|_us)?"\s*:\s*([0-9.]+)', flat)
        if match:
            found[key] = float(match.group(1))
    return {"numbers": found}


def benchmark_app(path: Path, threads: int, seconds: int, infer_precision: str | None, height: int, width: int) -> dict | None:
    tool = shutil.which("benchmark_app", path=str(Path(sys.executable).parent)) or shutil.which("benchmark_app")
    if tool is None:
        return None
    # benchmark_app refuses -nthreads with a hint; the latency hint uses one stream on all cores (2 here).
    command = [tool, "-m", str(path), "-d", "CPU", "-hint", "latency", "-t", str(seconds), "-shape", f"[1,{height},{width},3]"]
    if infer_precision:
        command += ["-infer_precision", infer_precision]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    numbers = {name.lower(): float(value) for name, value in re.findall(r"(Median|Average|Min|Max):\s+([0-9.]+) ms", text)}
    return {"tool": "benchmark_app " + " ".join(command[2:]), "numbers": numbers, "stdout_tail": text[-400:]}


def decomposition_rows(name: str, ours_runs: list[dict], vendor_runs: list, clocks: list[dict[str, dict]]) -> list[str]:
    """Markdown rows: each clock's median over the rounds and its per-round ratio to benchmark_app's median."""
    rows = []
    series = [("edgecls `Backend.run` (bench measure process)", "python", [r["p50_ms"] for r in ours_runs]),
              ("edgecls `Backend.run`", "python", [c["backend"]["python_p50_ms"] for c in clocks]),
              ("edgecls `Backend.run`: its infer()", "C++ (benchmark_app's)", [c["backend"]["infer_p50_ms"] for c in clocks]),
              ("edgecls `Backend.run`: added by the Python call", "python - C++", [c["backend"]["added_p50_ms"] for c in clocks]),
              ("bare `InferRequest.infer()`", "python", [c["bare"]["python_p50_ms"] for c in clocks]),
              ("bare `InferRequest.infer()`", "C++ (benchmark_app's)", [c["bare"]["infer_p50_ms"] for c in clocks]),
              ("bare: added by the Python call", "python - C++", [c["bare"]["added_p50_ms"] for c in clocks]),
              ("benchmark_app -hint latency (sync)", "C++", [v for v in vendor_runs if v])]
    for what, clock, values in series:
        ratios = sorted(v / w for v, w in zip(values, vendor_runs) if w) if "added" not in what else []
        ratio = f"{median(ratios):.3f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})" if ratios else "-"
        rows.append(f"| {name} | {what} | {clock} | {median(values):.3f} | {ratio} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="+", default=None, help="artifact folder names to run (e.g. openvino-int8)")
    parser.add_argument("--out", type=Path, default=RESULTS / "runtime_latency.json")
    parser.add_argument("--no-decompose", action="store_true", help="OpenVINO: skip the backend's C++ clock and the bare Python floor")
    args = parser.parse_args()
    from edgecls.bench.report import FailedArtifact
    from edgecls.bench.runner import run_one
    from edgecls.fsutil import write_json
    from edgecls.meta import ModelMeta

    artifacts = sorted(p for p in args.folder.glob("*/model.*") if p.suffix in (".tflite", ".onnx", ".xml")
                       and (not args.only or p.parent.name in args.only))
    rows, records, decomposition = [], [], []
    for path in artifacts:
        # Alternate edgecls and the vendor tool for several rounds and keep the median of each: the
        # machine is shared, so a single pair of runs can be off by 2x either way.
        ours_runs, vendor_runs, vendor, loads = [], [], None, []
        clocks: list[dict[str, dict]] = []  # OpenVINO: the backend on both clocks and the bare Python floor, per round
        for index in range(args.rounds):
            loads.append(round(os.getloadavg()[0], 2))
            steps = ["edgecls", "vendor", *(DECOMPOSE if path.suffix == ".xml" and not args.no_decompose else ())]
            steps = steps[index % len(steps):] + steps[: index % len(steps)] if len(steps) > 2 else steps  # rotate
            extra: dict[str, dict] = {}
            for step in steps:
                if step == "edgecls":
                    measured = run_one(path, "cpu", args.threads, args.runs, args.warmup, None, 1)  # own process
                    if isinstance(measured, FailedArtifact):
                        raise SystemExit(f"{path}: {measured.error}")
                    ours = {"backend": measured.backend, "precision_ran": measured.precision_ran,
                            "input_size": measured.input_size, **measured.latency.as_dict()}
                    ours_runs.append(ours)
                elif step == "vendor" and path.suffix == ".tflite":
                    vendor = litert_benchmark(path, args.threads, args.runs, args.warmup)
                    numbers = (vendor or {}).get("numbers", {})
                    vendor_runs.append(numbers.get("p50") or numbers.get("median"))
                elif step == "vendor" and path.suffix == ".xml":
                    height, width = ModelMeta.load(path.parent / "meta.json").input_size
                    vendor = benchmark_app(path, args.threads, 5, "f32", height, width)
                    vendor_runs.append((vendor or {}).get("numbers", {}).get("median"))
                elif step in DECOMPOSE:
                    extra[step] = run_python(step, path, args.threads, args.runs, args.warmup)
            if extra:
                clocks.append(extra)
        ours = sorted(ours_runs, key=lambda r: r["p50_ms"])[len(ours_runs) // 2]
        valid = sorted(v for v in vendor_runs if v)
        vendor_ms = valid[len(valid) // 2] if valid else None
        ratio = ours["p50_ms"] / vendor_ms if vendor_ms else None
        # each round's pair ran back to back under the same load: the median of their ratios is steadier than the
        # ratio of the two medians when other jobs come and go
        paired = sorted(r["p50_ms"] / v for r, v in zip(ours_runs, vendor_runs) if v)
        paired_ratio = paired[len(paired) // 2] if paired else None
        records.append({"artifact": str(path), "edgecls": ours, "edgecls_rounds": [r["p50_ms"] for r in ours_runs],
                        "vendor_tool": (vendor or {}).get("tool"), "vendor_rounds": vendor_runs, "vendor_ms": vendor_ms, "ratio": ratio,
                        "paired_ratios": [round(r, 4) for r in paired], "paired_ratio_median": paired_ratio,
                        "load_average_1min": loads, **({"decomposition_rounds": clocks} if clocks else {})})
        if clocks:
            decomposition.extend(decomposition_rows(path.parent.name, ours_runs, vendor_runs, clocks))
        latency = f"{ours['p50_ms']:.2f} / {ours['p90_ms']:.2f} / {ours['p99_ms']:.2f}"
        spread = [r["p50_ms"] for r in ours_runs]
        vendor_spread = f"{min(valid):.2f}-{max(valid):.2f}" if valid else "-"
        rows.append(f"| {path.parent.name} | {ours['backend']} ({ours['precision_ran']}) | {latency} | "
                    f"{(f'{vendor_ms:.2f}' if vendor_ms else 'n/a')} | {(f'{ratio:.2f}x' if ratio else '-')} | "
                    f"{(f'{paired_ratio:.2f}x ({paired[0]:.2f}-{paired[-1]:.2f})' if paired_ratio else '-')} | "
                    f"{min(spread):.2f}-{max(spread):.2f} vs {vendor_spread} | {min(loads):.1f}-{max(loads):.1f} |")
    command = (f"python bench/runtime_latency.py {args.folder} --threads {args.threads} --runs {args.runs} --warmup {args.warmup} "
               f"--rounds {args.rounds}" + (f" --only {' '.join(args.only)}" if args.only else "")
               + (f" --out {args.out}" if args.out != RESULTS / "runtime_latency.json" else ""))
    write_json(args.out, {"command": command, "machine": f"{os.uname().machine}, {os.cpu_count()} cores",
                          "date": time.strftime("%Y-%m-%d"), "results": records})
    print("| artifact | edgecls backend (ran as) | edgecls p50 / p90 / p99 ms | vendor tool ms | edgecls / vendor "
          "| per-round ratio median (range) | rounds edgecls vs vendor (ms) | load |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if decomposition:
        print("\n| artifact | what | clock | p50 ms (median of rounds) | per-round ratio to benchmark_app: median (range) |")
        print("|---|---|---|---|---|")
        print("\n".join(decomposition))


if __name__ == "__main__":
    main()
