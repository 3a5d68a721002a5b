"""Helpers shared by the camera product tests (MQTT, HTTP API, uncertain frames): a real exported model,
a never-ending live MJPEG stream served over HTTP (a real network camera stand-in that OpenCV reads
through FFmpeg), free ports and polling."""
from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def shared_tflite(plain_int8_exports: Path, base: Path) -> Path:
    """This worker's copy of the tiny run's INT8 TFLite export (the session's `plain_int8_exports`, exported once per
    test run): a copy, because the camera writes its report beside the model."""
    out = base / "shared-camera-tflite"
    model = out / "tflite-int8" / "model.tflite"
    if not model.is_file():
        shutil.copytree(plain_int8_exports / "tflite-int8", out / "tflite-int8", dirs_exist_ok=True)
    return model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


@contextmanager
def mjpeg_camera(pictures: list[np.ndarray], fps: float = 50.0, size: tuple[int, int] = (160, 120)) -> Iterator[str]:
    """A live camera on http://127.0.0.1:PORT/stream.mjpg that keeps sending `pictures` (RGB) in turn until the block ends."""
    import cv2

    from edgecls.camera.server import LiveServer

    live = LiveServer(port=0)
    live.max_stream_fps = 1000.0
    frames = [cv2.imencode(".jpg", cv2.cvtColor(cv2.resize(p, size), cv2.COLOR_RGB2BGR))[1].tobytes() for p in pictures]
    stop = threading.Event()

    def publish() -> None:
        index = 0
        while not stop.is_set():
            live.publish(frames[index % len(frames)], {})
            index += 1
            stop.wait(1.0 / fps)

    live.start()
    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{live.port}/stream.mjpg"
    finally:
        stop.set()
        thread.join(5)
        live.stop()
