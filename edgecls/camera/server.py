"""Live view for a headless camera: the newest annotated frame as MJPEG plus live stats, stdlib only.

The camera loop calls `LiveServer.publish(jpeg, stats)` once per annotated frame. A browser opens
`http://HOST:PORT/` and sees the MJPEG stream next to a panel that polls `/stats.json`.

Routes (GET only; everything else is 404, other methods 405; nothing is read from disk):
    /              self-contained HTML page (no external assets)
    /stream.mjpg   multipart/x-mixed-replace stream of JPEG parts
    /stats.json    the last published stats plus `frame_age_ms` and `frames`
    /snapshot.jpg  the last published frame (503 until the first publish)
    /healthz       "ok"

Memory stays bounded with slow viewers: there is one shared latest-frame slot and every stream
client always sends the newest frame (frames published while a client is busy are skipped, never
queued). A client that cannot take a part within `send_timeout` seconds is dropped.

Stats keys the page knows (others are listed under them): label, score, fps, latency_p50_ms,
latency_p99_ms, backend, precision.
"""
from __future__ import annotations

import html
import ipaddress
import json
import logging
import math
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from edgecls.errors import ConfigError

log = logging.getLogger(__name__)

BOUNDARY = "edgeclsframe"
STATS_KEYS = ("label", "score", "fps", "latency_p50_ms", "latency_p99_ms", "backend", "precision")


