"""Frame sources for the camera loop: OpenCV cameras, video files, stream URLs, image folders, picamera2.

Every source hands out BGR uint8 frames (H, W, 3), OpenCV's layout, and `None` at the end of a file
or when a read fails. `edgecls.preprocess.prepare(frame, meta, bgr=True)` turns them into model input.

- "0", "1", "/dev/video0": a V4L2/USB camera through OpenCV (live).
- "rtsp://...", "http(s)://...", "rtmp://...", "udp://...", "tcp://...": a network stream (live).
- a video file (.mp4, .avi, .mkv, ...): decoded by OpenCV's FFmpeg backend (finite).
- a folder of images, or one image: sorted by name, decoded with Pillow like `edgecls predict` (finite).
- "picamera2": the Raspberry Pi camera through the picamera2 library (live). picamera2's "RGB888"
  format is laid out B, G, R in memory (libcamera names formats by the 32-bit word, little endian;
  raspberrypi/picamera2#1148, #848), so its arrays are already BGR like OpenCV's and are passed on
  unchanged; "XRGB8888" frames are BGRA in memory and lose the padding byte.
- "imx500": the Raspberry Pi AI Camera with the network on its sensor (edgecls.camera.imx500; needs the network.rpk):
  `read_outputs()` gives each frame with the sensor's output tensors, so the loop runs no model.

Stale frames (opencv/opencv#13145, #10671): camera drivers queue several frames, so a slow reader
gets old ones. Live sources ask for a 1-frame buffer (CAP_PROP_BUFFERSIZE, honoured by V4L2 and some
others) and the grabber (grabber.py) reads them continuously on a thread, keeping only the newest.

No TensorFlow here; OpenCV and picamera2 are imported inside the functions that need them.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgecls.errors import EdgeclsError, ImageError, require, suggest
from edgecls.integrations.credentials import read_secret_file, redact_url, url_password, with_password
from edgecls.preprocess import IMAGE_SUFFIXES, load_image

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
PICAMERA_NAMES = ("picamera2", "picamera", "picam", "libcamera")
IMX500_NAMES = ("imx500", "ai-camera")
STREAM_TIMEOUT_MS = 5000  # network streams: give up opening / reading after this long instead of hanging
EMPTY_FRAME = np.zeros((0, 0, 3), np.uint8)  # a corrupt or unreadable frame: the grabber counts it and goes on


class CameraError(EdgeclsError):
    """A frame source that cannot be opened or was lost and could not be reopened."""


@runtime_checkable
class FrameSource(Protocol):
    """Where frames come from. `read()` gives a BGR uint8 (H, W, 3) array, or None at the end or on failure."""

    is_live: bool  # cameras and streams: frames keep coming and old ones are worthless
    fps: float | None  # what the source reports, if anything

    def read(self) -> np.ndarray | None:
        ...

    def close(self) -> None:
        ...

    def describe(self) -> str:
        ...


def to_bgr(image: np.ndarray | None, alpha_last: bool = True) -> np.ndarray | None:
    """Grey (H, W) or (H, W, 1) and BGRA (H, W, 4) to BGR (H, W, 3); other arrays are returned as they are."""
    if image is None or not isinstance(image, np.ndarray) or image.size == 0:
        return image
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3] if alpha_last else image[:, :, 1:])
    return image


@contextlib.contextmanager
def quiet_opencv(cv2: Any) -> Iterator[None]:
    """Silence OpenCV's own WARN lines while probing a source: our CameraError says what went wrong."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging.setLogLevel(level)


