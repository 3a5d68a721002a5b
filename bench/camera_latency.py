"""Benchmark: `edgecls camera` frame time vs inference: without the pipeline, with it, and with it plus outputs.

    python bench/camera_latency.py bench/work/lite0-224 --threads 2 --frames 300 --rounds 3
    python bench/camera_latency.py bench/work/lite0-224 --threads 2 1 --outputs   # also --record + --serve + a viewer
    python bench/camera_latency.py bench/work/lite0-224 --outputs --code before=../tree-before   # outputs, new code vs old
    python bench/camera_latency.py bench/work/lite0-224 --outputs --record-fps 10 30   # one outputs configuration per rate

Writes videos from real photos (skimage.data chelsea, coffee, astronaut, rocket; a slow pan over each so
every frame differs) at 640x480 and 320x240 (--sizes), then runs the real CLI

    edgecls camera --device VIDEO --model ARTIFACT --frames 300 --threads 2 --report R.json --json [--no-pipeline]
    edgecls camera ... --record R.mp4 --record-drop --serve 127.0.0.1:PORT     (--outputs; a client watches the stream)
    edgecls camera ... --record R.mp4 --record-drop --record-fps N --serve ...  (--outputs --record-fps N ...)

for every artifact under the folder (tflite-int8, onnx-int8, openvino-int8; edgetpu-* is the same file as
tflite-int8 and is skipped unless --all), each video and configuration, alternating so that load from other
jobs on this shared machine hits all alike. Each configuration runs --rounds times; the table shows the round
with the median frame time. `--record-drop` records the file as a live camera would be recorded (real time,
frames skipped rather than inference slowed). Columns:

  inference p50     backend.run inside the loop (pipelined: while the next frame is being preprocessed)
  raw inference     the same artifact's inference p50 in the run without the pipeline (same round)
  preprocess p50    crop + resize of the frame (edgecls.preprocess), and its share of the raw inference
  capture p50       waiting for the reader (video decoding), on the worker thread when pipelined
  frame time p50    interval between consecutive results, warm-up excluded (1 / steady FPS)
  frame age p99     capture to result (end_to_end p99): what a user waiting for the label feels
  ratio             frame time p50 / raw inference p50
  CPU cores busy    the edgecls process's CPU time over wall time (the report's cpu_cores_used)
  load              the machine's 1-minute load average when the run ended (other jobs included)
  recorded          with outputs: frames recorded / left out by the recording's rate / dropped (the writer was behind)

Below the table: per outputs configuration, each round's frame time p50 over the same round's "on" (the runs next
to each other in time), and their median.

Prints a Markdown table; writes bench/results/camera_latency.json with the commands and every round.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
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
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
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


def watch_stream(port: int, stop: threading.Event) -> None:
    """A viewer: reads the live view's MJPEG stream until the camera process ends (retrying until it is up)."""
    while not stop.is_set():
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/stream.mjpg")
            response = conn.getresponse()
            while not stop.is_set() and response.read(65536):
                pass
            conn.close()
        except OSError:
            stop.wait(0.05)


