"""The live view: a real LiveServer on a free port, real HTTP clients, raw sockets and headless Chromium."""
from __future__ import annotations

import http.client
import io
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from edgecls.camera.server import BOUNDARY, LiveServer, parse_address
from edgecls.errors import ConfigError

MAGENTA = (255, 0, 200)
STATS = {"label": "sneaker", "score": 0.93, "fps": 28.7, "latency_p50_ms": 12.3, "latency_p99_ms": 20.1,
         "backend": "litert", "precision": "int8"}


def make_jpeg(index: int = 0, size: tuple[int, int] = (320, 240), color: tuple[int, int, int] = MAGENTA) -> bytes:
    image = Image.new("RGB", size, color)
    ImageDraw.Draw(image).text((10, 10), f"frame {index}", fill=(255, 255, 255))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def noise_jpeg(min_bytes: int = 100_000) -> bytes:
    """A real JPEG of random noise, at least `min_bytes` long."""
    rng = np.random.default_rng(0)
    side = 160
    while True:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
        if buf.tell() >= min_bytes:
            return buf.getvalue()
        side += 40


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class Publisher:
    """Publishes numbered frames from a thread, like the camera loop."""

    def __init__(self, server: LiveServer, interval: float = 0.02, frame: Callable[[int], bytes] = make_jpeg) -> None:
        self.server, self.interval, self.frame = server, interval, frame
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.server.publish(self.frame(self.count), {**STATS, "frame": self.count})
            self.count += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def server() -> Iterator[LiveServer]:
    live = LiveServer(port=0, max_clients=2)
    live.send_timeout = 1.0  # drop stalled test clients quickly
    live.idle_resend = 0.3
    live.start()
    yield live
    live.stop()


