"""`edgecls camera` and `data video` safety: outputs vs inputs, verified recordings (full disk, long names, umask,
SIGKILL leftovers), shutdown under a second Ctrl-C, runs that classify nothing, the token, and the live view
under 2,000 slow connections with `ulimit -n 1024`.

Everything runs the real CLI on a real ONNX export of the tiny trained run. The live camera is a real MJPEG
stream over HTTP (a LiveServer in the test process, bound to 127.0.0.1), which OpenCV reads like an IP camera.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, CliResult, assert_clean_error, run_cli

NEEDED = ("cv2", "onnxruntime", "onnx")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(importlib.util.find_spec(n) is None for n in NEEDED), reason=f"needs {', '.join(NEEDED)}"),
]

from edgecls.camera.server import LiveServer  # noqa: E402
from edgecls.fsutil import TEMP_PREFIX  # noqa: E402
from tests import test_camera  # noqa: E402  (imports OpenCV: after the skip marker)
from tests.test_live_server import STATS, make_jpeg  # noqa: E402

decode_video, write_video = test_camera.decode_video, test_camera.write_video
pictures = test_camera.pictures  # a fixture: one real Fashion-MNIST picture per class

TOKEN = "camera-test-token-0123456789abcdef"
PY_MAIN = "from edgecls.cli.app import main; main()"


def camera_cli(*args: str | Path, cwd: Path | None = None) -> CliResult:
    return run_cli("camera", *args, cwd=cwd, timeout=180)


def start_camera(*args: str | Path, cwd: Path, limit_files: int | None = None, umask: int | None = None) -> subprocess.Popen:
    """`edgecls camera ARGS` in the background, optionally under `ulimit -n` and a umask."""
    def prepare() -> None:
        if limit_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit_files, limit_files))
        if umask is not None:
            os.umask(umask)

    return subprocess.Popen([sys.executable, "-c", PY_MAIN, "camera", *map(str, args)], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=prepare,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200"})


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def export_dir(plain_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("safety-export") / "export"
    result = run_cli("export", plain_run, "--target", "onnx", "--out", out)
    assert result.returncode == 0, result.output
    return out / "onnx-fp32"


@pytest.fixture
def model(export_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the artifact folder (model.onnx + meta.json), so reports beside it never mix between tests."""
    folder = shutil.copytree(export_dir, tmp_path / "artifact")
    return folder / "model.onnx"


@pytest.fixture(scope="module")
def clip(pictures: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 frames, 96x96."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", [pictures[i % 10] for i in range(30)])


