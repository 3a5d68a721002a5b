"""The camera's output policy when what it feeds is slow or failing: a stuck disk for --save-uncertain, a hung MQTT
broker, a viewer that stops reading, a recording the output thread cannot keep up with.

The policy under test (edgecls.integrations, edgecls.camera.outputs): the inference thread only hands work over
through a bounded queue; what does not fit is dropped and COUNTED in the report; nothing the loop does waits for
a sink. Every "never blocks" check below runs the producer on a thread and joins it with a generous bound: a
design that waited for the stuck consumer would still be stuck (the consumer is released only afterwards), so
the checks fail on a regression without asserting any timing.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecls.camera.decision import Postprocessor
from edgecls.camera.outputs import Outputs
from edgecls.integrations.uncertain import UNLABELLED, UncertainKeeper
from edgecls.integrations.worker import BoundedWorker
from tests.camera_helpers import free_port, shared_tflite, wait_until
from tests.test_camera import CountingSource, decode_video

HANG_BOUND_S = 60.0  # what "returned" means below: far above any real run here, far below a stuck wait


def finishes(work: Callable[[], object], bound: float = HANG_BOUND_S) -> dict[str, Any]:
    """Run `work` on a thread; {'done': whether it returned within `bound`, 'value': its result, 'error': what it raised}."""
    box: dict[str, Any] = {"value": None, "error": None}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    box["done"] = not thread.is_alive()
    return box


@pytest.fixture(scope="module")
def model(plain_int8_exports: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tflite(plain_int8_exports, tmp_path_factory.getbasetemp())


# ---------------------------------------------------------------- the bounded hand-off every sink uses


def test_bounded_worker_never_blocks_and_counts_every_item() -> None:
    entered, release = threading.Event(), threading.Event()
    handled: list[int] = []

    def stuck(item: int) -> None:  # a handler stuck on I/O (a hung NFS mount, a full pipe)
        entered.set()
        release.wait(HANG_BOUND_S)
        handled.append(item)

    worker: BoundedWorker[int] = BoundedWorker("stuck", stuck, maxsize=4, drain_timeout=0.2)
    try:
        assert worker.submit(0) and entered.wait(10)  # item 0 is in the handler
        outcome = finishes(lambda: [worker.submit(i) for i in range(1, 50)])
        assert outcome["done"], "submit() waited for the stuck handler"
        assert outcome["value"] == [True] * 4 + [False] * 45  # the queue holds 4; the newest are refused
        assert worker.counts() == {"queued": 5, "done": 0, "dropped": 45, "failed": 0, "first_error": None}
        assert finishes(worker.close)["done"]  # close() gives up after drain_timeout instead of waiting
        assert worker.counts()["dropped"] == 49  # the 4 still queued are counted too: 49 + the one in the handler = 50
        assert not worker.submit(99) and worker.counts()["dropped"] == 50  # closed: refused and counted
    finally:
        release.set()
    assert wait_until(lambda: worker.counts()["done"] == 1)
    assert handled == [0]  # the item in the handler finished; nothing queued ran after close


def test_bounded_worker_counts_a_failing_handler_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    def full_disk(item: int) -> None:
        if item % 2 == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"/data/{item}.jpg")

    worker: BoundedWorker[int] = BoundedWorker("disk", full_disk, maxsize=16)
    for index in range(10):
        assert worker.submit(index)
    worker.close()
    counts = worker.counts()
    assert counts["queued"] == counts["done"] == 10 and counts["failed"] == 5 and counts["dropped"] == 0
    assert "No space left on device" in counts["first_error"] and "/data/0.jpg" in counts["first_error"]
    assert sum("disk failed" in r.getMessage() for r in caplog.records) == 1  # one line, not one per frame


# ---------------------------------------------------------------- a stuck --save-uncertain disk inside a real run


class StuckKeeper(UncertainKeeper):
    """The real UncertainKeeper whose disk hangs: each save waits until the test releases it, then writes for real."""

    def __init__(self, folder: Path, **options: Any) -> None:
        super().__init__(folder, **options)
        self.entered, self.release = threading.Event(), threading.Event()

    def _save(self, item: dict[str, Any]) -> None:
        self.entered.set()
        self.release.wait(HANG_BOUND_S)
        super()._save(item)


def test_a_stuck_save_uncertain_disk_never_slows_the_loop_and_its_drops_are_reported(model: Path, tmp_path: Path) -> None:
    from edgecls.camera.loop import run_camera

    ticks = itertools.count()
    keeper = StuckKeeper(tmp_path / "keep", threshold=1.0, margin=1.0, rate=1000, queue_size=3,
                         clock=lambda: next(ticks) / 100)  # 10 ms apart: every uncertain frame is due at 1000/s
    try:
        outcome = finishes(lambda: run_camera(model, lambda: CountingSource(size=(48, 64)), frames=60, sinks=[keeper],
                                              report=tmp_path / "r.json"))
        assert outcome["done"] and outcome["error"] is None, outcome["error"]
    finally:
        keeper.release.set()
    summary = outcome["value"]
    kept = summary["integrations"]["save_uncertain"]
    assert summary["frames"] == 60 and summary["status"] == "finished"
    assert keeper.entered.is_set() and kept["uncertain"] >= 10 and kept["rate_limited"] == 0
    # every uncertain frame is accounted for: one reached the (stuck) disk, the rest were dropped and counted
    assert kept["dropped_queue_full"] == kept["uncertain"] - 1 and kept["saved"] == 0 and kept["failed"] == 0
    # released after the run: the frame in the handler is written whole, with its sidecar, and nothing else appears
    folder = tmp_path / "keep" / UNLABELLED
    assert wait_until(lambda: sorted(p.suffix for p in folder.iterdir()) == [".jpg", ".json"]), list(folder.iterdir())


# ---------------------------------------------------------------- a hung MQTT broker (real mosquitto, SIGSTOPped)


def test_a_hung_broker_never_blocks_offer_and_every_result_is_accounted_for() -> None:
    """The broker process is stopped (SIGSTOP), not killed: the TCP connection stays up, nothing is acknowledged, the
    kernel buffers fill. offer() still returns at once; paho's bounded queue fills and further results are counted
    as failed or dropped; close() returns; after SIGCONT the same sink publishes again."""
    from tests.test_mqtt import MOSQUITTO, Broker, Clock, Subscriber, model_info, results, sink_for

    if MOSQUITTO is None:
        pytest.skip("Debian's mosquitto is missing: apt-get install mosquitto")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker").start()
        subscriber = Subscriber(broker)
        clock = Clock()
        sink = sink_for(broker, clock=clock, rate=10.0, debounce=1, qos=1, queue_size=8)
        stopped = False

        def offer(labels: list[str]) -> None:
            for result in results(labels):
                sink.offer(result)
                clock.now += 0.1  # every frame is due at 10 a second

        try:
            sink.open(model_info())
            offer(["cat"] * 3)
            assert wait_until(lambda: len(subscriber.on("test/cam/result")) == 3)
            assert broker.proc is not None
            os.kill(broker.proc.pid, signal.SIGSTOP)
            stopped = True
            assert finishes(lambda: offer(["dog"] * 300))["done"], "offer() waited for a hung broker"

            def accounted() -> int:
                counts = sink.report()
                return counts["results_published"] + counts["publish_failed"] + counts["dropped_queue_full"] + counts["dropped_offline"]

            assert wait_until(lambda: accounted() == 303), sink.report()  # the publisher thread handed each to paho or counted it
            counts = sink.report()
            assert counts["publish_failed"] + counts["dropped_queue_full"] >= 300 - 16, counts  # paho holds 8 un-acked at most
            assert not counts["publish_failed"] or "outgoing queue is full" in (counts["last_error"] or "")
            os.kill(broker.proc.pid, signal.SIGCONT)
            stopped = False
            before = len(subscriber.on("test/cam/result"))
            assert wait_until(lambda: len(subscriber.on("test/cam/result")) > before, 15)  # what paho held goes out
            offer(["bird"] * 2)
            assert wait_until(lambda: subscriber.on("test/cam/result")[-1:] and '"bird"' in subscriber.on("test/cam/result")[-1], 15)
        finally:
            if stopped and broker.proc is not None:
                os.kill(broker.proc.pid, signal.SIGCONT)
            assert finishes(sink.close)["done"]
            subscriber.close()
            broker.stop()


def test_close_returns_while_the_broker_is_hung() -> None:
    from tests.test_mqtt import MOSQUITTO, Broker, Clock, model_info, results, sink_for

    if MOSQUITTO is None:
        pytest.skip("Debian's mosquitto is missing: apt-get install mosquitto")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker").start()
        clock = Clock()
        sink = sink_for(broker, clock=clock, rate=10.0, debounce=1, qos=1, queue_size=4)
        try:
            sink.open(model_info())
            assert broker.proc is not None
            os.kill(broker.proc.pid, signal.SIGSTOP)
            for result in results(["cat", "dog"] * 20):
                sink.offer(result)
                clock.now += 0.1
            closed = finishes(sink.close, 30)
            assert closed["done"] and closed["error"] is None, closed["error"]  # bounded: each step has its own timeout
        finally:
            with contextlib.suppress(ProcessLookupError):
                if broker.proc is not None:
                    os.kill(broker.proc.pid, signal.SIGCONT)
            broker.stop()


# ---------------------------------------------------------------- the live view and the recording


class GatedSource(CountingSource):
    """A live source whose first frame waits until the test opens the gate (the viewer is attached by then)."""

    def __init__(self, gate: threading.Event, **options: Any) -> None:
        super().__init__(**options)
        self.gate = gate

    def read(self) -> np.ndarray | None:
        self.gate.wait(HANG_BOUND_S)
        return super().read()


def stalled_viewer(port: int) -> socket.socket:
    """A viewer that asks for the MJPEG stream, reads the status line, then never reads again (tiny receive buffer)."""
    deadline = time.monotonic() + HANG_BOUND_S
    while True:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            break
        sock.close()
        assert time.monotonic() < deadline, "the live view never started"
        time.sleep(0.05)
    sock.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    sock.settimeout(30)
    status = sock.recv(12)
    assert status.endswith(b" 200"), status
    return sock


def test_a_viewer_that_stops_reading_never_slows_the_loop(model: Path, tmp_path: Path) -> None:
    from edgecls.camera.loop import run_camera

    port, gate, box = free_port(), threading.Event(), {}

    def camera() -> None:
        box["summary"] = run_camera(model, lambda: GatedSource(gate, size=(240, 320)), frames=400,
                                    serve=f"127.0.0.1:{port}", report=tmp_path / "r.json")

    thread = threading.Thread(target=camera, daemon=True)
    thread.start()
    viewer = stalled_viewer(port)
    try:
        gate.set()
        thread.join(HANG_BOUND_S)
        assert not thread.is_alive(), "the loop waited for a viewer that does not read"
    finally:
        gate.set()
        viewer.close()
    summary = box["summary"]
    assert summary["frames"] == 400 and summary["status"] == "finished" and summary["stop_reason"] == "frames"


class StuckOutputs(Outputs):
    """The real Outputs whose output thread hangs in its first write (a stalled disk under the recording)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        super().__init__(*args, **kwargs)

    def _write(self, job: Any) -> None:
        self.entered.set()
        self.release.wait(HANG_BOUND_S)
        super()._write(job)