def parse_address(text: str) -> tuple[str, int]:
    """Parse "HOST:PORT", ":PORT" or "PORT" (host defaults to 127.0.0.1; port 0 picks a free port)."""
    raw = text.strip() if isinstance(text, str) else ""
    if not raw:
        raise ConfigError(f"empty live-view address {text!r}", "Use HOST:PORT, :PORT or PORT, e.g. 127.0.0.1:8080.")
    if raw.count(":") > 1 or raw.startswith("["):
        raise ConfigError(f"cannot parse live-view address {text!r}", "Use HOST:PORT, :PORT or PORT with an IPv4 address or host name (IPv6 is not supported).")
    host, _, port_text = raw.rpartition(":")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"bad port in live-view address {text!r}", "The port must be a number from 0 to 65535 (0 picks a free port), e.g. 127.0.0.1:8080.")
    if host and not all(part and all(c.isalnum() or c == "-" for c in part) for part in host.split(".")):
        raise ConfigError(f"bad host in live-view address {text!r}", "Use an IPv4 address or a host name, e.g. 127.0.0.1:8080 or 0.0.0.0:8080.")
    return host or "127.0.0.1", int(port_text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _jsonable(value: Any) -> Any:
    """Stats as strict JSON: numpy scalars to Python, NaN/inf to null, unknown objects to str."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


class _FrameSlot:
    """The single newest frame, its sequence number and a condition that wakes the streams."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.jpeg: bytes | None = None
        self.stats: dict[str, Any] = {}
        self.seq = 0
        self.published_at = 0.0
        self.closed = False

    def put(self, jpeg: bytes, stats: dict[str, Any]) -> None:
        with self.cond:
            self.jpeg, self.stats = jpeg, stats
            self.seq += 1
            self.published_at = time.monotonic()
            self.cond.notify_all()

    def newer_than(self, seq: int, timeout: float) -> tuple[int, bytes | None]:
        """Wait up to `timeout` for a frame after `seq`; returns (seq, jpeg), jpeg None when closed."""
        with self.cond:
            self.cond.wait_for(lambda: self.closed or self.seq != seq, timeout)
            return self.seq, None if self.closed else self.jpeg

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() joins the handler threads itself, with a timeout
    live: LiveServer

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002
        # A viewer that vanishes while sending its request is routine; anything else is a bug worth a traceback.
        level = logging.DEBUG if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)) else logging.WARNING
        log.log(level, "live view: error while serving %s", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "edgecls-live"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        self.timeout = self.server.live.send_timeout  # read and send timeout; a stalled peer raises TimeoutError
        super().setup()
        self.server.live._register(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the peer is already gone; nothing left to flush
        finally:
            self.server.live._unregister(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("live view %s: " + format, self.address_string(), *args)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # every method except GET, including unknown ones
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        self._send(405, b"method not allowed: this server only answers GET\n", "text/plain; charset=utf-8", {"Allow": "GET"})

    def do_GET(self) -> None:  # noqa: N802
        live = self.server.live
        path = urlsplit(self.path).path
        if path == "/":
            self._send(200, live._page, "text/html; charset=utf-8", {"Content-Security-Policy": _CSP})
        elif path == "/stream.mjpg":
            self._stream()
        elif path == "/stats.json":
            self._send(200, live._stats_json(), "application/json")
        elif path == "/snapshot.jpg":
            jpeg = live._slot.jpeg
            if jpeg is None:
                self._send(503, b"no frame published yet; try again in a moment\n", "text/plain; charset=utf-8", {"Retry-After": "1"})
            else:
                self._send(200, jpeg, "image/jpeg")
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:  # BrokenPipe, ConnectionReset, send timeout: the viewer is gone
            self.close_connection = True

    def _stream(self) -> None:
        live = self.server.live
        if not live._acquire_stream():
            body = f"too many live-view clients (max {live.max_clients}); close another viewer and reload\n"
            self._send(503, body.encode(), "text/plain; charset=utf-8", {"Retry-After": "5"})
            return
        seq = 0
        try:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Pragma", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(f"--{BOUNDARY}\r\n".encode())
            while True:
                # Re-send the newest frame when nothing new arrives, so dead viewers are noticed.
                seq, jpeg = live._slot.newer_than(seq, live.idle_resend)
                if jpeg is None:
                    if live._slot.closed:
                        break
                    continue
                # The boundary goes right after each part, so browsers show the part without waiting
                # for the next one. Header, frame and trailer are written separately: no copy of the frame.
                self.wfile.write(f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode())
                self.wfile.write(jpeg)
                self.wfile.write(f"\r\n--{BOUNDARY}\r\n".encode())
        except OSError as exc:  # BrokenPipe, ConnectionReset, TimeoutError (stalled viewer), stop()
            log.debug("live view: stream client %s dropped (%s)", self.address_string(), type(exc).__name__)
        finally:
            self.close_connection = True
            live._release_stream()


_CSP = "default-src 'none'; img-src 'self'; connect-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ margin: 0; font: 15px/1.4 system-ui, sans-serif; background: #111; color: #eee; }}
header {{ padding: 8px 14px; background: #222; font-weight: 600; }}
main {{ display: flex; flex-wrap: wrap; gap: 14px; padding: 14px; align-items: flex-start; }}
#live {{ max-width: 100%; background: #000; min-width: 320px; min-height: 240px; }}
#panel {{ min-width: 220px; background: #1b1b1b; padding: 10px 14px; border-radius: 6px; }}
#label {{ font-size: 24px; font-weight: 700; color: #7fd67f; word-break: break-word; }}
table {{ border-collapse: collapse; }} td {{ padding: 2px 10px 2px 0; }} td:first-child {{ color: #999; }}
#state {{ color: #e88; }}
</style></head>
<body><header>{title}</header>
<main>
<img id="live" src="/stream.mjpg" alt="live camera stream">
<div id="panel">
<div id="label">&hellip;</div>
<table>
<tr><td>score</td><td id="score">-</td></tr>
<tr><td>FPS</td><td id="fps">-</td></tr>
<tr><td>latency p50</td><td id="p50">-</td></tr>
<tr><td>latency p99</td><td id="p99">-</td></tr>
<tr><td>frame age</td><td id="age">-</td></tr>
<tr><td>backend</td><td id="backend">-</td></tr>
<tbody id="extra"></tbody>
</table>
<div id="state"></div>
</div>
</main>
<script>
"use strict";
const KNOWN = {known};
const $ = (id) => document.getElementById(id);
const num = (v, digits, unit) => (typeof v === "number" ? v.toFixed(digits) + unit : "-");
const img = $("live");
img.onerror = () => {{  // stream refused (too many viewers) or lost: fall back to snapshots
  setTimeout(() => {{ img.src = "/snapshot.jpg?t=" + Date.now(); }}, 1000);
}};
async function poll() {{
  try {{
    const r = await fetch("/stats.json", {{cache: "no-store"}});
    const s = await r.json();
    $("label").textContent = s.label ?? "-";
    $("score").textContent = num(s.score, 3, "");
    $("fps").textContent = num(s.fps, 1, "");
    $("p50").textContent = num(s.latency_p50_ms, 1, " ms");
    $("p99").textContent = num(s.latency_p99_ms, 1, " ms");
    $("age").textContent = num(s.frame_age_ms, 0, " ms");
    $("backend").textContent = [s.backend, s.precision].filter((x) => x != null).join(" / ") || "-";
    const extra = $("extra");
    extra.replaceChildren();
    for (const [k, v] of Object.entries(s)) {{
      if (KNOWN.includes(k) || (v !== null && typeof v === "object")) continue;
      const row = extra.insertRow();
      row.insertCell().textContent = k;
      row.insertCell().textContent = String(v);
    }}
    $("state").textContent = "";
  }} catch (e) {{
    $("state").textContent = "stats unavailable";
  }}
}}
poll();
setInterval(poll, 500);
</script>
</body></html>
"""


class LiveServer:
    """Serve the newest annotated frame (MJPEG) and live stats over HTTP from a daemon thread."""

    send_timeout = 5.0  # seconds a viewer may block a send (or a request read) before it is dropped
    idle_resend = 2.0  # seconds without a new frame before the newest one is sent again
    join_timeout = 2.0  # seconds stop() waits for the server and client threads

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, max_clients: int = 4, title: str = "edgecls live") -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"bad live-view port {port!r}", "Use a port from 0 to 65535 (0 picks a free port).")
        if not isinstance(max_clients, int) or max_clients < 1:
            raise ConfigError(f"max_clients must be at least 1, got {max_clients!r}", "Allow at least one live-view client.")
        self.host, self.port, self.max_clients, self.title = host, port, max_clients, title
        self._slot = _FrameSlot()
        self._lock = threading.Lock()
        self._streams = 0
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        known = json.dumps([*STATS_KEYS, "frame_age_ms", "frames"])
        self._page = _PAGE.format(title=html.escape(title), known=known).encode()

    def start(self) -> None:
        """Bind (port 0 picks a free port) and serve from a daemon thread."""
        if self._httpd is not None or self._closed:
            raise RuntimeError("LiveServer.start() can only be called once")
        try:
            httpd = _HTTPServer((self.host, self.port), _Handler)
        except socket.gaierror as exc:
            raise ConfigError(f"cannot resolve live-view host {self.host!r}", "Use an IP address such as 127.0.0.1 or 0.0.0.0.") from exc
        except PermissionError as exc:
            raise ConfigError(f"no permission to bind the live view to {self.host}:{self.port}", "Use a port above 1023, e.g. 8080.") from exc
        except OSError as exc:
            raise ConfigError(
                f"cannot bind the live view to {self.host}:{self.port}: {exc.strerror or exc}",
                "Choose another port (port 0 picks a free one) or stop the program using it.",
            ) from exc
        httpd.live = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        if not _is_loopback(self.host):
            log.warning("live view on %s is visible to anyone on the network; bind 127.0.0.1 to keep it local", self.url)
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="edgecls-live", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """http://host:port/ (the real port once started)."""
        return f"http://{self.host}:{self.port}/"

    @property
    def stream_clients(self) -> int:
        """Stream viewers connected now."""
        return self._streams

    @property
    def buffered_bytes(self) -> int:
        """Frame bytes the server holds: only the newest frame, however many or slow the viewers."""
        jpeg = self._slot.jpeg
        return 0 if jpeg is None else len(jpeg)

    def publish(self, jpeg: bytes, stats: dict) -> None:
        """Make `jpeg` the newest frame and `stats` the newest live stats (non-blocking)."""
        if not isinstance(jpeg, bytes):
            jpeg = bytes(jpeg)  # a private copy: the caller may reuse its buffer
        if jpeg[:2] != b"\xff\xd8":
            raise ValueError(f"publish() expects JPEG bytes (starting with FF D8), got {jpeg[:8]!r} ({len(jpeg)} bytes)")
        self._slot.put(jpeg, _jsonable(dict(stats)))

    def stop(self) -> None:
        """Close all streams and the socket; returns within about `join_timeout` even with viewers."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = dict(self._conns)
        self._slot.close()
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()  # serve_forever polls every 0.1 s
        httpd.server_close()
        for conn in conns:  # unblock handlers stuck in send() or recv() on stalled viewers
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + self.join_timeout
        for thread in [self._thread, *conns.values()]:
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _stats_json(self) -> bytes:
        slot = self._slot
        with slot.cond:
            stats, seq, published_at = slot.stats, slot.seq, slot.published_at
        extra = {"frame_age_ms": round((time.monotonic() - published_at) * 1000.0, 1) if seq else None, "frames": seq}
        return json.dumps({**stats, **extra}).encode()

    def _acquire_stream(self) -> bool:
        with self._lock:
            if self._streams >= self.max_clients or self._closed:
                return False
            self._streams += 1
            return True

    def _release_stream(self) -> None:
        with self._lock:
            self._streams -= 1

    def _register(self, conn: socket.socket) -> None:
        with self._lock:
            if not self._closed:
                self._conns[conn] = threading.current_thread()
                return
        try:
            conn.shutdown(socket.SHUT_RDWR)  # accepted just as stop() ran
        except OSError:
            pass

    def _unregister(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.pop(conn, None)
