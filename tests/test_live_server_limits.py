"""Live view hardening: connection cap, header deadline, Host allowlist, access token; real sockets on 127.0.0.1.

The end-to-end proof (2,000 slow connections against `edgecls camera --serve` under `ulimit -n 1024`)
lives in tests/test_camera_safety.py, next to the other camera CLI runs that need an exported artifact.
"""
from __future__ import annotations

import http.client
import logging
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.camera.access import MIN_TOKEN_LENGTH, TOKEN_COOKIE, read_token_file
from edgecls.camera.server import LiveServer
from edgecls.errors import ConfigError
from tests.test_live_server import MAGENTA, STATS, Publisher, make_jpeg, open_stream, read_part, wait_until

TOKEN = "k3Y_-abcdefghijklmnopqrstuvwxyz0123456789"
ROUTES = ("/", "/stream.mjpg", "/stats.json", "/snapshot.jpg", "/healthz", "/nope")


def start(**options: object) -> LiveServer:
    live = LiveServer(port=0, **options)  # type: ignore[arg-type]
    live.send_timeout = 1.0
    live.idle_resend = 0.3
    return live


@pytest.fixture
def tight() -> Iterator[LiveServer]:
    """Three connections at most, nobody evicted: the cap itself is what is tested."""
    live = start(max_clients=1, max_connections=3)
    live.evict_after = 3600.0
    live.start()
    yield live
    live.stop()