def test_a_live_recording_that_cannot_keep_up_skips_frames_and_counts_them(tmp_path: Path) -> None:
    """Live source (lossless=False): handle() never waits; the newest frame replaces the one still waiting, each
    replaced frame is counted in `dropped`, and the video holds exactly the frames counted as recorded."""
    post = Postprocessor(["a", "b"], top_k=1)
    decision = post(np.array([0.7, 0.3], np.float32))
    video = tmp_path / "live.avi"
    outputs = StuckOutputs(False, video, None, record_fps=1e6, lossless=False)  # every frame is due for the recording
    frame = np.full((48, 64, 3), 90, np.uint8)
    try:
        assert outputs.handle(frame, decision, {}, {}) is False
        assert outputs.entered.wait(10)  # frame 1 is in the (stuck) writer
        assert finishes(lambda: [outputs.handle(frame, decision, {}, {}) for _ in range(50)])["done"]
        assert outputs.dropped == 49  # frame 2..51: each replaced by the next; frame 51 waits
    finally:
        outputs.release.set()
    outputs.close()
    assert outputs.recorded == 2 and outputs.dropped == 49
    assert len(decode_video(video)) == 2


# The live output thread's scheduling (SCHED_IDLE, else niceness 19): tests/test_camera_live_rate.py