@pytest.fixture(scope="module")
def big_clip(pictures: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 frames at 320x240: recordings of a few MB, several seconds of work."""
    big = [np.asarray(Image.fromarray(p).resize((320, 240))) for p in pictures]
    return write_video(tmp_path_factory.mktemp("big") / "big.mp4", [big[i % 10] for i in range(300)], fps=30)


class IpCamera:
    """A live MJPEG camera over HTTP (what `--device http://...` reads): frames published every 20 ms."""

    def __init__(self) -> None:
        self.server = LiveServer(port=0, max_clients=4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return self.server.url + "stream.mjpg"

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            self.server.publish(make_jpeg(index), STATS)
            index += 1
            self._stop.wait(0.02)

    def __enter__(self) -> IpCamera:
        self.server.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.stop()


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A small real file system at `folder` (needs root or CAP_SYS_ADMIN; skips otherwise)."""
    folder.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    except OSError as exc:
        pytest.skip(f"cannot run mount: {exc}")
    if proc.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {proc.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# ---------------------------------------------------------------- outputs vs inputs


def test_outputs_onto_inputs_are_refused_before_any_work(model: Path, clip: Path, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(frames / "0.png")
    link = tmp_path / "innocent.json"
    link.symlink_to(model)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    meta = model.parent / "meta.json"
    cases = [
        (["--device", clip, "--report", model], ["--report", "would overwrite the input --model"]),
        (["--device", clip, "--report", meta], ["--report", "would overwrite the input --model's meta.json"]),
        (["--device", clip, "--report", link], ["--report", "innocent.json", "would overwrite the input --model"]),
        (["--device", clip, "--record", clip], ["--record", "would overwrite the input --device"]),
        (["--device", clip, "--record", model], ["--record", "would overwrite the input --model"]),
        (["--device", frames, "--report", frames / "r.json"], ["--report", "lies inside the input --device"]),
        (["--device", frames, "--record", frames / "sub" / "a.avi"], ["--record", "lies inside the input --device"]),
        (["--device", clip, "--serve", "127.0.0.1:0", "--token-file", token, "--report", token],
         ["would overwrite the input --token-file"]),
        (["--device", clip, "--record", tmp_path / "same.avi", "--report", tmp_path / "same.avi"],
         ["--record and --report are the same file"]),
    ]
    before = {p: p.read_bytes() for p in (model, meta, clip, token, frames / "0.png")}
    for args, fragments in cases:
        result = camera_cli("--model", model, "--frames", "3", *args, cwd=tmp_path)
        assert_clean_error(result, *fragments)
        assert "Camera:" not in result.stdout  # refused before any frame
    assert {p: p.read_bytes() for p in before} == before
    assert not (model.parent / "camera_report.json").exists() and not (frames / "sub").exists()
    assert not list(tmp_path.glob("same.avi")) and not temps(tmp_path) and not temps(model.parent)


def test_report_defaults_to_beside_the_model(model: Path, clip: Path, tmp_path: Path) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    result = camera_cli("--model", model, "--device", clip, "--frames", "4", cwd=work)
    assert result.returncode == 0, result.output
    report = model.parent / "camera_report.json"
    assert json.loads(report.read_text())["frames"] == 4 and f"report: {report}" in result.stdout
    assert not list(work.iterdir())  # nothing in the current folder


# ---------------------------------------------------------------- recordings: verified before publishing


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_recording_on_a_full_disk_is_an_error_and_leaves_no_file(suffix: str, model: Path, big_clip: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    with tmpfs(tmp_path / "full", "200k") as full:
        target = full / f"annotated{suffix}"
        result = camera_cli("--model", model, "--device", big_clip, "--record", target, "--report", report)
        assert_clean_error(result, f"cannot write video '{target}'", "OpenCV reads back", "of the 300 frames written",
                           "Free some disk space")
        assert result.returncode == 2
        assert sorted(p.name for p in full.iterdir()) == []  # no file under the real name, no temp
    data = json.loads(report.read_text())
    assert data["status"] == "failed" and data["frames"] == 300 and "cannot write video" in data["error"]


def test_data_video_on_a_full_disk_is_an_error_and_leaves_no_file(fmnist_tree: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", "100k") as full:
        result = run_cli("data", "video", fmnist_tree / "test", full / "clip.mp4", "--frames", "120", "--width", "320", "--height", "240")
        assert_clean_error(result, "cannot write video", "clip.mp4", "of the 120 frames written")
        assert sorted(p.name for p in full.iterdir()) == []


def test_data_video_is_verified_and_published(fmnist_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "clip.avi"
    result = run_cli("data", "video", fmnist_tree / "test", out, "--frames", "25", "--width", "64", "--height", "48")
    assert result.returncode == 0, result.output
    frames = decode_video(out)
    assert len(frames) == 25 and frames[0].shape == (48, 64, 3) and not temps(tmp_path)


def test_long_record_name_works_and_honours_the_umask(model: Path, clip: Path, tmp_path: Path) -> None:
    target = tmp_path / ("r" * 245 + ".mp4")
    assert len(target.name) == 249
    proc = start_camera("--model", model, "--device", clip, "--frames", "12", "--record", target, "--report", tmp_path / "r.json",
                        cwd=tmp_path, umask=0o002)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, out + err
    assert len(decode_video(target)) == 12
    assert target.stat().st_mode & 0o777 == 0o664  # 0666 minus the umask, like any file open() makes
    assert not temps(tmp_path)


def test_a_temp_left_by_sigkill_is_swept_at_the_next_run(model: Path, big_clip: Path, tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    proc = start_camera("--model", model, "--device", big_clip, "--record", folder / "first.mp4", "--report", tmp_path / "r.json",
                        cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not temps(folder) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        left = temps(folder)
        proc.kill()
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert left and left[0].startswith(f"{TEMP_PREFIX}{proc.pid}-"), left
    assert temps(folder) == left and not (folder / "first.mp4").exists()
    result = camera_cli("--model", model, "--device", big_clip, "--frames", "3", "--record", folder / "second.mp4",
                        "--report", tmp_path / "r2.json")
    assert result.returncode == 0, result.output
    assert temps(folder) == [] and sorted(p.name for p in folder.iterdir()) == ["second.mp4"]


# ---------------------------------------------------------------- shutdown under a second Ctrl-C


def test_second_ctrl_c_during_shutdown_still_writes_the_final_report(model: Path, tmp_path: Path) -> None:
    """The first Ctrl-C stops the loop; the second arrives while the source is being closed (inside the shutdown),
    deterministically: the report must still become final, never stay "running"."""
    report, video = tmp_path / "r.json", tmp_path / "rec.avi"
    code = textwrap.dedent(
        f"""
        import json, os, signal
        import numpy as np
        from edgecls.camera.loop import run_camera

        class Camera:
            is_live, fps = False, None
            def __init__(self):
                self.n = 0
            def read(self):
                self.n += 1
                if self.n == 8:
                    os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C, mid-run
                return np.full((48, 64, 3), self.n % 250, np.uint8)
            def close(self):
                os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, during shutdown
            def describe(self):
                return "test camera"

        summary = run_camera({str(model)!r}, Camera(), report={str(report)!r}, record={str(video)!r}, report_every=0.0001)
        print("returned", summary["status"], summary["stop_reason"])
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=180)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "returned finished interrupted" in proc.stdout
    assert "stopping: the report and any recording are being finished first" in proc.stderr  # the second one was seen
    data = json.loads(report.read_text())
    assert data["status"] == "finished" and data["stop_reason"] == "interrupted" and data["frames"] >= 1
    assert len(decode_video(video)) == data["counts"]["frames_recorded"] == data["frames"]
    assert not temps(tmp_path)  # the recording was published, verified; no temp left behind


# ---------------------------------------------------------------- runs that classify nothing


def failing_model(model: Path) -> Path:
    """The same artifact with a Gather whose index is out of range appended: it loads, and fails on every run."""
    import onnx
    from onnx import helper, numpy_helper

    graph = onnx.load(model)
    output = graph.graph.output[0]
    classes = output.type.tensor_type.shape.dim[1].dim_value
    inner = output.name + "_before_gather"
    for node in graph.graph.node:
        node.output[:] = [inner if name == output.name else name for name in node.output]
    graph.graph.initializer.append(numpy_helper.from_array(np.array([*range(classes - 1), classes + 90], np.int64), "bad_index"))
    graph.graph.node.append(helper.make_node("Gather", [inner, "bad_index"], [output.name], axis=1))
    onnx.checker.check_model(graph)
    onnx.save(graph, model)
    return model


def test_every_frame_failing_in_inference_is_one_line_and_a_failure(model: Path, clip: Path, tmp_path: Path) -> None:
    failing_model(model)
    report = tmp_path / "r.json"
    result = camera_cli("--model", model, "--device", clip, "--report", report)
    assert_clean_error(result, "no frame was classified: 30 frames failed in inference (first error:", "Gather")
    assert result.returncode == 1
    data = json.loads(report.read_text())
    assert data["status"] == "failed" and data["frames"] == 0 and data["counts"]["inference_failed"] == 30
    assert "Gather" in data["inference_error"] and data["error"].startswith("no frame was classified")


def test_a_live_camera_whose_inference_keeps_failing_stops(model: Path, tmp_path: Path) -> None:
    failing_model(model)
    with IpCamera() as camera:
        result = camera_cli("--model", model, "--device", camera.url, "--report", tmp_path / "r.json")
    assert_clean_error(result, "no frame was classified: 30 frames failed in inference")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["stop_reason"] == "error" and data["source"]["live"] is True and data["counts"]["inference_failed"] == 30


def test_a_source_without_a_usable_frame_is_one_line_and_a_failure(model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "b.jpg").write_bytes(b"not an image")
    result = camera_cli("--model", model, "--device", folder, "--report", tmp_path / "r.json")
    assert_clean_error(result, "no frame was classified", "ended without a usable frame (2 empty or unreadable)")
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "failed"


# ---------------------------------------------------------------- the token on the command line


def test_token_file_on_the_command_line(model: Path, clip: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o640)
    report = tmp_path / "r.json"
    result = camera_cli("--model", model, "--device", clip, "--frames", "5", "--serve", "127.0.0.1:0", "--token-file", token,
                        "--report", report)
    assert result.returncode == 0, result.output
    assert "readable by other users" in result.stderr and "live view at http://127.0.0.1:" in result.stderr
    assert TOKEN not in result.output and TOKEN not in report.read_text()
    assert_clean_error(camera_cli("--model", model, "--device", clip, "--token-file", token), "--token-file applies to the live view only")
    folder = tmp_path / "tokens"
    folder.mkdir()
    assert_clean_error(camera_cli("--model", model, "--device", clip, "--serve", "127.0.0.1:0", "--token-file", folder),
                       f"token file '{folder}' is a folder")


# ---------------------------------------------------------------- 2,000 slow connections under ulimit -n 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_facts(pid: int) -> dict[str, int]:
    """RSS (kB), threads and open files of a running process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_kb": int(fields["VmRSS"].split()[0]), "threads": int(fields["Threads"]),
            "files": len(os.listdir(f"/proc/{pid}/fd"))}


def stats_frames(port: int) -> int | None:
    """The live view's published frame count, or None when this request was not answered."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            sock.sendall(f"GET /stats.json HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            answer = b"".join(iter(lambda: sock.recv(65536), b""))
    except OSError:
        return None
    head, _, body = answer.partition(b"\r\n\r\n")
    return json.loads(body)["frames"] if head.startswith(b"HTTP/1.0 200") else None


class SlowClients:
    """`count` connections, each sending its request headers one byte a second (non-blocking sockets)."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.header = f"GET /stats.json HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ".encode() + b"a" * 64
        self.socks: list[tuple[socket.socket, int]] = []
        self.opened = self.dropped = 0

    def open_all(self) -> None:
        for _ in range(self.count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", self.port))
            self.socks.append((sock, 0))
            self.opened += 1

    def tick(self) -> None:
        """Send each live connection its next byte; forget the ones the server closed."""
        alive = []
        for sock, sent in self.socks:
            try:
                sock.send(self.header[sent:sent + 1], socket.MSG_DONTWAIT)
                alive.append((sock, sent + 1))
            except (BlockingIOError, InterruptedError):
                alive.append((sock, sent))  # still connecting (backlog full): try again next tick
            except OSError:
                sock.close()
                self.dropped += 1
        self.socks = alive

    def close(self) -> None:
        for sock, _ in self.socks:
            sock.close()
        self.socks = []


def test_two_thousand_slow_connections_under_ulimit_1024(model: Path, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2300:
        pytest.skip(f"the test needs 2,300 open files for its clients; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2300) if hard == resource.RLIM_INFINITY else max(soft, min(hard, 4096)), hard))
    port, report = free_port(), tmp_path / "r.json"
    with IpCamera() as camera:
        proc = start_camera("--model", model, "--device", camera.url, "--serve", f"127.0.0.1:{port}", "--report", report,
                            cwd=tmp_path, limit_files=1024)
        clients = SlowClients(port, 2000)
        try:
            deadline = time.monotonic() + 90
            while stats_frames(port) in (None, 0) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert proc.poll() is None, proc.communicate()
            before = proc_facts(proc.pid)
            clients.open_all()
            seen, peak = [], dict(before)
            for _ in range(8):  # eight seconds of a byte a second on every connection still open
                clients.tick()
                time.sleep(1.0)
                frames = stats_frames(port)
                if frames is not None:
                    seen.append(frames)
                facts = proc_facts(proc.pid)
                peak = {key: max(peak[key], value) for key, value in facts.items()}
            assert proc.poll() is None, "the camera died under the slow connections"
        finally:
            clients.close()
            proc.send_signal(signal.SIGTERM)  # what systemd sends
            out, err = proc.communicate(timeout=60)
    print(f"slow connections: opened {clients.opened}, dropped {clients.dropped}; frames seen {seen}; before {before}, peak {peak}")
    assert proc.returncode == 143, out + err
    assert "Too many open files" not in err and "Traceback" not in err, err[-3000:]
    # every connection was taken care of: refused at once, or dropped at the header deadline
    assert clients.opened == 2000 and clients.dropped >= 1900, (clients.opened, clients.dropped)
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] > seen[0], seen  # the live view kept answering, frames kept coming
    assert peak["files"] < 200 and peak["threads"] < before["threads"] + 80, (before, peak)  # a cap, not one per connection
    assert peak["rss_kb"] - before["rss_kb"] < 64_000, (before, peak)  # memory stays bounded
    data = json.loads(report.read_text())
    assert data["status"] == "finished" and data["stop_reason"] == "terminated" and data["frames"] >= seen[-1] > 0


# ---------------------------------------------------------------- outputs off the inference path


def test_live_recording_is_real_time_and_skips_rather_than_waits(model: Path, tmp_path: Path) -> None:
    """A live source: the recording takes at most record_fps frames a second (default 10, never above the source's own rate), on the
    output thread; what it skipped or dropped is counted, and the video holds exactly the frames counted as recorded."""
    from edgecls.camera.loop import run_camera

    video = tmp_path / "live.avi"
    summary = run_camera(model, lambda: test_camera.CountingSource(size=(120, 160), delay=0.002), frames=150, record=video,
                         report=tmp_path / "r.json")
    recorded, seconds = summary["counts"]["frames_recorded"], summary["seconds"]
    assert summary["frames"] == 150 and 1 <= recorded <= 15 * seconds + 2, (recorded, seconds)
    assert len(test_camera.decode_video(video)) == recorded and not temps(tmp_path)
    assert summary["counts"]["output_dropped"] >= 0 and "output" in summary["stages_ms"]


def test_record_drop_treats_a_file_like_a_live_source(model: Path, big_clip: Path, tmp_path: Path) -> None:
    video, report = tmp_path / "dropped.mp4", tmp_path / "r.json"
    result = camera_cli("--model", model, "--device", big_clip, "--record", video, "--record-drop", "--report", report)
    assert result.returncode == 0, result.output
    data = json.loads(report.read_text())
    recorded = data["counts"]["frames_recorded"]
    assert data["frames"] == 300 and 1 <= recorded <= 30 * data["seconds"] + 2
    assert len(test_camera.decode_video(video)) == recorded
