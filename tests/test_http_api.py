"""The HTTP JSON API (GET /api/info, POST /api/classify): a real `edgecls serve` process and a real `edgecls camera
--serve` process answered by real HTTP clients (http.client, urllib, raw sockets), and headless Chromium running a
page that calls the API. Answers are checked against edgecls' own Classifier on the same file."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.camera_helpers import free_port, mjpeg_camera, shared_tflite, wait_until
from tests.conftest import REPO, assert_clean_error, run_cli

TOKEN = "api-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def model(plain_int8_exports: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tflite(plain_int8_exports, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def images(fmnist_tree: Path) -> list[Path]:
    return sorted((fmnist_tree / "test").glob("*/*.png"))[::8][:5]


class Server:
    """A real `edgecls serve` (or `edgecls camera --serve`) process on a free loopback port."""

    def __init__(self, *args: str | Path, command: str = "serve") -> None:
        self.port = free_port()
        address = f"127.0.0.1:{self.port}"
        argv = [command, *args, "--serve", address]
        self.proc = subprocess.Popen([sys.executable, "-c", "from edgecls.cli.app import main; main()", *map(str, argv)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                     env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if not wait_until(self._up, 90):
            self.proc.kill()
            raise AssertionError(f"the server did not start: {self.proc.communicate(timeout=30)}")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the server exited: {self.proc.communicate(timeout=30)}")
        try:
            return self.request("GET", "/healthz", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        except OSError:
            return False

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            kind = response.getheader("Content-Type", "")
            return response.status, json.loads(data) if kind.startswith("application/json") else data
        finally:
            conn.close()

    def stop(self) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err


@pytest.fixture(scope="module")
def server(model: Path) -> Iterator[Server]:
    running = Server(model, "--max-body", "200000", "--top-k", "3")
    yield running
    running.stop()


def multipart(field: str, filename: str, data: bytes, content_type: str = "image/png") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def expected_scores(model: Path, image: Path) -> np.ndarray:
    from edgecls.preprocess import prepare
    from edgecls.runtime import Classifier

    with Classifier(model) as classifier:
        return classifier.predict_arrays(prepare(image, classifier.meta)[None])[0]


# ---------------------------------------------------------------- edgecls serve


def test_info_names_the_model_labels_and_input_contract(server: Server, model: Path) -> None:
    status, info = server.request("GET", "/api/info")
    meta = json.loads((model.parent / "meta.json").read_text())
    assert status == 200 and info["labels"] == meta["labels"] and info["model"]["file"] == "model.tflite"
    assert info["model"]["backend"] == "litert" and "int8" in info["model"]["precision_ran"]
    assert info["input"] == {"height": 32, "width": 32, "channels": 3, "pixels": "uint8 0..255", "color_order": "RGB",
                             "crop_fraction": 1.0, "interpolation": meta["interpolation"], "normalization": "inside the model",
                             "output": "probabilities"}
    assert info["classify"]["max_body_bytes"] == 200000 and info["camera"] is None and set(info["latency_ms"]) == {
        "decode", "preprocess", "inference", "total"}


def test_classify_raw_bytes_and_multipart_agree_with_the_classifier(server: Server, model: Path, images: list[Path]) -> None:
    for image in images:
        data = image.read_bytes()
        status, answer = server.request("POST", "/api/classify", data, {"Content-Type": "image/png"})
        assert status == 200, answer
        scores = expected_scores(model, image)
        ids = [c["id"] for c in answer["top_k"]]  # int8 scores tie often: the top 3 by score, ties in any order
        np.testing.assert_allclose([c["score"] for c in answer["top_k"]], scores[ids], atol=1e-5)
        np.testing.assert_allclose(scores[ids], np.sort(scores)[::-1][:3], atol=1e-5)
        assert len(set(ids)) == 3
        assert answer["label"] == answer["top_k"][0]["label"] and answer["image"] == {"width": 28, "height": 28}
        assert set(answer["latency_ms"]) == {"decode", "preprocess", "inference", "total"}
        body, kind = multipart("image", image.name, data)
        status, again = server.request("POST", "/api/classify?top_k=1", body, {"Content-Type": kind})
        assert status == 200 and again["top_k"] == answer["top_k"][:1]
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/api/classify", data=images[0].read_bytes(),
                                     headers={"Content-Type": "application/octet-stream"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:  # urllib too: any client that sends bytes works
        first = expected_scores(model, images[0])
        assert first[json.loads(response.read())["top_k"][0]["id"]] == pytest.approx(first.max(), abs=1e-5)
    status, info = server.request("GET", "/api/info")
    assert info["classify"]["classified"] >= 2 * len(images) + 1 and info["latency_ms"]["total"]["n"] >= 2 * len(images) + 1


def test_bad_requests_get_json_errors_and_the_server_goes_on(server: Server, images: list[Path]) -> None:
    cases = [
        ("POST", "/api/classify", b"\x89PNG not really", {"Content-Type": "image/png"}, 400, "not a readable image"),
        ("POST", "/api/classify", b"hello", {"Content-Type": "text/plain"}, 415, "not an image"),
        ("POST", "/api/classify?top_k=99", images[0].read_bytes(), {"Content-Type": "image/png"}, 400, "top_k"),
        ("POST", "/api/classify", multipart("note", "x", b"")[0][:60], {"Content-Type": multipart("n", "x", b"")[1]}, 415, "no file part"),
        ("POST", "/api/classify", images[0].read_bytes(), {"Content-Type": "image/png", "Origin": "http://evil.example"}, 403, "origin"),
        ("POST", "/api/classify", b"\0" * 300_000, {"Content-Type": "image/png"}, 413, "over the 200,000 byte limit"),
        ("POST", "/api/classify", b"", {"Content-Type": "image/png"}, 400, "empty"),
    ]
    for method, path, body, headers, code, fragment in cases:
        status, answer = server.request(method, path, body, headers)
        assert status == code and fragment in answer["error"] and answer["fix"], (path, headers, status, answer)
    assert server.request("GET", "/api/classify")[0] == 405
    assert server.request("POST", "/api/info", b"x")[0] == 405
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:  # no Content-Length: 411, nothing read
        sock.sendall(f"POST /api/classify HTTP/1.0\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: image/png\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.0 411")
    status, answer = server.request("POST", "/api/classify", images[0].read_bytes(), {"Content-Type": "image/png"})
    assert status == 200 and answer["top_k"]  # still serving


def test_same_host_and_token_rules_as_the_live_view(model: Path, images: list[Path], tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    guarded = Server(model, "--token-file", token_file)
    try:
        data = images[0].read_bytes()
        assert guarded.request("POST", "/api/classify", data, {"Content-Type": "image/png"})[0] == 401
        assert guarded.request("GET", "/api/info")[0] == 401
        ok = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/png"}
        assert guarded.request("POST", "/api/classify", data, ok)[0] == 200
        assert guarded.request("GET", f"/api/info?token={TOKEN}")[0] == 200
        assert guarded.request("GET", "/api/info", headers={"Authorization": f"Bearer {TOKEN}", "Host": "evil.example"})[0] == 421
    finally:
        code, out, err = guarded.stop()
    assert code == 143 and TOKEN not in out + err


def test_serve_mistakes_are_clean_errors(model: Path, tmp_path: Path) -> None:
    assert_clean_error(run_cli("serve", tmp_path / "missing.tflite"), "does not exist")
    assert_clean_error(run_cli("serve", model, "--serve", "127.0.0.1:99999"), "bad port")
    assert_clean_error(run_cli("serve", model, "--max-body", "10"), "--max-body 10")
    assert_clean_error(run_cli("serve", model, "--top-k", "0"), "top-k 0")


# ---------------------------------------------------------------- edgecls camera --serve


def test_camera_serve_answers_the_api_while_the_loop_runs(model: Path, images: list[Path], tmp_path: Path) -> None:
    pictures = [np.asarray(Image.open(p).convert("RGB")) for p in images]
    report = tmp_path / "report.json"
    with mjpeg_camera(pictures) as camera:
        camera_server = Server("--device", camera, "--model", model, "--report", report, command="camera")
        try:
            assert wait_until(lambda: (camera_server.request("GET", "/api/info")[1].get("camera") or {}).get("frames", 0) > 3, 60)
            for image in images[:3]:
                status, answer = camera_server.request("POST", "/api/classify", image.read_bytes(), {"Content-Type": "image/png"})
                assert status == 200 and answer["top_k"][0]["id"] == int(np.argmax(expected_scores(model, image)))
            frames = camera_server.request("GET", "/api/info")[1]["camera"]["frames"]
            assert wait_until(lambda: camera_server.request("GET", "/api/info")[1]["camera"]["frames"] > frames + 3, 30)
            assert camera_server.request("GET", "/stats.json")[0] == 200
        finally:
            code, out, err = camera_server.stop()
        assert code == 143, err
        data = json.loads(report.read_text())
        assert data["stop_reason"] == "terminated" and data["counts"]["inference_failed"] == 0


# ---------------------------------------------------------------- in process: limits and the browser


@pytest.fixture
def api_server(model: Path) -> Iterator[Any]:
    from edgecls.camera.api import ClassifyApi
    from edgecls.camera.server import LiveServer
    from edgecls.runtime import load_backend

    backend = load_backend(model)
    live = LiveServer(port=0)
    api = ClassifyApi(backend, max_body=100_000, max_inflight=1, body_timeout=1.0).mount(live)
    live.start()
    yield live, api
    live.stop()
    backend.close()


def test_slow_bodies_time_out_and_busy_answers_503(api_server: Any, images: list[Path]) -> None:
    live, api = api_server
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(f"POST /api/classify HTTP/1.0\r\nHost: 127.0.0.1:{live.port}\r\nContent-Type: image/png\r\n"
                     f"Content-Length: 5000\r\n\r\n".encode() + b"\x89PNG")
        answer = b""  # the body never completes: 408 after body_timeout, not a thread held forever
        while chunk := sock.recv(4096):  # headers and body may come in separate writes: read to the close
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 408") and b"did not arrive" in answer
    assert api._inflight.acquire(blocking=False)  # one request in flight (max_inflight=1)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
        conn.request("POST", "/api/classify", images[0].read_bytes(), {"Content-Type": "image/png"})
        response = conn.getresponse()
        assert response.status == 503 and response.getheader("Retry-After") == "1"
        conn.close()
    finally:
        api._inflight.release()


@pytest.fixture(scope="session")
def chromium() -> str:
    found = shutil.which("chromium") or (os.path.exists("/usr/bin/chromium") and "/usr/bin/chromium")
    if not found:
        pytest.skip("chromium is not installed: run 'make setup' as root, or 'apt-get install -y chromium'")
    return found


def dump_dom(chromium: str, url: str, profile: Path) -> str:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
           "--virtual-time-budget=5000", "--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


PAGE = b"""<!doctype html><html><body><pre id="out">pending</pre><script>
fetch("/picture.png").then((r) => r.blob()).then((blob) =>
  fetch("/api/classify?top_k=2", {method: "POST", body: blob, headers: {"Content-Type": "image/png"}}))
  .then(async (r) => { document.getElementById("out").textContent = JSON.stringify({status: r.status, answer: await r.json()}); })
  .catch((e) => { document.getElementById("out").textContent = "failed: " + e; });
