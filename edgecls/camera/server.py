"""Live view for a headless camera: the newest annotated frame as MJPEG plus live stats, stdlib only.

The camera loop calls `LiveServer.publish(jpeg, stats)` once per annotated frame. A browser opens
`http://HOST:PORT/` and sees the MJPEG stream next to a panel that polls `/stats.json`.

Routes (a table: `add_route` adds more, e.g. a JSON API; every other path is 404, other methods 405):
    /              the page, edgecls/camera/static/live.html (no external assets)
    /stream.mjpg   multipart/x-mixed-replace stream of JPEG parts
    /stats.json    the last published stats plus `frame_age_ms` and `frames`
    /snapshot.jpg  the last published frame (503 until the first publish)
    /healthz       "ok"

Before any route runs (edgecls.camera.access): on a loopback address the `Host:` header must name
loopback with the port (421 otherwise: DNS rebinding); with a token (always on other addresses) the
request must carry it (401 otherwise).

Bounded whatever the clients do (edgecls.camera.httpd enforces the first two):
- connections: at most `max_connections` at once, counted when accepted, before a thread is started.
  When all are taken, the oldest connection still sending its request headers after `evict_after`
  seconds is closed for the newcomer; with none, the newcomer gets a short 503 and is closed at once.
- request headers: `header_timeout` seconds and `max_header_bytes` in total (a client sending a byte a
  second is dropped), then `send_timeout` seconds per send.
- memory: one shared latest-frame slot; every stream client sends the newest frame (frames published
  while a client is busy are skipped, never queued); at most `max_clients` streams.
"""
from __future__ import annotations

import html
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from edgecls.camera import access
from edgecls.camera.httpd import TEXT, ConnectionTable, GuardedServer, Handler, Route
from edgecls.errors import ConfigError

log = logging.getLogger(__name__)

BOUNDARY = "edgeclsframe"
STATS_KEYS = ("label", "score", "fps", "latency_p50_ms", "latency_p99_ms", "backend", "precision")
_CSP = "default-src 'none'; img-src 'self'; connect-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"


def parse_address(text: str) -> tuple[str, int]:
    """Parse "HOST:PORT", ":PORT" or "PORT" (host defaults to 127.0.0.1; port 0 picks a free port)."""
    raw = text.strip() if isinstance(text, str) else ""
    if not raw:
        raise ConfigError(f"empty live-view address {text!r}", "Use HOST:PORT, :PORT or PORT, e.g. 127.0.0.1:8080.")
    if raw.count(":") > 1 or raw.startswith("["):
        raise ConfigError(f"cannot parse live-view address {text!r}",
                          "Use HOST:PORT, :PORT or PORT with an IPv4 address or host name (IPv6 is not supported).")
    host, _, port_text = raw.rpartition(":")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"bad port in live-view address {text!r}",
                          "The port must be a number from 0 to 65535 (0 picks a free port), e.g. 127.0.0.1:8080.")
    if host and not all(part and all(c.isalnum() or c == "-" for c in part) for part in host.split(".")):
        raise ConfigError(f"bad host in live-view address {text!r}",
                          "Use an IPv4 address or a host name, e.g. 127.0.0.1:8080 or 0.0.0.0:8080.")
    return host or "127.0.0.1", int(port_text)


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


