"""A stream URL's password (`rtsp://user:PASS@camera/...`, as IP cameras are usually given) never reaches the camera's
log lines, its errors or its report: they show `user:***@host`. A real MJPEG stream over HTTP (FFmpeg sends the
credentials), the real CLI. `--device-password-file` puts the password into the URL in memory: a camera that demands
it (HTTP Basic) streams, and no command line holds it."""
from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from tests.camera_helpers import free_port, mjpeg_camera, shared_tflite
from tests.conftest import assert_clean_error, run_cli

SECRET = "Hunter2-cam-pw"


@pytest.fixture(scope="module")
def model(plain_int8_exports: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tflite(plain_int8_exports, tmp_path_factory.getbasetemp())


def test_a_stream_password_stays_out_of_logs_errors_and_the_report(model: Path, tmp_path: Path) -> None:
    pictures = [np.full((120, 160, 3), value, np.uint8) for value in (40, 120, 200)]
    report = tmp_path / "r.json"
    with mjpeg_camera(pictures) as url:
        with_password = url.replace("http://", f"http://viewer:{SECRET}@")
        result = run_cli("camera", "--device", with_password, "--model", model, "--frames", "5", "--headless", "--report", report,
                         "--json")
    assert result.returncode == 0, result.output
    assert SECRET not in result.output
    assert "removed from this process's command line" in result.stderr and "--device-password-file" in result.stderr  # scrubbed, said once
    text = report.read_text()
    data = json.loads(text)
    assert SECRET not in text and data["frames"] == 5
    assert data["source"]["spec"] == url.replace("http://", "http://viewer:***@") and "viewer:***@" in data["source"]["description"]

    nobody = f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/stream1"  # nothing listens: the error names the stream, redacted
    failed = run_cli("camera", "--device", nobody, "--model", model, "--frames", "1", "--headless", "--report", tmp_path / "x.json")
    assert failed.returncode != 0 and SECRET not in failed.output and "admin:***@127.0.0.1" in failed.output, failed.output
    typo = run_cli("camera", "--device", f"rstp://admin:{SECRET}@cam/stream1", "--model", model, "--report", tmp_path / "y.json")
    assert_clean_error(typo, "admin:***@cam")
    assert SECRET not in typo.output


@contextmanager
def basic_auth_camera(user: str, password: str, frames: int = 400) -> Iterator[tuple[str, list[str]]]:
    """An MJPEG camera on 127.0.0.1 that answers 401 unless HTTP Basic carries user:password; (URL without
    credentials, the Authorization headers it was sent)."""
    import cv2

    jpeg = cv2.imencode(".jpg", np.full((120, 160, 3), 90, np.uint8))[1].tobytes()
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    seen: list[str] = []
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            given = self.headers.get("Authorization", "")
            seen.append(given)
            if given != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="cam"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for _ in range(frames):  # bounded: the test's camera reads a few and hangs up
                    if stop.is_set():
                        break
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n")
                    stop.wait(0.02)
            except OSError:
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{user}@127.0.0.1:{server.server_address[1]}/stream.mjpg", seen
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_password_file_opens_a_camera_that_demands_it(model: Path, tmp_path: Path) -> None:
    password = SECRET + " @:/%"  # characters a URL must encode: put in %-encoded, decoded back by FFmpeg
    secret = tmp_path / "camera-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    report = tmp_path / "r.json"
    with basic_auth_camera("viewer", password) as (url, seen):
        result = run_cli("camera", "--device", url, "--device-password-file", secret, "--model", model, "--frames", "3",
                         "--headless", "--report", report, "--json")
    assert result.returncode == 0, result.output
    assert json.loads(report.read_text())["frames"] == 3
    assert "Basic " + base64.b64encode(f"viewer:{password}".encode()).decode() in seen  # the camera got the very password
    for text in (result.output, report.read_text()):
        assert SECRET not in text and quote(SECRET) not in text