</script></body></html>"""


def test_a_browser_page_calls_the_api(api_server: Any, chromium: str, images: list[Path], model: Path, tmp_path: Path) -> None:
    live, _ = api_server
    picture = images[1].read_bytes()
    live.add_route("/test.html", lambda request: request.send(200, PAGE, "text/html; charset=utf-8"))
    live.add_route("/picture.png", lambda request: request.send(200, picture, "image/png"))
    dom = dump_dom(chromium, f"{live.url}test.html", tmp_path / "profile")
    text = dom.split('<pre id="out">')[1].split("</pre>")[0].replace("&quot;", '"')
    result = json.loads(text)
    scores = expected_scores(model, images[1])
    assert result["status"] == 200 and [c["id"] for c in result["answer"]["top_k"]] == [int(i) for i in np.argsort(scores)[::-1][:2]]


def test_the_serve_page_shows_the_model(server: Server, chromium: str, tmp_path: Path) -> None:
    dom = dump_dom(chromium, f"http://127.0.0.1:{server.port}/", tmp_path / "profile")
    model_line = dom.split('<div id="model">')[1].split("</div>")[0]
    assert "plain_cnn 32x32, litert" in model_line and "10 labels" in model_line


def test_serve_stops_cleanly_on_sigint(model: Path) -> None:
    running = Server(model)
    threading.Event().wait(0.2)
    running.proc.send_signal(signal.SIGINT)
    out, err = running.proc.communicate(timeout=60)
    assert running.proc.returncode == 130 and "error: interrupted" in err and "Traceback" not in err