def request(live: LiveServer, path: str = "/healthz", headers: dict[str, str] | None = None,
            host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One GET with an explicit Host header (http.client would otherwise send its own)."""
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=5)
    try:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host if host is not None else f"127.0.0.1:{live.port}")
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        resp = conn.getresponse()
        status, got = resp.status, {k.lower(): v for k, v in resp.getheaders()}
        body = b"" if path == "/stream.mjpg" and status == 200 else resp.read()
        return status, got, body
    finally:
        conn.close()


def idle_socket(live: LiveServer) -> socket.socket:
    """A client that connects and sends nothing (yet)."""
    return socket.create_connection(("127.0.0.1", live.port), timeout=5)


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes (or resets) the connection within `within` seconds (reads whatever it sent)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def handler_threads() -> int:
    """Threads socketserver started for a connection (counted after accept, so wait for them to appear)."""
    return sum(1 for t in threading.enumerate() if t.is_alive() and "process_request_thread" in t.name)


# ---------------------------------------------------------------- connection cap


def test_connections_over_the_cap_are_refused_at_once_without_a_thread(tight: LiveServer) -> None:
    held = [idle_socket(tight) for _ in range(3)]
    try:
        assert wait_until(lambda: tight.connections == 3 and handler_threads() == 3)
        extra = idle_socket(tight)
        extra.settimeout(5)
        answer = extra.recv(1024)
        assert answer.startswith(b"HTTP/1.0 503") and b"too many connections" in answer
        assert closed_by_server(extra, within=5)
        extra.close()
        assert tight.refused == 1 and tight.connections == 3
        assert handler_threads() == 3  # refused before a thread was started for it
    finally:
        for sock in held:
            sock.close()
    assert wait_until(lambda: tight.connections == 0)
    assert request(tight)[0] == 200  # room again once they are gone


def test_a_stale_header_phase_connection_makes_room_for_a_new_one() -> None:
    live = start(max_clients=1, max_connections=3)
    live.evict_after = 0.0
    live.start()
    held = [idle_socket(live) for _ in range(3)]
    try:
        assert wait_until(lambda: live.connections == 3)
        assert request(live)[0] == 200  # a real request gets through
        assert live.evicted == 1 and live.refused == 0
        assert sum(closed_by_server(sock, within=0.5) for sock in held) == 1  # the oldest idle one was closed
    finally:
        for sock in held:
            sock.close()
        live.stop()


def test_a_viewer_is_never_evicted(tight: LiveServer) -> None:
    """Only connections still sending their headers make room: a stream viewer (the oldest here) stays."""
    tight.evict_after = 0.0
    tight.publish(make_jpeg(), STATS)
    viewer = open_stream(tight)
    held = [idle_socket(tight) for _ in range(2)]
    try:
        assert viewer.status == 200 and wait_until(lambda: tight.connections == 3)
        assert request(tight)[0] == 200
        assert tight.evicted == 1 and tight.stream_clients == 1
        tight.publish(make_jpeg(1), STATS)
        assert read_part(viewer)[:2] == b"\xff\xd8"
    finally:
        viewer.close()
        for sock in held:
            sock.close()


# ---------------------------------------------------------------- header deadline and size


def test_a_byte_a_second_client_is_dropped_after_the_header_timeout() -> None:
    live = start(max_clients=1, max_connections=4)
    live.header_timeout = 1.0
    live.start()
    sock = idle_socket(live)
    try:
        dropped = False
        for byte in b"GET /healthz HTTP/1.0\r\nX-Slow: " + b"a" * 60:  # would take 6 s at this pace
            try:
                sock.send(bytes([byte]))
            except OSError:
                dropped = True
                break
            if closed_by_server(sock, within=0.1):
                dropped = True
                break
        assert dropped, "a client trickling its headers was never dropped"
        assert wait_until(lambda: live.connections == 0)
        assert request(live)[0] == 200
    finally:
        sock.close()
        live.stop()


def test_oversized_headers_are_dropped(tight: LiveServer) -> None:
    sock = idle_socket(tight)
    try:
        try:
            sock.sendall(b"GET / HTTP/1.0\r\nX-Big: " + b"a" * 40_000)
        except OSError:
            pass  # the server closed while we were still sending
        assert closed_by_server(sock, within=5), "oversized headers were never refused"
    finally:
        sock.close()
    assert wait_until(lambda: tight.connections == 0)


# ---------------------------------------------------------------- Host allowlist (loopback)


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LocalHost:{port}", "[::1]:{port}"])
def test_loopback_host_names_are_answered(tight: LiveServer, host: str) -> None:
    assert request(tight, host=host.format(port=tight.port))[0] == 200


@pytest.mark.parametrize(
    "host",
    ["attacker.example", "attacker.example:{port}", "127.0.0.1", "127.0.0.1:1", "localhost:{port}.attacker.example",
     "192.168.1.20:{port}", "", "127.0.0.1:{port}, evil"],
)
def test_other_host_names_get_421_on_every_route(tight: LiveServer, host: str) -> None:
    """DNS rebinding: a page on another site reaching 127.0.0.1 sends its own name as Host."""
    tight.publish(make_jpeg(), STATS)
    for path in ROUTES:
        status, _, body = request(tight, path, host=host.format(port=tight.port))
        assert status == 421, (path, status)
        assert b"\xff\xd8" not in body and b"sneaker" not in body
        assert f"127.0.0.1:{tight.port}".encode() in body


def test_missing_or_repeated_host_is_refused(tight: LiveServer) -> None:
    for extra in (b"", f"Host: 127.0.0.1:{tight.port}\r\nHost: attacker.example\r\n".encode()):
        with socket.create_connection(("127.0.0.1", tight.port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.0\r\n" + extra + b"\r\n")
            answer = b"".join(iter(lambda: sock.recv(65536), b""))
        assert answer.startswith(b"HTTP/1.0 421"), answer[:60]


# ---------------------------------------------------------------- token


@pytest.fixture
def guarded() -> Iterator[LiveServer]:
    live = start(token=TOKEN)
    live.start()
    live.publish(make_jpeg(), STATS)
    yield live
    live.stop()


def test_every_route_needs_the_token(guarded: LiveServer) -> None:
    for path in ROUTES:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Cookie": f"{TOKEN_COOKIE}=nope"},
                        {"Authorization": f"Basic {TOKEN}"}):
            status, got, body = request(guarded, path, headers)
            assert status == 401, (path, headers, status)
            assert got["www-authenticate"].startswith("Bearer") and b"\xff\xd8" not in body
        assert request(guarded, path + "?token=" + TOKEN[:-1])[0] == 401
        assert request(guarded, path + "?token=" + TOKEN + "x")[0] == 401


def test_token_in_the_url_sets_a_strict_httponly_cookie(guarded: LiveServer) -> None:
    status, headers, page = request(guarded, "/?token=" + TOKEN)
    assert status == 200 and b"<img" in page and TOKEN.encode() not in page
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"{TOKEN_COOKIE}={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert headers["referrer-policy"] == "no-referrer"
    for path in ("/stats.json", "/snapshot.jpg", "/healthz", "/stream.mjpg"):
        status, headers, _ = request(guarded, path, {"Cookie": f"other=1; {TOKEN_COOKIE}={TOKEN}"})
        assert status == 200 and "set-cookie" not in headers, path
        assert request(guarded, path, {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert request(guarded, "/nope", {"Authorization": f"Bearer {TOKEN}"})[0] == 404  # the token first, then the route


def test_a_non_loopback_server_makes_its_own_token_and_never_shows_it_in_its_url() -> None:
    live = LiveServer(host="0.0.0.0", port=0)  # not started: tests bind 127.0.0.1 only
    assert live.token_generated and live.token is not None and len(live.token) >= 40
    assert live.token not in live.url and live.url_with_token == f"{live.url}?token={live.token}"
    assert LiveServer(host="0.0.0.0", port=0).token != live.token
    assert LiveServer(host="0.0.0.0", port=0, token=TOKEN).token == TOKEN
    assert LiveServer(host="127.0.0.1", port=0).token is None
    with pytest.raises(ConfigError, match="at least 16"):
        LiveServer(host="0.0.0.0", token="short")


def test_token_file_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = tmp_path / "token"
    good.write_text(TOKEN + "\n")
    good.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="edgecls.camera"):
        assert read_token_file(good) == TOKEN
    assert not caplog.records
    good.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="edgecls.camera"):
        assert read_token_file(good) == TOKEN
    assert "readable by other users" in caplog.text and "chmod 600" in caplog.text and TOKEN not in caplog.text
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    short, odd = tmp_path / "short", tmp_path / "odd"
    short.write_text("x" * (MIN_TOKEN_LENGTH - 1))
    odd.write_text("a b c d e f g h i j k l m n o p")
    cases = {tmp_path / "missing": "does not exist", tmp_path: "is a folder", fifo: "not a regular file",
             short: "at least 16", odd: "outside A-Z"}
    for path, fragment in cases.items():
        with pytest.raises(ConfigError, match=fragment) as info:
            read_token_file(path)
        assert info.value.hint and "a b c" not in str(info.value)
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # never opened (opening a FIFO would block)


@pytest.fixture
def chromium() -> str:
    found = shutil.which("chromium") or (os.path.exists("/usr/bin/chromium") and "/usr/bin/chromium")
    if not found:
        pytest.skip("chromium is not installed: run 'make setup' as root, or 'apt-get install -y chromium'")
    return found


def test_page_opened_with_its_token_streams_in_headless_chromium(chromium: str, tmp_path: Path) -> None:
    """The page's own requests (stream, stats) carry the token through the cookie set by ?token=."""
    live = start(token=TOKEN)
    live.start()
    shot = tmp_path / "live_view.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=800,600",
           "--virtual-time-budget=3000", f"{live.url}?token={TOKEN}"]
    try:
        with Publisher(live, interval=0.05):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        live.stop()
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    magenta = (np.abs(pixels - MAGENTA).max(axis=2) < 30).sum()
    assert magenta > 20_000, f"the stream did not play with the token cookie ({magenta} magenta pixels)"
    label_green = (np.abs(pixels - (127, 214, 127)).max(axis=2) < 30).sum()
    assert label_green > 50, "the stats requests did not carry the token"
