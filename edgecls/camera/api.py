"""The HTTP JSON API: `GET /api/info` and `POST /api/classify`, on the live view (`edgecls camera --serve`)
and on its own (`edgecls serve MODEL`, no camera). Stdlib only; routes of edgecls.camera.server.LiveServer,
so the live view's connection cap, header deadline, Host allowlist and token rules apply before they run.

    GET  /api/info       model, labels, input contract, latency of classify requests (and the camera's, if any)
    POST /api/classify   an image as the body (Content-Type image/* or application/octet-stream) or as the
                         first file part of multipart/form-data -> {"label", "score", "uncertain", "top_k", ...}
                         `?top_k=N` overrides the default number of classes.

Bounded: a body above `max_body` bytes is refused with 413 before it is read (a missing Content-Length
with 411); the body must arrive within `body_timeout` seconds (408); at most `max_inflight` classify
requests are read and run at once (503 with Retry-After otherwise). A POST whose Origin is another site
is refused (403): the Host check stops DNS rebinding, this stops a page elsewhere from making the
browser post to a camera on localhost. The model is shared with the camera loop under one lock
(`SharedBackend`): a request delays at most one frame by one inference.

Errors are JSON `{"error": "...", "fix": "..."}` with the status code.
"""
from __future__ import annotations

import html
import json
import logging
import threading
import time
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from edgecls import __version__
from edgecls.camera.decision import Postprocessor
from edgecls.camera.stats import Series
from edgecls.errors import ConfigError, ImageError
from edgecls.preprocess import decode_image, prepare, prepare_pixels

log = logging.getLogger("edgecls.camera.api")

JSON = "application/json"
PAGE_CSP = "default-src 'none'; img-src 'self' blob:; connect-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"
MAX_BODY_DEFAULT = 8 * 1024 * 1024
DRAIN_BYTES = 16 * 1024 * 1024  # after a 413, read and discard at most this much so the client sees the answer
_CHUNK = 65536
_IMAGE_TYPES = ("image/", "application/octet-stream")