class OpenCVSource:
    """A cv2.VideoCapture: camera index or device, video file, or stream URL."""

    def __init__(self, spec: str, target: int | str, kind: str, width: int | None = None, height: int | None = None,
                 fps: float | None = None, model_size: tuple[int, int] | None = None, crop_fraction: float = 1.0) -> None:
        """model_size: (height, width) of the model; a camera without width/height asks for the smallest mode covering it
        (with the model's crop_fraction)."""
        cv2 = require("cv2", "pi")
        self.spec, self.kind = spec, kind
        self.is_live = kind != "file"
        self.mode: str | None = None  # a camera's capture mode, when edgecls chose it
        with quiet_opencv(cv2):
            if kind == "stream":
                params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
                self._cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
            else:
                self._cap = cv2.VideoCapture(target)
            opened = self._cap.isOpened()
        if not opened:
            self._cap.release()
            raise CameraError(f"cannot open {self._what()}", _OPEN_HINTS[kind])
        if self.is_live:
            self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of old ones (False where unsupported)
            if width:
                self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            if height:
                self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if fps:
                self._cap.set(cv2.CAP_PROP_FPS, fps)
            if kind == "camera" and model_size and not (width or height):
                self._smallest_mode(cv2, model_size, crop_fraction)
        reported = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = reported if 0.0 < reported < 1000.0 else None
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if kind == "file" else 0
        self.frame_count = count if count > 0 else None

    def _smallest_mode(self, cv2: Any, model_size: tuple[int, int], crop_fraction: float) -> None:
        """Ask for the smallest common mode covering the model (edgecls.camera.capture_modes); keep the default otherwise."""
        from edgecls.camera.capture_modes import pick_camera_mode

        cap = self._cap
        default = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))

        def try_mode(width: int, height: int) -> tuple[int, int]:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            return int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

        chosen = pick_camera_mode(model_size, try_mode, crop_fraction)
        if chosen is None:
            try_mode(*default)
            self.mode = f"{default[0]}x{default[1]} (default: no smaller mode covers the model)"
        else:
            self.mode = f"{chosen[0]}x{chosen[1]} (smallest mode covering the {model_size[1]}x{model_size[0]} model)"

    def _what(self) -> str:
        # a stream URL's password (rtsp://user:PASS@host/...) never reaches a log line, an error or the report
        shown = redact_url(self.spec)
        return {"camera": f"camera {self.spec}", "file": f"video file '{self.spec}'", "stream": f"stream '{shown}'"}[self.kind]

    def read(self) -> np.ndarray | None:
        ok, frame = self._cap.read()
        return to_bgr(frame) if ok else None

    def close(self) -> None:
        self._cap.release()

    def describe(self) -> str:
        fps = f", {self.fps:g} fps" if self.fps else ""
        frames = f", {self.frame_count} frames" if getattr(self, "frame_count", None) else ""
        mode = f", {self.mode}" if self.mode else ""
        return f"{self._what()} (OpenCV{fps}{frames}{mode})"


_OPEN_HINTS = {
    "camera": "Check that it is plugged in and listed by 'ls /dev/video*', that no other program uses it, and that "
              "your user is in the 'video' group; try another index (0, 1, ...), or --device picamera2 for a Pi camera module",
    "file": "OpenCV cannot decode it: check that it is a video file, or convert it with "
            "'ffmpeg -i INPUT -c:v libx264 out.mp4'",
    "stream": f"Check the URL, credentials and network (test it with 'ffplay URL'); edgecls gives up after "
              f"{STREAM_TIMEOUT_MS // 1000} s",
}


class FolderSource:
    """Image files of a folder (or one image) in name order, decoded with Pillow (EXIF-rotated) to BGR."""

    is_live = False

    def __init__(self, path: Path, fps: float | None = None) -> None:
        self.path = path
        if path.is_dir():
            self.files = sorted(
                (p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()),
                key=lambda p: p.name,
            )
        else:
            self.files = [path]
        if not self.files:
            raise CameraError(
                f"folder '{path}' holds no images ({', '.join(IMAGE_SUFFIXES)})",
                "Pass a folder of image files, a video file, a camera index or a stream URL",
            )
        self.fps = fps
        self.skipped: list[tuple[str, str]] = []
        self._next = 0

    def read(self) -> np.ndarray | None:
        if self._next >= len(self.files):
            return None
        path = self.files[self._next]
        self._next += 1
        try:
            return np.ascontiguousarray(load_image(path)[:, :, ::-1])
        except ImageError as exc:
            self.skipped.append((str(path), exc.message))
            return EMPTY_FRAME  # counted as an empty frame; the folder goes on

    def close(self) -> None:
        self._next = len(self.files)

    def describe(self) -> str:
        if self.path.is_dir():
            return f"folder '{self.path}' ({len(self.files)} images)"
        return f"image '{self.path}'"


