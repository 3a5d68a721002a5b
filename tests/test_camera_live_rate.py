"""The live view's frame rate (--live-fps) and what the output thread spends on it.

The live view encodes a JPEG only as often as its viewers get one: at most `live_fps` a second while a stream client
watches (edgecls.camera.rates.DEFAULT_LIVE_FPS unless --live-fps says otherwise), and with a recording only frames
that are recorded too, so one overlay serves both. The live output thread runs under SCHED_IDLE (else niceness 19):
inference threads take its core back at once. No timing asserts: the rate checks assert the bound that the
publishing rule guarantees whatever the machine's speed (frames published <= 1 + seconds x rate).
"""
from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecls.camera.decision import Postprocessor
from edgecls.camera.outputs import Outputs
from edgecls.camera.priority import lower_thread_priority, restore_thread_priority
from edgecls.camera.rates import DEFAULT_LIVE_FPS, MAX_LIVE_FPS, check_live_fps
from edgecls.errors import ConfigError
from tests.camera_helpers import wait_until
from tests.conftest import assert_clean_error, run_cli

FRAME = np.full((48, 64, 3), 90, np.uint8)


def _decision() -> Any:
    return Postprocessor(["a", "b"], top_k=1)(np.array([0.7, 0.3], np.float32))


class _Viewer:
    """A real MJPEG client on the live view's stream (a plain socket), reading until closed."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while self.sock.recv(65536):
                pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in recv()
        self.thread.join(10)
        self.sock.close()


class _SeenOutputs(Outputs):
    """The real Outputs, noting which frames the output thread was handed for the recording and for the live view."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.jobs: list[tuple[bool, bool]] = []
        super().__init__(*args, **kwargs)

    def _write(self, job: Any) -> None:
        self.jobs.append((job.record, job.serve))
        super()._write(job)


def _feed_until(outputs: Outputs, published: int, bound_s: float = 30.0) -> tuple[int, float, int]:
    """handle() frames as fast as the loop can until `published` JPEGs went out (or bound_s passed):
    (frames handed, seconds from the first publish to the last, JPEGs published)."""
    server = outputs.server
    decision, handed, first_at = _decision(), 0, None
    deadline = time.monotonic() + bound_s
    while server._slot.seq < published and time.monotonic() < deadline:
        outputs.handle(FRAME, decision, {"fps": 100.0}, {})
        handed += 1
        if first_at is None and server._slot.seq:
            first_at = server._slot.published_at
    seq, last_at = server._slot.seq, server._slot.published_at
    return handed, last_at - (first_at if first_at is not None else last_at), seq