def get(live: LiveServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def raw_request(live: LiveServer, request_line: str, host: str | None = None) -> bytes:
    """Send a request byte for byte (no client-side path normalisation) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(f"{request_line}\r\nHost: {host or f'127.0.0.1:{live.port}'}\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def open_stream(live: LiveServer) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=5)
    conn.request("GET", "/stream.mjpg")
    return conn.getresponse()


def read_part(resp: http.client.HTTPResponse) -> bytes:
    """Read the next multipart part's JPEG bytes (skips the boundary line and part headers)."""
    line = resp.readline()
    while line.strip() in (b"", f"--{BOUNDARY}".encode()):
        assert line, "stream ended"
        line = resp.readline()
    headers = {}
    while line.strip():
        key, _, value = line.decode().partition(":")
        headers[key.strip().lower()] = value.strip()
        line = resp.readline()
    assert headers["content-type"] == "image/jpeg"
    return resp.read(int(headers["content-length"]))


def stalled_stream_socket(live: LiveServer) -> socket.socket:
    """A viewer that asks for the stream and never reads: tiny receive buffer, so sends stall fast."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", live.port))
    sock.sendall(f"GET /stream.mjpg HTTP/1.0\r\nHost: 127.0.0.1:{live.port}\r\n\r\n".encode())
    return sock


def test_page_has_stream_image_and_stats_script(server: LiveServer) -> None:
    status, headers, body = get(server, "/")
    page = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert '<img id="live" src="/stream.mjpg"' in page
    assert 'fetch("/stats.json"' in page and "setInterval(poll, 500)" in page
    for field in ("score", "fps", "latency_p50_ms", "latency_p99_ms", "frame_age_ms", "backend", "precision"):
        assert f"s.{field}" in page
    assert "http://" not in page and "https://" not in page and "//cdn" not in page  # self-contained
    assert "default-src 'none'" in headers["content-security-policy"]


def test_title_is_escaped() -> None:
    live = LiveServer(port=0, title="<script>x</script> cam")
    live.start()
    try:
        page = get(live, "/")[2].decode()
    finally:
        live.stop()
    assert "&lt;script&gt;x&lt;/script&gt; cam" in page and "<script>x</script>" not in page


def test_stats_json_returns_published_stats(server: LiveServer) -> None:
    status, _, body = get(server, "/stats.json")
    assert status == 200 and json.loads(body) == {"frame_age_ms": None, "frames": 0}
    server.publish(make_jpeg(), {**STATS, "nan": float("nan"), "np": np.float32(0.5), "hist": [1, 2]})
    status, headers, body = get(server, "/stats.json")
    stats = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert {k: stats[k] for k in STATS} == STATS
    assert stats["nan"] is None and stats["np"] == 0.5 and stats["hist"] == [1, 2]  # strict JSON
    assert stats["frames"] == 1 and 0 <= stats["frame_age_ms"] < 5000


def test_snapshot_is_503_then_latest_frame(server: LiveServer) -> None:
    status, _, body = get(server, "/snapshot.jpg")
    assert status == 503 and b"no frame" in body
    first, second = make_jpeg(1), make_jpeg(2)
    server.publish(first, STATS)
    server.publish(second, STATS)
    status, headers, body = get(server, "/snapshot.jpg?t=123")
    assert status == 200 and headers["content-type"] == "image/jpeg" and body == second
    assert server.buffered_bytes == len(second)


def test_healthz(server: LiveServer) -> None:
    assert get(server, "/healthz")[:3:2] == (200, b"ok\n")


def test_publish_refuses_non_jpeg(server: LiveServer) -> None:
    with pytest.raises(ValueError, match="JPEG"):
        server.publish(b"\x89PNG\r\n", STATS)


def test_stream_delivers_jpeg_parts(server: LiveServer) -> None:
    with Publisher(server):
        resp = open_stream(server)
        assert resp.status == 200
        assert resp.getheader("Content-Type") == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        parts = [read_part(resp) for _ in range(4)]
        resp.close()
    image = Image.open(io.BytesIO(parts[-1]))
    image.load()
    assert image.format == "JPEG" and image.size == (320, 240)
    assert np.abs(np.asarray(image)[200, 200].astype(int) - MAGENTA).max() < 20
    assert len(set(parts)) >= 2  # new frames, not one frame repeated


def test_default_bind_is_loopback(caplog: pytest.LogCaptureFixture) -> None:
    assert LiveServer().host == "127.0.0.1" and LiveServer().port == 8080
    live = LiveServer(port=0)
    with caplog.at_level(logging.WARNING, logger="edgecls.camera.server"):
        live.start()
    try:
        assert live._httpd.socket.getsockname()[0] == "127.0.0.1"
        assert live.url == f"http://127.0.0.1:{live.port}/" and live.port != 0
    finally:
        live.stop()
    assert not caplog.records


def test_all_interfaces_only_when_asked_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    live = LiveServer(host="0.0.0.0", port=0)
    with caplog.at_level(logging.WARNING, logger="edgecls.camera.server"):
        live.start()
    live.stop()
    assert len(caplog.records) == 1 and "visible to anyone on the network" in caplog.records[0].getMessage()


def test_port_in_use_is_a_config_error(server: LiveServer) -> None:
    with pytest.raises(ConfigError, match=f"cannot bind the live view to 127.0.0.1:{server.port}"):
        LiveServer(port=server.port).start()


@pytest.mark.parametrize(
    "path",
    ["/../../etc/passwd", "/%2e%2e/", "/%2e%2e/%2e%2e/etc/passwd", "/stream.mjpg/../x", "/..%2f..%2fetc%2fpasswd",
     "//etc/passwd", "/snapshot.jpg/..", "/index.html", "/etc/passwd", "/healthz/", "/stats.json%00"],
)
def test_unknown_paths_and_traversal_are_404(server: LiveServer, path: str) -> None:
    server.publish(make_jpeg(), STATS)
    answer = raw_request(server, f"GET {path} HTTP/1.0")
    assert answer.startswith(b"HTTP/1.0 404"), answer[:80]
    assert b"root:" not in answer and b"\xff\xd8" not in answer and len(answer) < 1000


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD", "BREW"])
def test_other_methods_are_405(server: LiveServer, method: str) -> None:
    status, headers, _ = get(server, "/stats.json", method=method)
    assert status == 405 and headers["allow"] == "GET"


def test_extra_stream_client_gets_503(server: LiveServer) -> None:
    with Publisher(server):
        streams = [open_stream(server) for _ in range(server.max_clients)]
        assert [s.status for s in streams] == [200, 200]
        status, _, body = get(server, "/stream.mjpg")
        assert status == 503 and b"too many live-view clients (max 2)" in body
        assert get(server, "/stats.json")[0] == 200  # other routes still answer
        streams[0].close()
        assert wait_until(lambda: server.stream_clients == 1)  # slot released on the next frame
        again = open_stream(server)
        assert again.status == 200 and read_part(again)
        for s in (again, *streams[1:]):
            s.close()


def test_slow_client_does_not_grow_memory_and_is_dropped(server: LiveServer) -> None:
    big = noise_jpeg(100_000)
    server.publish(big, STATS)
    slow = stalled_stream_socket(server)
    try:
        assert wait_until(lambda: server.stream_clients == 1)
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            started = time.monotonic()
            for i in range(200):  # 20 MB in total if anything queued them
                server.publish(bytearray(big), {"frame": i})  # a new 100 KB object each time
                if i % 20 == 0:
                    time.sleep(0.01)  # let the stream thread write
            publish_time = time.monotonic() - started
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert current - baseline < 1_000_000 and peak - baseline < 1_500_000, (current - baseline, peak - baseline)
        assert server.buffered_bytes == len(big)
        assert publish_time < 2.0  # the publisher never waits for viewers

        def dropped() -> bool:
            server.publish(big, STATS)
            return server.stream_clients == 0

        assert wait_until(dropped, timeout=15.0), "a stalled viewer was never dropped"
    finally:
        slow.close()


def test_client_disconnecting_mid_stream_does_not_break_others(server: LiveServer) -> None:
    with Publisher(server):
        leaver, stayer = open_stream(server), open_stream(server)
        read_part(leaver)
        read_part(stayer)
        sock = leaver.fp.raw._sock  # reset the connection abruptly (RST, not FIN)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        leaver.close()
        sock.close()
        assert wait_until(lambda: server.stream_clients == 1)
        for _ in range(3):
            Image.open(io.BytesIO(read_part(stayer))).load()
        assert get(server, "/healthz")[0] == 200
        stayer.close()


def test_stop_is_prompt_with_clients_connected() -> None:
    live = LiveServer(port=0, max_clients=4)
    live.start()
    big = noise_jpeg(100_000)
    with Publisher(live, frame=lambda i: big):
        reader = open_stream(live)
        read_part(reader)
        stalled = stalled_stream_socket(live)  # blocked in send()
        idle = socket.create_connection(("127.0.0.1", live.port))  # never sends a request: blocked in recv()
        assert wait_until(lambda: live.stream_clients == 2)
        time.sleep(0.3)  # let the stalled viewer fill its buffers
        started = time.monotonic()
        live.stop()
        elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"stop() took {elapsed:.2f} s"
    with pytest.raises((OSError, http.client.HTTPException, AssertionError)):
        for _ in range(1000):  # the open stream ends
            read_part(reader)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", live.port), timeout=1)
    for s in (reader, stalled, idle):
        s.close()
    live.stop()  # idempotent


def test_requests_do_not_log_to_stderr(server: LiveServer, capfd: pytest.CaptureFixture[str]) -> None:
    server.publish(make_jpeg(), STATS)
    for path in ("/", "/stats.json", "/snapshot.jpg", "/nope"):
        get(server, path)
    get(server, "/", method="POST")
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.0.0.0:8080", ("0.0.0.0", 8080)), (":9000", ("127.0.0.1", 9000)), ("8081", ("127.0.0.1", 8081)),
     ("localhost:0", ("localhost", 0)), (" pi.local:80 ", ("pi.local", 80))],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("", "empty"), ("host:", "bad port"), ("abc", "bad port"), ("h:99999", "bad port"), ("h:-1", "bad port"),
     ("[::1]:80", "cannot parse"), ("1.2.3.4:80:90", "cannot parse"), ("a b:80", "bad host"), ("a..b:1", "bad host")],
)
def test_parse_address_errors(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_address(text)
    assert repr(text) in str(info.value) and info.value.hint


def test_constructor_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="max_clients"):
        LiveServer(max_clients=0)
    with pytest.raises(ConfigError, match="port"):
        LiveServer(port=70000)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, which scripts/setup.sh installs (as root) before the tests run."""
    found = shutil.which("chromium") or (os.path.exists("/usr/bin/chromium") and "/usr/bin/chromium")
    if not found:
        pytest.skip("chromium is not installed: run 'make setup' as root, or 'apt-get install -y chromium'")
    return found


def test_page_renders_in_headless_chromium(server: LiveServer, chromium: str, tmp_path: Path) -> None:
    shot = tmp_path / "live_view.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=800,600",
           "--virtual-time-budget=3000", server.url]
    with Publisher(server, interval=0.05):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (800, 600)
    pixels = np.asarray(image).astype(int)
    assert pixels.std() > 20  # not a blank page
    magenta = (np.abs(pixels - MAGENTA).max(axis=2) < 30).sum()
    assert magenta > 20_000, f"the published frame is not on the page ({magenta} magenta pixels)"
    label_green = (np.abs(pixels - (127, 214, 127)).max(axis=2) < 30).sum()
    assert label_green > 50, "the stats panel did not render the label"
    if os.environ.get("EDGECLS_SAVE_SCREENSHOT"):
        shutil.copy(shot, os.environ["EDGECLS_SAVE_SCREENSHOT"])