class SharedBackend:
    """A Backend whose `run` holds a lock: the camera loop and the API threads take turns on one model."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            return self._backend.run(batch)

    def __getattr__(self, name: str) -> Any:  # meta, name, precision_ran, threads, path, close, ...
        return getattr(self._backend, name)


class ClassifyApi:
    """The two routes over one backend (see the module docstring)."""

    def __init__(self, backend: Any, top_k: int = 3, threshold: float = 0.0, max_body: int = MAX_BODY_DEFAULT,
                 max_inflight: int = 2, body_timeout: float = 30.0) -> None:
        if max_body < 1024:
            raise ConfigError(f"--max-body {max_body} bytes is too small for any image", "Use e.g. 8000000 (8 MB)")
        self.backend = backend if isinstance(backend, SharedBackend) else SharedBackend(backend)
        self.meta = backend.meta
        Postprocessor(self.meta.labels, top_k, 0.0, threshold)  # the same checks as the camera's options
        self.top_k, self.threshold = top_k, threshold
        self.max_body, self.body_timeout = max_body, body_timeout
        self.camera_stats: Callable[[], dict[str, Any]] | None = None  # the camera loop's live numbers, when there is one
        self.latency = {name: Series(capacity=10_000) for name in ("decode", "preprocess", "inference", "total")}
        self.counts = {"classified": 0, "refused": 0}
        self._inflight = threading.BoundedSemaphore(max_inflight)
        self._stats_lock = threading.Lock()

    def mount(self, server: Any) -> ClassifyApi:
        """Add the routes to a LiveServer (before or after it started); returns self."""
        server.add_route("/api/info", self.info, ("GET", "HEAD"))
        server.add_route("/api/classify", self.classify, ("POST",))
        return self

    # ---------------------------------------------------------------- GET /api/info

    def info(self, request: Any) -> None:
        request.send(200, json.dumps(self.describe()).encode(), JSON)

    def describe(self) -> dict[str, Any]:
        meta, backend = self.meta, self.backend
        height, width = meta.input_size
        normalization: Any = "inside the model" if meta.normalization_baked_in else {"mean": list(meta.mean), "std": list(meta.std)}
        with self._stats_lock:
            latency = {name: series.describe() for name, series in self.latency.items()}
            counts = dict(self.counts)
        return {
            "edgecls": __version__,
            "model": {"file": backend.path.name, "architecture": meta.architecture, "format": meta.format, "precision": meta.precision,
                      "backend": backend.name, "precision_ran": backend.precision_ran, "device": backend.device,
                      "threads": backend.threads},
            "labels": list(meta.labels),
            "input": {"height": height, "width": width, "channels": 3, "pixels": "uint8 0..255", "color_order": meta.color_order,
                      "crop_fraction": meta.crop_fraction, "interpolation": meta.interpolation, "normalization": normalization,
                      "output": meta.output},
            "classify": {"method": "POST", "path": "/api/classify", "max_body_bytes": self.max_body, "top_k": self.top_k,
                         "threshold": self.threshold, "content_types": ["image/*", "application/octet-stream", "multipart/form-data"],
                         **counts},
            "latency_ms": latency,
            "camera": self.camera_stats() if self.camera_stats is not None else None,
        }

    # ---------------------------------------------------------------- POST /api/classify

    def classify(self, request: Any) -> None:
        if not self._same_origin(request):
            self._error(request, 403, "this API answers only pages of its own origin", "Call it from the same host, or without a browser")
            return
        if not getattr(self.backend, "classifies_uploads", True):  # the IMX500: the network runs on the camera's sensor
            self._error(request, 501, f"the network {self.backend.path.name} runs on the camera's sensor: it classifies only what the "
                        "camera sees", "Watch the live view or /api/info; classify images with another export of the model")
            return
        if not self._inflight.acquire(blocking=False):
            self._error(request, 503, "too many classify requests at once", "Retry in a moment", {"Retry-After": "1"})
            return
        try:
            self._classify(request)
        finally:
            self._inflight.release()

    def _classify(self, request: Any) -> None:
        try:
            top_k = self._top_k(request.path)
        except ValueError as exc:
            self._error(request, 400, str(exc), "Use e.g. ?top_k=3")
            return
        length = request.headers.get("Content-Length")
        if request.headers.get("Transfer-Encoding") or length is None or not length.strip().isdigit():
            self._error(request, 411, "a Content-Length header is needed", "Send the image with its length (no chunked encoding)")
            return
        size = int(length)
        if size > self.max_body:
            self._error(request, 413, f"the body is {size:,} bytes, over the {self.max_body:,} byte limit",
                        "Send a smaller image (downscale it; the model needs only "
                        f"{self.meta.input_size[1]}x{self.meta.input_size[0]} pixels)")
            _drain(request, size)
            return
        started = time.perf_counter()
        body = _read_body(request, size, self.body_timeout)
        if body is None:
            self._error(request, 408, f"the body did not arrive within {self.body_timeout:g} s", "Send the whole image at once")
            return
        try:
            data, name = self._image_bytes(request.headers.get("Content-Type", ""), body)
            rgb = decode_image(data, name)
        except (ImageError, ConfigError) as exc:
            code = 415 if isinstance(exc, ConfigError) else 400
            self._error(request, code, exc.message, exc.hint or "")
            return
        decoded = time.perf_counter()
        pixels = prepare_pixels(rgb, self.meta) if self.meta.normalization_baked_in else prepare(rgb, self.meta)
        prepared = time.perf_counter()
        scores = self.backend.run(pixels[None])[0]
        ran = time.perf_counter()
        decision = Postprocessor(self.meta.labels, top_k, 0.0, self.threshold)(scores)
        timings = {"decode": (decoded - started) * 1e3, "preprocess": (prepared - decoded) * 1e3, "inference": (ran - prepared) * 1e3,
                   "total": (time.perf_counter() - started) * 1e3}
        with self._stats_lock:
            for key, value in timings.items():
                self.latency[key].add(value)
            self.counts["classified"] += 1
        answer = {"label": decision.label, "score": round(float(decision.score), 6), "uncertain": decision.uncertain,
                  "top_k": [{"label": c.label, "id": int(c.id), "score": round(float(c.score), 6)} for c in decision.top],
                  "image": {"width": int(rgb.shape[1]), "height": int(rgb.shape[0])},
                  "model": self.backend.path.name, "latency_ms": {k: round(v, 3) for k, v in timings.items()}}
        request.send(200, json.dumps(answer).encode(), JSON)

    def _image_bytes(self, content_type: str, body: bytes) -> tuple[bytes, str]:
        kind = content_type.split(";")[0].strip().lower()
        if kind.startswith(_IMAGE_TYPES) or not kind:
            return body, "the posted image"
        if kind == "multipart/form-data":
            message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
            for part in message.iter_parts() if message.is_multipart() else ():
                if part.get_filename() is not None or part.get_param("name", header="content-disposition") in ("image", "file"):
                    payload = part.get_payload(decode=True)
                    return (payload if isinstance(payload, bytes) else b""), f"the uploaded file {part.get_filename() or 'image'!r}"
            raise ConfigError("the multipart/form-data body holds no file part", "Send the image as a file field named 'image'")
        raise ConfigError(f"Content-Type {kind!r} is not an image", "Send image/jpeg, image/png, ... or multipart/form-data")

    def _top_k(self, path: str) -> int:
        values = parse_qs(urlsplit(path).query, max_num_fields=20).get("top_k")
        if not values:
            return self.top_k
        if not values[0].isdigit() or not 1 <= int(values[0]) <= len(self.meta.labels):
            raise ValueError(f"top_k {values[0]!r} must be a number from 1 to {len(self.meta.labels)}")
        return int(values[0])

    def _same_origin(self, request: Any) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser's cross-site request (browsers send Origin on every POST)
        host = request.headers.get("Host", "")
        return origin.lower() in (f"http://{host}".lower(), f"https://{host}".lower())

    def _error(self, request: Any, code: int, message: str, fix: str, headers: dict[str, str] | None = None) -> None:
        with self._stats_lock:
            self.counts["refused"] += 1
        request.send(code, json.dumps({"error": message, "fix": fix}).encode(), JSON, headers)
        if code in (408, 411, 413):
            request.close_connection = True


def serve_model(model: str | Path, address: str = "127.0.0.1:8080", *, device: str = "cpu", threads: int | None = None,
                top_k: int = 3, threshold: float = 0.0, max_body: int = MAX_BODY_DEFAULT, token_file: str | Path | None = None,
                ready: Callable[[Any], None] | None = None, stop: threading.Event | None = None) -> dict[str, Any]:
    """`edgecls serve`: the API (and a page to try it at /) for one model, no camera, until `stop` is set or
    Ctrl-C / SIGTERM. `ready(server)` is called once it listens. Returns /api/info's answer at the end."""
    from edgecls.camera.access import read_token_file
    from edgecls.camera.model_files import resolve_model
    from edgecls.camera.server import LiveServer, parse_address
    from edgecls.runtime import load_backend

    artifact = resolve_model(model)
    host, port = parse_address(address)
    token = read_token_file(token_file) if token_file is not None else None
    with load_backend(artifact, device=device, threads=threads) as backend:
        api = ClassifyApi(backend, top_k=top_k, threshold=threshold, max_body=max_body)
        server = LiveServer(host, port, title=f"edgecls {artifact.parent.name}/{artifact.name}", token=token)
        for path in ("/stream.mjpg", "/snapshot.jpg", "/stats.json"):  # no camera: nothing to stream
            server.routes.pop(path, None)
        page = load_page_named("api.html", server.title)
        server.add_route("/", lambda request: request.send(200, page, "text/html; charset=utf-8", {"Content-Security-Policy": PAGE_CSP}))
        api.mount(server)
        server.start()
        try:
            shown = server.url_with_token if server.token_generated else server.url
            log.info("serving %s at %s (POST images to %sapi/classify)", artifact, shown, server.url)
            if ready is not None:
                ready(server)
            stop = stop or threading.Event()
            while not stop.wait(0.5):  # short waits: Ctrl-C and SIGTERM are handled between them
                pass
        finally:
            server.stop()
        return api.describe()