def load_page(title: str) -> bytes:
    """The live view page from the package's static folder, with the title escaped and the known stats keys."""
    template = resources.files("edgecls.camera").joinpath("static/live.html").read_text(encoding="utf-8")
    known = json.dumps([*STATS_KEYS, "frame_age_ms", "frames"])
    return template.replace("{{title}}", html.escape(title)).replace("{{known}}", known).encode()


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

    def put_stats(self, stats: dict[str, Any]) -> None:
        with self.cond:
            self.stats = stats

    def newer_than(self, seq: int, timeout: float) -> tuple[int, bytes | None]:
        """Wait up to `timeout` for a frame after `seq`; returns (seq, jpeg), jpeg None when closed."""
        with self.cond:
            self.cond.wait_for(lambda: self.closed or self.seq != seq, timeout)
            return self.seq, None if self.closed else self.jpeg

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class LiveServer:
    """Serve the newest annotated frame (MJPEG) and live stats over HTTP from a daemon thread.

    token: required on every route when given; made fresh (`token_generated`) when the server is bound to a
    non-loopback address without one. Loopback addresses answer only loopback Host headers.
    """

    send_timeout = 5.0  # seconds a viewer may block one send before it is dropped
    header_timeout = 5.0  # seconds a client has for its request line and headers, all together
    max_header_bytes = 16384  # request line and headers together
    evict_after = 1.0  # a connection still sending headers this long may be closed for a new one
    idle_resend = 2.0  # seconds without a new frame before the newest one is sent again
    join_timeout = 2.0  # seconds stop() waits for the server and client threads
    max_stream_fps = 30.0  # JPEGs a second at most while a stream client watches (a browser needs no more)
    snapshot_interval = 1.0  # seconds between JPEGs while nobody watches the stream (snapshot.jpg stays this fresh)

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, max_clients: int = 4, title: str = "edgecls live", *,
                 token: str | None = None, max_connections: int = 32) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"bad live-view port {port!r}", "Use a port from 0 to 65535 (0 picks a free port).")
        if not isinstance(max_clients, int) or max_clients < 1:
            raise ConfigError(f"max_clients must be at least 1, got {max_clients!r}", "Allow at least one live-view client.")
        if not isinstance(max_connections, int) or max_connections < max_clients + 1:
            raise ConfigError(f"max_connections must be more than max_clients ({max_clients}), got {max_connections!r}",
                              "Allow the stream clients plus room for the page and its stats requests.")
        self.host, self.port, self.max_clients, self.title = host, port, max_clients, title
        self.max_connections = max_connections
        self.token_generated = token is None and not access.is_loopback(host)
        if self.token_generated:
            token = access.new_token()
        self.token = access.check_token(token, "the token passed in") if token is not None else None
        self.allowed_hosts: frozenset[str] | None = None  # set by start(), once the port is known
        self.routes: dict[str, Route] = {"/": Route(self._page), "/stream.mjpg": Route(self._stream), "/stats.json": Route(self._stats),
                                         "/snapshot.jpg": Route(self._snapshot), "/healthz": Route(self._healthz)}
        self.page = load_page(title)
        self._slot = _FrameSlot()
        self._lock = threading.Lock()
        self._streams = 0
        self._table = ConnectionTable()  # replaced by the server's own at start()
        self._httpd: GuardedServer | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def add_route(self, path: str, handler: Callable[[Any], None], methods: tuple[str, ...] = ("GET",)) -> None:
        """Answer `path` with `handler(request)`, behind the same Host and token checks as the built-in routes."""
        self.routes[path] = Route(handler, tuple(m.upper() for m in methods))

    def start(self) -> None:
        """Bind (port 0 picks a free port) and serve from a daemon thread."""
        if self._httpd is not None or self._closed:
            raise RuntimeError("LiveServer.start() can only be called once")
        try:
            httpd = GuardedServer((self.host, self.port), self)
        except socket.gaierror as exc:
            raise ConfigError(f"cannot resolve live-view host {self.host!r}", "Use an IP address such as 127.0.0.1 or 0.0.0.0.") from exc
        except PermissionError as exc:
            raise ConfigError(f"no permission to bind the live view to {self.host}:{self.port}",
                              "Use a port above 1023, e.g. 8080.") from exc
        except OSError as exc:
            raise ConfigError(
                f"cannot bind the live view to {self.host}:{self.port}: {exc.strerror or exc}",
                "Choose another port (port 0 picks a free one) or stop the program using it.",
            ) from exc
        self._httpd, self._table = httpd, httpd.table
        self.port = httpd.server_address[1]
        if access.is_loopback(self.host):
            self.allowed_hosts = access.allowed_hosts(self.host, self.port)
        else:
            log.warning("live view on %s is visible to anyone on the network (its token is required); "
                        "bind 127.0.0.1 to keep it local", self.url)
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="edgecls-live", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """http://host:port/ (the real port once started); never carries the token."""
        return f"http://{self.host}:{self.port}/"

    @property
    def url_with_token(self) -> str:
        """The URL to open in a browser: with ?token= when the server has one."""
        return f"{self.url}?token={self.token}" if self.token else self.url

    @property
    def stream_clients(self) -> int:
        """Stream viewers connected now."""
        return self._streams

    @property
    def connections(self) -> int:
        """Connections being served now (not counting ones closed to make room that are still winding down)."""
        return self._table.active

    @property
    def refused(self) -> int:
        """Connections refused at the cap so far."""
        return self._table.refused

    @property
    def evicted(self) -> int:
        """Connections closed while still sending their headers, to make room for a new one."""
        return self._table.evicted

    @property
    def buffered_bytes(self) -> int:
        """Frame bytes the server holds: only the newest frame, however many or slow the viewers."""
        jpeg = self._slot.jpeg
        return 0 if jpeg is None else len(jpeg)

    def wants_frame(self) -> bool:
        """Whether a new JPEG is worth encoding now: at most max_stream_fps while the stream is watched, else one per
        snapshot_interval. Cheap, for the camera's output thread to skip the encoding it would throw away."""
        if self._closed:
            return False
        since = time.monotonic() - self._slot.published_at
        return since >= (1.0 / self.max_stream_fps if self._streams else self.snapshot_interval)

    def publish_stats(self, stats: dict) -> None:
        """Make `stats` the newest live stats without a new frame (non-blocking)."""
        self._slot.put_stats(_jsonable(dict(stats)))

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
        self._slot.close()
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()  # serve_forever polls every 0.1 s
        httpd.server_close()
        handlers = httpd.table.close_all()  # unblocks handlers stuck in send() or recv() on stalled viewers
        deadline = time.monotonic() + self.join_timeout
        for thread in [self._thread, *handlers]:
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ routes

    def _page(self, request: Handler) -> None:
        request.send(200, self.page, "text/html; charset=utf-8", {"Content-Security-Policy": _CSP})

    def _stats(self, request: Handler) -> None:
        request.send(200, self._stats_json(), "application/json")

    def _snapshot(self, request: Handler) -> None:
        jpeg = self._slot.jpeg
        if jpeg is None:
            request.send(503, b"no frame published yet; try again in a moment\n", TEXT, {"Retry-After": "1"})
        else:
            request.send(200, jpeg, "image/jpeg")

    def _healthz(self, request: Handler) -> None:
        request.send(200, b"ok\n", TEXT)

    def _stream(self, request: Handler) -> None:
        if not self._acquire_stream():
            body = f"too many live-view clients (max {self.max_clients}); close another viewer and reload\n"
            request.send(503, body.encode(), TEXT, {"Retry-After": "5"})
            return
        seq = 0
        try:
            request.send_response(200)
            request.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            request.common_headers()
            request.send_header("Pragma", "no-cache")
            request.send_header("Connection", "close")
            request.end_headers()
            request.wfile.write(f"--{BOUNDARY}\r\n".encode())
            while True:
                # Re-send the newest frame when nothing new arrives, so dead viewers are noticed.
                seq, jpeg = self._slot.newer_than(seq, self.idle_resend)
                if jpeg is None:
                    if self._slot.closed:
                        break
                    continue
                # The boundary goes right after each part, so browsers show the part without waiting
                # for the next one. Header, frame and trailer are written separately: no copy of the frame.
                request.wfile.write(f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode())
                request.wfile.write(jpeg)
                request.wfile.write(f"\r\n--{BOUNDARY}\r\n".encode())
        except OSError as exc:  # BrokenPipe, ConnectionReset, TimeoutError (stalled viewer), stop()
            log.debug("live view: stream client %s dropped (%s)", request.address_string(), type(exc).__name__)
        finally:
            request.close_connection = True
            self._release_stream()

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


__all__ = ["BOUNDARY", "STATS_KEYS", "LiveServer", "Route", "load_page", "parse_address"]