@pytest.mark.parametrize("value", [0, -5, float("nan"), float("inf"), MAX_LIVE_FPS + 1, "fast"])
def test_check_live_fps_refuses_what_is_not_a_rate(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        check_live_fps(value)  # type: ignore[arg-type]
    assert "--live-fps" in caught.value.message and str(value) in caught.value.message
    assert check_live_fps(12) == 12.0 and check_live_fps(MAX_LIVE_FPS) == MAX_LIVE_FPS


@pytest.mark.parametrize(("args", "fragments"), [
    (["--serve", "127.0.0.1:0", "--live-fps", "0"], ("--live-fps 0.0", "between 0 and 60")),
    (["--serve", "127.0.0.1:0", "--live-fps", "500"], ("--live-fps 500.0", "between 0 and 60")),
    (["--live-fps", "5"], ("--live-fps 5 applies to the live view only", "--serve")),
])
def test_cli_refuses_a_bad_live_fps_before_the_camera_starts(tmp_path: Path, args: list[str], fragments: tuple[str, ...]) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(b"not read: the option is checked first")
    report = tmp_path / "report.json"
    result = run_cli("camera", "--model", model, "--device", tmp_path / "clip.mp4", "--report", report, *args)
    assert_clean_error(result, *fragments)
    assert not report.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


def test_the_live_view_publishes_at_most_live_fps_while_watched() -> None:
    outputs = Outputs(False, None, "127.0.0.1:0", 30.0, live_fps=20.0)
    assert outputs.server is not None and outputs.server.max_stream_fps == 20.0
    viewer = _Viewer(outputs.server.port)
    try:
        assert wait_until(lambda: outputs.server.stream_clients == 1)
        handed, seconds, published = _feed_until(outputs, published=6)
        assert published >= 6, "the live view stopped publishing"
        assert published <= 1 + math.floor(seconds * 20.0 + 1e-6), (published, seconds)
        assert handed > published  # the loop ran faster than the live view: frames were skipped, not encoded
    finally:
        viewer.close()
        outputs.close()


def test_the_default_live_rate_applies_without_the_option() -> None:
    outputs = Outputs(False, None, "127.0.0.1:0", 30.0)
    try:
        assert outputs.server is not None and outputs.server.max_stream_fps == DEFAULT_LIVE_FPS <= 15.0
    finally:
        outputs.close()


def test_with_a_recording_the_live_view_only_encodes_recorded_frames(tmp_path: Path) -> None:
    video = tmp_path / "live.avi"
    outputs = _SeenOutputs(False, video, "127.0.0.1:0", 50.0, lossless=False, live_fps=MAX_LIVE_FPS)
    assert outputs.server is not None
    viewer = _Viewer(outputs.server.port)
    try:
        assert wait_until(lambda: outputs.server.stream_clients == 1)
        _, _, published = _feed_until(outputs, published=4)
        assert published >= 4
    finally:
        viewer.close()
        outputs.close()
    served = [record for record, serve in outputs.jobs if serve]
    assert served and all(served), outputs.jobs  # no frame was annotated for the live view alone
    assert outputs.recorded == sum(record for record, _ in outputs.jobs) and video.is_file()


def _policy(tid: int) -> tuple[int, int]:
    return os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler") or os.uname().sysname != "Linux", reason="per-thread scheduling is Linux's")
def test_the_live_output_thread_yields_its_core_and_a_file_recording_thread_does_not(tmp_path: Path) -> None:
    own = _policy(threading.get_native_id())
    live = Outputs(False, tmp_path / "live.mp4", None, 30.0, lossless=False)
    try:
        thread = live._thread
        assert thread is not None and thread.native_id is not None
        tid = thread.native_id
        assert wait_until(lambda: _policy(tid) != own)  # the thread lowers itself when it starts
        policy, nice = _policy(tid)
        assert policy == os.SCHED_IDLE or nice == 19
        assert _policy(threading.get_native_id()) == own  # the caller (the inference thread) keeps its own
    finally:
        live.close()
    kept = Outputs(False, tmp_path / "file.mp4", None, 30.0, lossless=True)
    try:
        assert kept._thread is not None and kept._thread.native_id is not None
        kept.handle(FRAME, _decision(), {}, {})  # the thread has run a job: a wrong implementation lowered itself by now
        assert wait_until(lambda: kept.recorded == 1)
        assert _policy(kept._thread.native_id) == own  # a file's recording: the loop waits for it anyway
    finally:
        kept.close()


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler") or os.uname().sysname != "Linux" or os.geteuid() != 0,
                    reason="raising a thread's priority again needs Linux and CAP_SYS_NICE")
def test_a_lowered_thread_gets_the_loops_priority_back_for_the_final_writes() -> None:
    own, lowered, release = _policy(threading.get_native_id()), threading.Event(), threading.Event()

    def output_thread() -> None:
        lower_thread_priority()
        lowered.set()
        release.wait(30)

    thread = threading.Thread(target=output_thread, daemon=True)
    thread.start()
    try:
        assert lowered.wait(30) and thread.native_id is not None
        assert _policy(thread.native_id) != own
        restore_thread_priority(thread)
        assert _policy(thread.native_id) == own
    finally:
        release.set()
        thread.join(30)
