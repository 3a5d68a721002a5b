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

Bounded whatever the clients do:
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
import io
import json
import logging
import math
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from edgecls.camera import access
from edgecls.errors import ConfigError

log = logging.getLogger(__name__)

BOUNDARY = "edgeclsframe"
STATS_KEYS = ("label", "score", "fps", "latency_p50_ms", "latency_p99_ms", "backend", "precision")
TEXT = "text/plain; charset=utf-8"
_CSP = "default-src 'none'; img-src 'self'; connect-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 22\r\nRetry-After: 5\r\n\r\n"
         b"too many connections\r\n")


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

    def newer_than(self, seq: int, timeout: float) -> tuple[int, bytes | None]:
        """Wait up to `timeout` for a frame after `seq`; returns (seq, jpeg), jpeg None when closed."""
        with self.cond:
            self.cond.wait_for(lambda: self.closed or self.seq != seq, timeout)
            return self.seq, None if self.closed else self.jpeg

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


@dataclass
class _Connection:
    """One accepted connection: when it came, whether its request headers are in, who serves it."""

    accepted_at: float
    headers_done: bool = False
    evicted: bool = False
    thread: threading.Thread | None = None


@dataclass(frozen=True)
class Route:
    """What answers one path: `handler(request)` writes the whole answer (request.send or its own writes)."""

    handler: Callable[[Any], None]
    methods: tuple[str, ...] = ("GET",)


class _HeaderPhaseIO(socket.SocketIO):
    """The request's raw reader: until `end_headers()`, every read must finish before one deadline and all
    reads together stay under a byte budget (a client sending a byte a second is dropped)."""

    def __init__(self, sock: socket.socket, timeout: float, max_bytes: int) -> None:
        super().__init__(sock, "rb")
        self.sock = sock
        self.deadline: float | None = time.monotonic() + timeout
        self.budget = max_bytes

    def readinto(self, buffer: Any) -> int | None:
        if self.deadline is None:
            return super().readinto(buffer)
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request headers did not arrive in time")
        if self.budget <= 0:
            raise ConnectionAbortedError("the request headers are too large")
        self.sock.settimeout(left)
        count = super().readinto(memoryview(buffer)[: self.budget])
        self.budget -= count or 0
        return count

    def end_headers(self, timeout: float) -> None:
        self.deadline = None
        self.sock.settimeout(timeout)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() joins the handler threads itself, with a timeout
    request_queue_size = 128  # a burst of connections waits in the kernel's backlog, not in Python
    live: LiveServer

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.live._admit(request):
            _refuse(request)
            return
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self.live._leave(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.live._leave(request)

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002
        # A viewer that vanishes or stalls while sending its request is routine; anything else is a bug worth a traceback.
        level = logging.DEBUG if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)) else logging.WARNING
        log.log(level, "live view: error while serving %s", client_address[0], exc_info=True)