def run_once(artifact: Path, video: Path, config: str, frames: int, threads: int, tmp: Path, code: dict[str, Path]) -> dict:
    """One `edgecls camera` run; config "off", "on", "outputs", "outputs:FPS" (--record-fps FPS) or "outputs@NAME" (the
    outputs run with the code in code[NAME])."""
    report = tmp / "r.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if "@" in config:
        env["PYTHONPATH"] = str(code[config.partition("@")[2]])
    record_fps = config.partition(":")[2]
    command = [*edgecls_command(), "camera", "--device", str(video), "--model", str(artifact), "--frames", str(frames),
               "--threads", str(threads), "--report", str(report), "--json", "--no-pipeline" if config == "off" else "--pipeline"]
    stop, viewer = threading.Event(), None
    if config.startswith("outputs"):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command += ["--record", str(tmp / "recording.mp4"), "--record-drop", *(["--record-fps", record_fps] if record_fps else []),
                    "--serve", f"127.0.0.1:{port}"]
        viewer = threading.Thread(target=watch_stream, args=(port, stop), daemon=True)
        viewer.start()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    finally:
        stop.set()
        if viewer is not None:
            viewer.join(10)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-1500:]}")
    data = json.loads(report.read_text())
    stages = data["stages_ms"]
    return {
        "config": config, "frames": data["frames"], "fps": data["fps"], "seconds": data["seconds"],
        "cpu_cores_used": data["cpu_cores_used"], "load_average_1min": round(os.getloadavg()[0], 2),
        "inference_p50": stages["inference"]["p50"], "end_to_end_p50": stages["end_to_end"]["p50"],
        "end_to_end_p99": stages["end_to_end"]["p99"], "capture_wait_p50": stages["capture_wait"]["p50"],
        "preprocess_p50": stages["preprocess"]["p50"], "input_wait_p50": stages.get("input_wait", {}).get("p50"),
        "output_p50": stages.get("output", {}).get("p50"), "frames_recorded": data["counts"].get("frames_recorded"),
        "output_dropped": data["counts"].get("output_dropped"), "record_skipped_by_rate": data["counts"].get("record_skipped_by_rate"),
        "record_fps": (data.get("settings") or {}).get("record_fps"),
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
    parser.add_argument("--sizes", nargs="+", default=["640x480", "320x240"], help="video sizes WxH")
    parser.add_argument("--outputs", action="store_true", help="also run with --record --record-drop --serve and a viewer")
    parser.add_argument("--record-fps", nargs="+", default=[], metavar="FPS",
                        help="with --outputs: one outputs configuration per rate (--record-fps FPS) instead of the default rate")
    parser.add_argument("--all", action="store_true", help="also run edgetpu-* artifacts (on the CPU)")
    parser.add_argument("--only", nargs="+", default=None, help="artifact folder names to run (e.g. tflite-int8 openvino-int8)")
    parser.add_argument("--code", nargs="+", default=[], metavar="NAME=DIR",
                        help="with --outputs: also run the outputs configuration with the edgecls package under DIR (PYTHONPATH; e.g. a "
                             "git worktree of the code before a change), alternating with the others")
    parser.add_argument("--out", type=Path, default=RESULTS / "camera_latency.json")
    args = parser.parse_args()
    from edgecls.fsutil import check_outputs, write_json

    check_outputs({"--out": args.out}, {"FOLDER": args.folder})

    artifacts = sorted(p for p in args.folder.glob("*/model.*") if p.suffix in (".tflite", ".onnx", ".xml")
                       and (args.all or not p.parent.name.startswith("edgetpu")) and (not args.only or p.parent.name in args.only))
    if not artifacts:
        raise SystemExit(f"no model.tflite / model.onnx / model.xml under {args.folder}/*/")
    sizes = [(int(size.split("x")[0]), int(size.split("x")[1])) for size in args.sizes]
    code = {name: Path(folder).resolve() for name, _, folder in (spec.partition("=") for spec in args.code)}
    if any(not (folder / "edgecls" / "__init__.py").is_file() for folder in code.values()) or (code and not args.outputs):
        raise SystemExit(f"--code {' '.join(args.code)}: each NAME=DIR needs DIR/edgecls/__init__.py, and --outputs")
    if args.record_fps and (not args.outputs or any(not fps.replace(".", "", 1).isdigit() for fps in args.record_fps)):
        raise SystemExit(f"--record-fps {' '.join(args.record_fps)}: numbers, with --outputs")
    mine = [f"outputs:{fps}" for fps in args.record_fps] or ["outputs"]
    configs = ["off", "on", *([*mine, *(f"outputs@{name}" for name in code)] if args.outputs else [])]
    records, rows, paired = [], [], []
    with tempfile.TemporaryDirectory(prefix="camera-latency-") as tmp:
        videos = {size: write_video(Path(tmp) / f"clip-{size[0]}x{size[1]}.mp4", size, args.frames + 30) for size in sizes}
        for threads in args.threads:
            for artifact in artifacts:
                for size, video in videos.items():
                    rounds: dict[str, list[dict]] = {config: [] for config in configs}
                    for round_index in range(args.rounds):
                        order = configs if round_index % 2 == 0 else configs[::-1]
                        for config in order:
                            rounds[config].append(run_once(artifact, video, config, args.frames, threads, Path(tmp), code))
                    raw = median_round(rounds["off"])["inference_p50"]
                    baseline = median_round(rounds["on"])["frame_time"]["p50"]
                    for config in configs:
                        best = median_round(rounds[config])
                        frame_p50 = best["frame_time"]["p50"]
                        records.append({"artifact": str(artifact), "video": f"{size[0]}x{size[1]}", "threads": threads, **best,
                                        "raw_inference_p50": raw, "frame_time_vs_raw_inference": round(frame_p50 / raw, 3),
                                        "frame_time_vs_pipeline_on": round(frame_p50 / baseline, 3),
                                        "rounds_frame_time_p50": [r["frame_time"]["p50"] for r in rounds[config]],
                                        "rounds_inference_p50": [r["inference_p50"] for r in rounds[config]],
                                        "rounds_preprocess_p50": [r["preprocess_p50"] for r in rounds[config]],
                                        "rounds_load_average": [r["load_average_1min"] for r in rounds[config]],
                                        "rounds_vs_on": [round(r["frame_time"]["p50"] / on["frame_time"]["p50"], 3)
                                                         for r, on in zip(rounds[config], rounds["on"])]})
                        label = {"off": "off", "on": "on"}.get(config, "on + record + serve + viewer" + (
                            f" ({config.partition('@')[2]} code)" if "@" in config else "")
                            + (f" at --record-fps {config.partition(':')[2]}" if ":" in config else ""))
                        by_rate = best["record_skipped_by_rate"]  # None: code from before --record-fps
                        recorded = (f"{best['frames_recorded']} / {'-' if by_rate is None else by_rate} / {best['output_dropped']}"
                                    if config.startswith("outputs") else "")
                        if config.startswith("outputs"):
                            per_round = records[-1]["rounds_vs_on"]
                            paired.append(f"{artifact.parent.name} {threads} threads {size[0]}x{size[1]} {label}: per round "
                                          f"{', '.join(f'{x:.2f}' for x in per_round)}x on, "
                                          f"median {sorted(per_round)[len(per_round) // 2]:.2f}x")
                        vs_on = f" ({frame_p50 / baseline:.2f}x on)" if config.startswith("outputs") else ""
                        rows.append(f"| {artifact.parent.name} | {threads} | {size[0]}x{size[1]} | {label} | {best['inference_p50']:.2f} | "
                                    f"{raw:.2f} | {best['preprocess_p50']:.2f} ({best['preprocess_p50'] / raw:.0%}) | "
                                    f"{best['capture_wait_p50']:.2f} | {frame_p50:.2f}{vs_on} | {best['end_to_end_p99']:.2f} | "
                                    f"{best['fps']:.0f} | {frame_p50 / raw:.2f}x | {best['cpu_cores_used']:.2f} | "
                                    f"{best['load_average_1min']:.1f} | {recorded} |")
                        print(rows[-1], flush=True)
    threads_text = " ".join(map(str, args.threads))
    command = (f"python bench/camera_latency.py {args.folder} --frames {args.frames} --threads {threads_text} --rounds {args.rounds} "
               f"--sizes {' '.join(args.sizes)}" + (" --outputs" if args.outputs else "")
               + (f" --only {' '.join(args.only)}" if args.only else "") + (f" --code {' '.join(args.code)}" if args.code else "")
               + (f" --record-fps {' '.join(args.record_fps)}" if args.record_fps else ""))
    write_json(args.out, {"command": command, "code": {name: str(folder) for name, folder in code.items()},
                          "machine": f"{os.uname().machine}, {os.cpu_count()} cores",
                          "date": time.strftime("%Y-%m-%d"), "photos": list(PHOTOS), "results": records})
    print()
    print("| artifact | threads | video | pipeline | inference p50 ms | raw inference p50 ms | preprocess p50 ms (of raw) | capture p50 ms "
          "| frame time p50 ms | frame age p99 ms | FPS | frame time / raw inference | CPU cores busy | load "
          "| recorded / by rate / dropped |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if paired:
        print()
        print("\n".join(paired))


if __name__ == "__main__":
    main()