class Picamera2Source:
    """The Raspberry Pi camera through picamera2 (installed with apt, not pip)."""

    is_live = True

    def __init__(self, width: int | None = None, height: int | None = None, fps: float | None = None,
                 model_size: tuple[int, int] | None = None, crop_fraction: float = 1.0) -> None:
        """model_size: (height, width) of the model; frames then come from the ISP's lores stream at the smallest size
        covering it with its crop_fraction (edgecls.camera.capture_modes), where the camera supports one."""
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CameraError(
                "picamera2 is not installed in this Python environment",
                "On Raspberry Pi OS: sudo apt install python3-picamera2, and create the virtual environment with "
                "'python3 -m venv --system-site-packages' so it can see it",
            ) from exc
        from edgecls.camera.capture_modes import lores_size

        size = (int(width or 640), int(height or 480))
        self.lores = lores_size(size, model_size, crop_fraction) if model_size else None
        try:
            self._camera = Picamera2()
            controls = {"FrameRate": float(fps)} if fps else {}
            # "RGB888" arrays are B, G, R in memory (picamera2#1148): already OpenCV's BGR.
            # queue=False: capture_array waits for a frame started after the request, never a queued old one.
            streams: dict[str, Any] = {"main": {"size": size, "format": "RGB888"}}
            if self.lores:
                streams["lores"] = {"size": self.lores, "format": "YUV420"}  # the one lores format every Pi ISP gives
            try:
                config = self._camera.create_video_configuration(**streams, buffer_count=4, queue=False, controls=controls)
                self._camera.configure(config)
            except Exception:  # noqa: BLE001 - a camera without a lores stream: the main stream it is
                if not self.lores:
                    raise
                self.lores = None
                config = self._camera.create_video_configuration(main=streams["main"], buffer_count=4, queue=False, controls=controls)
                self._camera.configure(config)
            self._camera.start()
        except Exception as exc:  # picamera2 raises RuntimeError/IndexError/OSError depending on what is missing
            with contextlib.suppress(Exception):
                self._camera.close()
            raise CameraError(
                f"cannot start the Pi camera through picamera2 ({type(exc).__name__}: {exc})",
                "Check the ribbon cable and that 'rpicam-hello --list-cameras' lists a camera; close other programs using it",
            ) from exc
        self.size = size
        self.fps = float(fps) if fps else None

    def read(self) -> np.ndarray | None:
        try:
            frame = self._camera.capture_array("lores" if self.lores else "main")
        except Exception:  # noqa: BLE001 - a camera that went away: the grabber reopens it
            return None
        if self.lores:
            from edgecls.camera.capture_modes import yuv420_to_bgr

            return yuv420_to_bgr(np.asarray(frame), self.lores[0])
        return to_bgr(np.asarray(frame))  # XRGB8888 is B, G, R, X in memory: drop the X

    def close(self) -> None:
        close_picamera(self._camera)

    def describe(self) -> str:
        if self.lores:
            return f"Pi camera (picamera2, lores {self.lores[0]}x{self.lores[1]} YUV420 from the ISP, main {self.size[0]}x{self.size[1]})"
        return f"Pi camera (picamera2, {self.size[0]}x{self.size[1]} RGB888 = BGR in memory)"


def source_kind(spec: str) -> str:
    """'picamera2' | 'camera' | 'stream' | 'folder' | 'image' | 'file', or CameraError for a path that does not exist."""
    text = spec.strip()
    if text.lower() in PICAMERA_NAMES:
        return "picamera2"
    if text.lower() in IMX500_NAMES:
        return "imx500"
    if text.isdigit() or text.startswith("/dev/video"):
        return "camera"
    scheme, sep, _ = text.partition("://")
    if sep and scheme.lower() in LIVE_SCHEMES:
        return "stream"
    path = Path(text).expanduser()
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "image" if path.suffix.lower() in IMAGE_SUFFIXES else "file"
    if path.suffix or os.sep in text:
        raise CameraError(f"camera source '{redact_url(spec)}' does not exist", "Check the path of the video file or image folder")
    hint = suggest(text.lower(), (*PICAMERA_NAMES, *IMX500_NAMES)) or (
        f" Did you mean the URL '{redact_url(text)}' with one of {', '.join(LIVE_SCHEMES)}?" if sep else ""
    )
    raise CameraError(
        f"camera source '{redact_url(spec)}' is not a camera index, an existing file or folder, a stream URL or 'picamera2'",
        f"Pass e.g. --device 0, --device clip.mp4, --device frames/, --device rtsp://HOST/stream or --device picamera2.{hint}".rstrip("."),
    )