def _refuse(sock: socket.socket) -> None:
    """Answer 503 without waiting (the send buffer of a new socket is empty) and close: no thread, no buffer."""
    try:
        sock.send(_BUSY, socket.MSG_DONTWAIT)
    except OSError:
        pass
    sock.close()


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "edgecls-live"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        live = self.server.live
        super().setup()
        self.rfile.close()  # replaced by a reader with a deadline and a size limit for the request headers
        self._reader = _HeaderPhaseIO(self.connection, live.header_timeout, live.max_header_bytes)
        self.rfile = io.BufferedReader(self._reader)
        self.extra_headers: dict[str, str] = {}
        live._register(self.connection)

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self._reader.end_headers(self.server.live.send_timeout)
        self.server.live._headers_done(self.connection)
        return parsed

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the peer is already gone; nothing left to flush

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("live view %s: " + format, self.address_string(), *args)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # every method, including unknown ones: the route table decides
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self) -> None:
        live = self.server.live
        url = urlsplit(self.path)
        if live.allowed_hosts is not None:
            hosts = self.headers.get_all("Host") or []
            if len(hosts) != 1 or not access.host_allowed(hosts[0], live.allowed_hosts):
                names = ", ".join(sorted(h for h in live.allowed_hosts if h.endswith(f":{live.port}")))
                self.send(421, f"this live view answers only to Host {names}\n".encode(), TEXT)
                return
        if live.token is not None:
            given, from_url = access.request_token(url.query, self.headers)
            if not access.token_matches(given, live.token):
                body = (b"this live view needs its access token: open the URL with ?token= that edgecls printed, "
                        b"or send Authorization: Bearer TOKEN\n")
                self.send(401, body, TEXT, {"WWW-Authenticate": 'Bearer realm="edgecls"'})
                return
            if from_url:
                self.extra_headers["Set-Cookie"] = access.token_cookie(live.token)
        route = live.routes.get(url.path)
        if route is None:
            self.send(404, b"not found\n", TEXT)
        elif self.command not in route.methods:
            allow = ", ".join(route.methods)
            self.send(405, f"method not allowed: {url.path} answers {allow}\n".encode(), TEXT, {"Allow": allow})
        else:
            route.handler(self)

    def send(self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        """A whole answer: status, headers (plus `extra_headers`), body."""
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self._common_headers()
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:  # BrokenPipe, ConnectionReset, send timeout: the viewer is gone
            self.close_connection = True

    def _common_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in self.extra_headers.items():
            self.send_header(key, value)


def _page(request: _Handler) -> None:
    request.send(200, request.server.live.page, "text/html; charset=utf-8", {"Content-Security-Policy": _CSP})


def _stats(request: _Handler) -> None:
    request.send(200, request.server.live._stats_json(), "application/json")


def _snapshot(request: _Handler) -> None:
    jpeg = request.server.live._slot.jpeg
    if jpeg is None:
        request.send(503, b"no frame published yet; try again in a moment\n", TEXT, {"Retry-After": "1"})
    else:
        request.send(200, jpeg, "image/jpeg")


def _healthz(request: _Handler) -> None:
    request.send(200, b"ok\n", TEXT)


def _stream(request: _Handler) -> None:
    live = request.server.live
    if not live._acquire_stream():
        body = f"too many live-view clients (max {live.max_clients}); close another viewer and reload\n"
        request.send(503, body.encode(), TEXT, {"Retry-After": "5"})
        return
    seq = 0
    try:
        request.send_response(200)
        request.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        request._common_headers()
        request.send_header("Pragma", "no-cache")
        request.send_header("Connection", "close")
        request.end_headers()
        request.wfile.write(f"--{BOUNDARY}\r\n".encode())
        while True:
            # Re-send the newest frame when nothing new arrives, so dead viewers are noticed.
            seq, jpeg = live._slot.newer_than(seq, live.idle_resend)
            if jpeg is None:
                if live._slot.closed:
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
        live._release_stream()


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
        self.routes: dict[str, Route] = {"/": Route(_page), "/stream.mjpg": Route(_stream), "/stats.json": Route(_stats),
                                         "/snapshot.jpg": Route(_snapshot), "/healthz": Route(_healthz)}
        self.page = load_page(title)
        self.refused = 0  # connections refused at the cap
        self.evicted = 0  # connections closed while still sending headers, to make room
        self._slot = _FrameSlot()
        self._lock = threading.Lock()
        self._streams = 0
        self._conns: dict[socket.socket, _Connection] = {}
        self._httpd: _HTTPServer | None = None
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
            httpd = _HTTPServer((self.host, self.port), _Handler)
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
        httpd.live = self
        self._httpd = httpd
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
        with self._lock:
            return sum(1 for c in self._conns.values() if not c.evicted)

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
            _shutdown(conn)
        deadline = time.monotonic() + self.join_timeout
        for thread in [self._thread, *(c.thread for c in conns.values())]:
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

    def _admit(self, conn: socket.socket) -> bool:
        """Count a new connection in, closing the oldest one still sending headers when all are taken; False to refuse it."""
        now = time.monotonic()
        with self._lock:
            if self._closed or len(self._conns) >= 2 * self.max_connections:  # evicted ones still winding down count here
                self.refused += 1
                return False
            active = [(c.accepted_at, s) for s, c in self._conns.items() if not c.evicted]
            if len(active) >= self.max_connections:
                stale = [(at, s) for at, s in active if not self._conns[s].headers_done and now - at >= self.evict_after]
                if not stale:
                    self.refused += 1
                    return False
                victim = min(stale, key=lambda item: item[0])[1]
                self._conns[victim].evicted = True
                self.evicted += 1
                _shutdown(victim)  # its thread sees the end of the stream and leaves
            self._conns[conn] = _Connection(accepted_at=now)
            return True

    def _register(self, conn: socket.socket) -> None:
        with self._lock:
            state = self._conns.get(conn)
            if state is not None and not self._closed:
                state.thread = threading.current_thread()
                return
        _shutdown(conn)  # accepted just as stop() ran

    def _headers_done(self, conn: socket.socket) -> None:
        with self._lock:
            state = self._conns.get(conn)
            if state is not None:
                state.headers_done = True

    def _leave(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.pop(conn, None)


def _shutdown(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


__all__ = ["BOUNDARY", "STATS_KEYS", "LiveServer", "Route", "load_page", "parse_address"]
