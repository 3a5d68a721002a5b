"""Benchmark: `edgecls camera` frame time vs inference, with and without the preprocessing pipeline.

    python bench/camera_latency.py bench/work/lite0-224 --threads 2 --frames 300 --rounds 3
    python bench/camera_latency.py bench/work/lite0-224 --threads 2 1   # also with one inference thread

Writes two videos from real photos (skimage.data chelsea, coffee, astronaut, rocket; a slow pan over
each so every frame differs) at 640x480 and 320x240, then runs the real CLI

    edgecls camera --device VIDEO --model ARTIFACT --frames 300 --threads 2 --report R.json --json [--no-pipeline]

for every artifact under the folder (tflite-int8, onnx-int8, openvino-int8; edgetpu-* is the same
file as tflite-int8 and is skipped unless --all), each video, pipeline on and off, alternating so
that load from other jobs on this shared machine hits both alike. Each configuration runs --rounds
times; the table shows the round with the median frame time. Columns:

  inference p50   backend.run inside the loop (pipelined: while the next frame is being preprocessed)
  raw inference   the same artifact's inference p50 in the run without the pipeline (same round)
  frame time p50  interval between consecutive results, warm-up excluded (1 / steady FPS)
  FPS             frames / seconds of the whole run (warm-up and first frame included)
  ratio           frame time p50 / inference p50 (the report's frame_time_vs_inference), and / raw inference
  CPU cores busy  the edgecls process's CPU time over wall time (the report's cpu_cores_used): at the
                  machine's core count the run is CPU-bound and overlapping stages cannot speed it up

Prints a Markdown table; writes bench/results/camera_latency.json with the command and every round.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = ((640, 480), (320, 240))
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def write_video(path: Path, size: tuple[int, int], frames: int, fps: float = 30.0) -> Path:
    """frames BGR frames of `size` (w, h): a slow pan and zoom over each photo in turn."""
    import cv2
    from skimage import data

    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write mp4v video to {path}")
    per_photo = -(-frames // len(PHOTOS))
    written = 0
    for name in PHOTOS:
        photo = cv2.cvtColor(getattr(data, name)(), cv2.COLOR_RGB2BGR)
        scale = 1.25 * max(width / photo.shape[1], height / photo.shape[0])  # cover the frame with room to pan
        big = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        spare_x, spare_y = big.shape[1] - width, big.shape[0] - height
        for i in range(min(per_photo, frames - written)):
            t = i / max(1, per_photo - 1)
            x, y = round(spare_x * t), round(spare_y * (1 - t))
            writer.write(np.ascontiguousarray(big[y : y + height, x : x + width]))
            written += 1
    writer.release()
    return path


def edgecls_command() -> list[str]:
    """The installed `edgecls` console script (beside this Python), else the same entry point through -c."""
    script = shutil.which("edgecls", path=str(Path(sys.executable).parent)) or shutil.which("edgecls")
    return [script] if script else [sys.executable, "-c", "from edgecls.cli.app import main; main()"]


def run_once(artifact: Path, video: Path, pipeline: bool, frames: int, threads: int, report: Path) -> dict:
    command = [*edgecls_command(), "camera", "--device", str(video), "--model", str(artifact), "--frames", str(frames),
               "--threads", str(threads), "--report", str(report), "--json", "--pipeline" if pipeline else "--no-pipeline"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-1500:]}")
    data = json.loads(report.read_text())
    stages = data["stages_ms"]
    return {
        "pipeline": pipeline, "frames": data["frames"], "fps": data["fps"], "seconds": data["seconds"],
        "cpu_cores_used": data["cpu_cores_used"], "load_average_1min": round(os.getloadavg()[0], 2),
        "inference_p50": stages["inference"]["p50"], "end_to_end_p50": stages["end_to_end"]["p50"],
        "capture_wait_p50": stages["capture_wait"]["p50"], "preprocess_p50": stages["preprocess"]["p50"],
        "input_wait_p50": stages.get("input_wait", {}).get("p50"),
        "frame_time": data["frame_time_ms"], "frame_time_vs_inference": data["frame_time_vs_inference"],
        "backend": data["backend"], "stop_reason": data["stop_reason"],
        "command": " ".join(["edgecls", *command[len(edgecls_command()):]]),
    }


def median_round(rounds: list[dict]) -> dict:
    return sorted(rounds, key=lambda r: r["frame_time"]["p50"])[len(rounds) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?", default=Path("bench/work/lite0-224"))
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--threads", type=int, nargs="+", default=[2], help="runtime threads; several values: one set of rows each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--all", action="store_true", help="also run edgetpu-* artifacts (on the CPU)")
    parser.add_argument("--out", type=Path, default=RESULTS / "camera_latency.json")
    args = parser.parse_args()
    from edgecls.fsutil import check_outputs, write_json

    check_outputs({"--out": args.out}, {"FOLDER": args.folder})

    artifacts = sorted(p for p in args.folder.glob("*/model.*") if p.suffix in (".tflite", ".onnx", ".xml")
                       and (args.all or not p.parent.name.startswith("edgetpu")))
    if not artifacts:
        raise SystemExit(f"no model.tflite / model.onnx / model.xml under {args.folder}/*/")
    records, rows = [], []
    with tempfile.TemporaryDirectory(prefix="camera-latency-") as tmp:
        videos = {size: write_video(Path(tmp) / f"clip-{size[0]}x{size[1]}.mp4", size, args.frames + 30) for size in SIZES}
        for threads in args.threads:
            for artifact in artifacts:
                for size, video in videos.items():
                    rounds: dict[bool, list[dict]] = {False: [], True: []}
                    for round_index in range(args.rounds):
                        order = (False, True) if round_index % 2 == 0 else (True, False)
                        for pipeline in order:
                            rounds[pipeline].append(run_once(artifact, video, pipeline, args.frames, threads, Path(tmp) / "r.json"))
                    raw = median_round(rounds[False])["inference_p50"]
                    for pipeline in (False, True):
                        best = median_round(rounds[pipeline])
                        frame_p50 = best["frame_time"]["p50"]
                        records.append({"artifact": str(artifact), "video": f"{size[0]}x{size[1]}", "threads": threads, **best,
                                        "frame_time_vs_raw_inference": round(frame_p50 / raw, 3),
                                        "rounds_frame_time_p50": [r["frame_time"]["p50"] for r in rounds[pipeline]],
                                        "rounds_inference_p50": [r["inference_p50"] for r in rounds[pipeline]]})
                        rows.append(f"| {artifact.parent.name} | {threads} | {size[0]}x{size[1]} | {'on' if pipeline else 'off'} | "
                                    f"{best['inference_p50']:.2f} | {raw:.2f} | {best['end_to_end_p50']:.2f} | {frame_p50:.2f} | "
                                    f"{best['fps']:.0f} | {best['frame_time_vs_inference']:.2f}x | {frame_p50 / raw:.2f}x | "
                                    f"{best['cpu_cores_used']:.2f} |")
                        print(rows[-1], flush=True)
    threads_text = " ".join(map(str, args.threads))
    command = f"python bench/camera_latency.py {args.folder} --frames {args.frames} --threads {threads_text} --rounds {args.rounds}"
    write_json(args.out, {"command": command, "machine": f"{os.uname().machine}, {os.cpu_count()} cores",
                          "date": time.strftime("%Y-%m-%d"), "photos": list(PHOTOS), "results": records})
    print()
    print("| artifact | threads | video | pipeline | inference p50 ms | raw inference p50 ms | end-to-end p50 ms | frame time p50 ms "
          "| FPS | frame time / inference | frame time / raw inference | CPU cores busy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