def load_page_named(name: str, title: str) -> bytes:
    """A page from edgecls/camera/static with its title filled in (escaped)."""
    template = resources.files("edgecls.camera").joinpath(f"static/{name}").read_text(encoding="utf-8")
    return template.replace("{{title}}", html.escape(title)).encode()


def _read_body(request: Any, size: int, timeout: float) -> bytes | None:
    """Exactly `size` bytes of body within `timeout` seconds in all, else None."""
    deadline = time.monotonic() + timeout
    chunks, left = [], size
    sock = request.connection
    try:
        while left > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            sock.settimeout(min(remaining, request.server.app.send_timeout))
            chunk = request.rfile.read1(min(left, _CHUNK))
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
    except (TimeoutError, OSError):
        return None
    return b"".join(chunks)


def _drain(request: Any, size: int) -> None:
    """Read and discard a refused body for a moment, so the client finishes sending and sees the 413."""
    deadline, left = time.monotonic() + 1.0, min(size, DRAIN_BYTES)
    try:
        while left > 0 and time.monotonic() < deadline:
            request.connection.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = request.rfile.read1(min(left, _CHUNK))
            if not chunk:
                break
            left -= len(chunk)
    except (TimeoutError, OSError):
        pass


__all__ = ["MAX_BODY_DEFAULT", "ClassifyApi", "SharedBackend", "load_page_named", "serve_model"]
