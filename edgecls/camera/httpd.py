"""A threaded HTTP/1.0 server in which every resource a client can take is bounded (stdlib only).

It serves the live view (edgecls.camera.server) and is shaped for more routes (a JSON API): an `App`
owns a route table, the limits and the access rules; this module enforces them for every request.

- Connections: `ConnectionTable.admit` counts a connection when it is accepted, before a thread is
  started for it. At `max_connections`, the oldest connection still sending its request headers after
  `evict_after` seconds is closed to make room; with none, the newcomer gets a short 503 without
  waiting and is closed. Evicted connections still winding down count towards a hard 2x limit.
- Request headers: one deadline (`header_timeout` seconds for the request line and every header,
  however slowly they trickle in) and one size budget (`max_header_bytes`); then `send_timeout`
  seconds per send.
- Access (edgecls.camera.access), before any route runs: the `Host:` allowlist when the app has one
  (421), the token when the app has one (401; `?token=` answers set the cookie).
- Routes: a path maps to a `Route` (handler and methods); other paths 404, other methods 405.
"""
from __future__ import annotations

import io
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from edgecls.camera import access

log = logging.getLogger("edgecls.camera.server")

TEXT = "text/plain; charset=utf-8"
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 22\r\nRetry-After: 5\r\n\r\n"
         b"too many connections\r\n")


@dataclass(frozen=True)
class Route:
    """What answers one path: `handler(request)` writes the whole answer (`request.send` or its own writes)."""

    handler: Callable[[Any], None]
    methods: tuple[str, ...] = ("GET",)


class App(Protocol):
    """What the server asks of its owner (edgecls.camera.server.LiveServer)."""

    port: int
    routes: dict[str, Route]
    allowed_hosts: frozenset[str] | None  # None: any Host
    token: str | None  # None: no token needed
    max_connections: int
    evict_after: float
    header_timeout: float
    max_header_bytes: int
    send_timeout: float


@dataclass
class _Connection:
    accepted_at: float
    headers_done: bool = False
    evicted: bool = False
    thread: threading.Thread | None = None


class ConnectionTable:
    """The connections being served: admission at accept time, eviction, and closing them all at stop()."""

    def __init__(self) -> None:
        self.refused = 0  # connections refused at the cap
        self.evicted = 0  # connections closed while still sending headers, to make room
        self.closed = False
        self._lock = threading.Lock()
        self._conns: dict[socket.socket, _Connection] = {}

    @property
    def active(self) -> int:
        with self._lock:
            return sum(1 for c in self._conns.values() if not c.evicted)

    def admit(self, conn: socket.socket, max_connections: int, evict_after: float) -> bool:
        """Count `conn` in, closing the oldest connection still sending headers when all are taken; False to refuse it."""
        now = time.monotonic()
        with self._lock:
            if self.closed or len(self._conns) >= 2 * max_connections:
                self.refused += 1
                return False
            active = [(c.accepted_at, s) for s, c in self._conns.items() if not c.evicted]
            if len(active) >= max_connections:
                stale = [(at, s) for at, s in active if not self._conns[s].headers_done and now - at >= evict_after]
                if not stale:
                    self.refused += 1
                    return False
                victim = min(stale, key=lambda item: item[0])[1]
                self._conns[victim].evicted = True
                self.evicted += 1
                shutdown(victim)  # its thread sees the end of the stream and leaves
            self._conns[conn] = _Connection(accepted_at=now)
            return True

    def register(self, conn: socket.socket) -> None:
        """Called on the connection's own thread once it runs."""
        with self._lock:
            state = self._conns.get(conn)
            if state is not None and not self.closed:
                state.thread = threading.current_thread()
                return
        shutdown(conn)  # accepted just as close_all() ran

    def headers_done(self, conn: socket.socket) -> None:
        with self._lock:
            state = self._conns.get(conn)
            if state is not None:
                state.headers_done = True

    def leave(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.pop(conn, None)

    def close_all(self) -> list[threading.Thread]:
        """Refuse new connections, unblock every handler stuck in recv() or send(); their threads, to join."""
        with self._lock:
            self.closed = True
            conns = dict(self._conns)
        for conn in conns:
            shutdown(conn)
        return [c.thread for c in conns.values() if c.thread is not None]


def shutdown(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


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


class GuardedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that admits connections through a ConnectionTable before starting their thread."""

    daemon_threads = True
    block_on_close = False  # the owner joins the handler threads itself, with a timeout
    request_queue_size = 128  # a burst of connections waits in the kernel's backlog, not in Python

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self.table = ConnectionTable()
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.table.admit(request, self.app.max_connections, self.app.evict_after):
            _refuse(request)
            return
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self.table.leave(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.table.leave(request)

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002
        # A client that vanishes or stalls while sending its request is routine; anything else is a bug worth a traceback.
        level = logging.DEBUG if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)) else logging.WARNING
        log.log(level, "live view: error while serving %s", client_address[0], exc_info=True)


def _refuse(sock: socket.socket) -> None:
    """Answer 503 without waiting (the send buffer of a new socket is empty) and close: no thread, no buffer."""
    try:
        sock.send(_BUSY, socket.MSG_DONTWAIT)
    except OSError:
        pass
    sock.close()


class Handler(BaseHTTPRequestHandler):
    """One connection: its request headers under the limits, the access checks, then the route."""

    server: GuardedServer
    server_version = "edgecls-live"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        app = self.server.app
        super().setup()
        self.rfile.close()  # replaced by a reader with a deadline and a size limit for the request headers
        self._reader = _HeaderPhaseIO(self.connection, app.header_timeout, app.max_header_bytes)
        self.rfile = io.BufferedReader(self._reader)
        self.extra_headers: dict[str, str] = {}
        self.server.table.register(self.connection)

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self._reader.end_headers(self.server.app.send_timeout)
        self.server.table.headers_done(self.connection)
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
        app = self.server.app
        url = urlsplit(self.path)
        if app.allowed_hosts is not None:
            hosts = self.headers.get_all("Host") or []
            if len(hosts) != 1 or not access.host_allowed(hosts[0], app.allowed_hosts):
                names = ", ".join(sorted(h for h in app.allowed_hosts if h.endswith(f":{app.port}")))
                self.send(421, f"this live view answers only to Host {names}\n".encode(), TEXT)
                return
        if app.token is not None:
            given, from_url = access.request_token(url.query, self.headers)
            if not access.token_matches(given, app.token):
                body = (b"this live view needs its access token: open the URL with ?token= that edgecls printed, "
                        b"or send Authorization: Bearer TOKEN\n")
                self.send(401, body, TEXT, {"WWW-Authenticate": 'Bearer realm="edgecls"'})
                return
            if from_url:
                self.extra_headers["Set-Cookie"] = access.token_cookie(app.token)
        route = app.routes.get(url.path)
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
            self.common_headers()
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:  # BrokenPipe, ConnectionReset, send timeout: the client is gone
            self.close_connection = True

    def common_headers(self) -> None:
        """Headers on every answer (for routes that write their own, like a stream)."""
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in self.extra_headers.items():
            self.send_header(key, value)


__all__ = ["TEXT", "App", "ConnectionTable", "GuardedServer", "Handler", "Route", "shutdown"]