def source_with_password(spec: str, password_file: str | Path) -> str:
    """The stream URL `spec` (with a user, without a password) with the password from `password_file` put in: in memory
    only, so it is on no command line (`edgecls camera --device-password-file`, the bundle's `%d/camera-password`).
    CameraError naming the URL without its password when it is no stream URL, has no user or already has a password."""
    text = spec.strip() if isinstance(spec, str) else ""
    shown = redact_url(text)
    fix = "Pass --device rtsp://USER@HOST[:PORT]/PATH with --device-password-file, or leave the file out"
    scheme, sep, _ = text.partition("://")
    if not sep or scheme.lower() not in LIVE_SCHEMES:
        raise CameraError(f"--device-password-file was given, but --device '{shown}' is not a stream URL", fix)
    if url_password(text) is not None:
        raise CameraError(f"the camera password is given twice: in --device '{shown}' and in --device-password-file",
                          "Keep only --device-password-file (take ':PASSWORD' out of the URL)")
    password = read_secret_file(password_file, "--device-password-file")
    try:
        return with_password(text, password)
    except ValueError:
        raise CameraError(f"--device '{shown}' names no user for the password in --device-password-file",
                          "Put the user in the URL: rtsp://USER@HOST/PATH") from None


def open_source(spec: str, width: int | None = None, height: int | None = None, fps: float | None = None,
                model_size: tuple[int, int] | None = None, crop_fraction: float = 1.0, network: Path | None = None) -> FrameSource:
    """Open a frame source from its command-line spelling. width/height/fps are hints for live sources; model_size
    (height, width) lets a camera deliver the smallest frames that cover the model (edgecls.camera.capture_modes).
    network: the network.rpk that "imx500" loads onto the sensor (its labels from the meta.json / labels.txt beside it)."""
    if not isinstance(spec, str) or not spec.strip():
        raise CameraError(f"empty camera source {spec!r}", "Pass a camera index (0), a video file, a folder, a URL or 'picamera2'")
    kind = source_kind(spec)
    text = spec.strip()
    if kind == "picamera2":
        return Picamera2Source(width, height, fps, model_size=model_size, crop_fraction=crop_fraction)
    if kind == "imx500":
        if network is None or Path(network).suffix != ".rpk":
            raise CameraError(f"--device {text} runs the network on the AI Camera's sensor, and --model {network or '?'} is no network.rpk",
                              "Pass --model OUT/network.rpk (imx500-package -i packerOut.zip -o OUT on the Pi)")
        from edgecls.camera.imx500 import Imx500Reader

        return Imx500Reader(Path(network), width=int(width or 640), height=int(height or 480), fps=fps)
    if kind in ("folder", "image"):
        return FolderSource(Path(text).expanduser(), fps)
    if kind == "camera":
        target: int | str = int(text) if text.isdigit() else text
        if isinstance(target, str) and not os.path.exists(target):
            raise CameraError(f"camera device '{text}' does not exist", _OPEN_HINTS["camera"])
        return OpenCVSource(text, target, "camera", width, height, fps, model_size=model_size, crop_fraction=crop_fraction)
    if kind == "stream":
        return OpenCVSource(text, text, "stream", width, height, fps)
    return OpenCVSource(text, str(Path(text).expanduser()), "file")


__all__ = ["CameraError", "FolderSource", "FrameSource", "OpenCVSource", "Picamera2Source", "open_source", "source_kind",
           "source_with_password", "to_bgr"]


def close_picamera(camera: Any) -> None:
    """Stop and close a Picamera2 (also the AI Camera's), whatever state it is in."""
    with contextlib.suppress(Exception):
        camera.stop()
    with contextlib.suppress(Exception):
        camera.close()
