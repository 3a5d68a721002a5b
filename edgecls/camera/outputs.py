"""Where the camera loop's annotated frames go: an OpenCV window, a recording, the live view server.

OpenCV is imported only when one of them is on (edgecls.errors.require names the extra to install).
A recording is written to a temp file beside its target (edgecls.fsutil's short `.edgecls-tmp-` names,
removed on errors and signals, swept at the next run when a SIGKILL left one), re-opened with OpenCV
and frame-counted once the writer is released, and renamed into place only when it reads back every
frame written (OpenCV's writer reports nothing on a full disk). A run that recorded nothing leaves no
file. The recording gets the mode a plain open() gives (the umask).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, require, suggest
from edgecls.fsutil import atomic_path, check_parent

log = logging.getLogger(__name__)

RECORD_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
WINDOW = "edgecls camera"
DEFAULT_RECORD_FPS = 15.0  # live sources that report no frame rate


def display_available() -> bool:
    """Whether a window can be shown: a desktop session on Linux, always elsewhere."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def check_output_path(path: Path, what: str) -> None:
    """Fail before the camera starts, not after an hour of frames, when an output cannot be written."""
    if path.is_dir():
        raise ConfigError(f"{what} '{path}' is a folder", f"Pass a file path for the {what}")
    check_parent(path)


def check_outputs(headless: bool | None, record: str | Path | None, report: str | Path | None) -> tuple[bool, Path | None, Path | None]:
    """(show a window, recording path, report path), checked before the camera starts.

    headless: True = no window; False = a window (headless with a warning where no display exists);
    None = a window when a display exists.
    """
    record = Path(record).expanduser() if record is not None else None
    report = Path(report).expanduser() if report is not None else None
    if record is not None:
        if record.suffix.lower() not in RECORD_CODECS:
            near = suggest(record.suffix.lower(), RECORD_CODECS)
            raise ConfigError(f"cannot record to '{record}': unsupported suffix '{record.suffix}'{near}",
                              f"Use one of {', '.join(RECORD_CODECS)}")
        check_output_path(record, "recording")
    if report is not None:
        check_output_path(report, "report")
    show = display_available() if headless is None else not headless
    if show and not display_available():
        log.warning("no display (DISPLAY is not set); running headless. Use --serve HOST:PORT to watch in a browser")
        show = False
    return show, record, report


class Outputs:
    """Overlay plus any of: an OpenCV window, an annotated recording, the live view server."""

    def __init__(self, show: bool, record: Path | None, serve: str | None, record_fps: float | None, token: str | None = None) -> None:
        self.show, self.record, self.serve, self.token = show, record, serve, token
        self.record_fps = record_fps or DEFAULT_RECORD_FPS
        self.server: Any = None
        self.url: str | None = None
        self.recorded = 0
        self._writer: Any = None
        self._publish: contextlib.AbstractContextManager[Path] | None = None  # atomic_path: temp file -> record
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None
        self._cv2: Any = None
        if show or record or serve:
            self._cv2 = require("cv2", "pi")
        if show:
            try:
                self._cv2.namedWindow(WINDOW, self._cv2.WINDOW_NORMAL)
            except self._cv2.error:
                log.warning("this OpenCV build cannot open windows (opencv-python-headless?); running headless. "
                            "Use --serve HOST:PORT to watch in a browser")
                self.show = False
        if serve:
            self._start_server(serve)

    @property
    def active(self) -> bool:
        return bool(self.show or self.record or self.server)

    def _start_server(self, address: str) -> None:
        try:
            from edgecls.camera.server import LiveServer, parse_address
        except ImportError as exc:
            raise ConfigError("--serve needs edgecls.camera.server, which this installation lacks", "Reinstall edgecls") from exc
        host, port = parse_address(address)
        self.server = LiveServer(host, port, token=self.token)
        self.server.start()
        self.url = self.server.url  # never the token: the URL goes into the report
        if self.server.token_generated:  # the only place this run's token is shown: once, on stderr
            log.info("live view at %s (a new access token for this run; pass --token-file FILE to keep one)", self.server.url_with_token)
        else:
            log.info("live view at %s", self.url)

    def _open_writer(self, width: int, height: int) -> None:
        cv2, record = self._cv2, self.record
        if record is None:
            raise RuntimeError("_open_writer called without a recording path")
        self._publish = atomic_path(record, suffix=record.suffix)
        self._tmp = self._publish.__enter__()
        codec = RECORD_CODECS[record.suffix.lower()]
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*codec), float(self.record_fps), (width, height))
        if not self._writer.isOpened():
            self._writer = None
            self._discard(None)
            raise ConfigError(f"OpenCV cannot write {codec} video to '{record}'", "Try a .avi path (MJPG), or check disk space")
        self._size = (width, height)

    def handle(self, frame: np.ndarray, decision: Any, live: dict[str, Any], extra: dict[str, Any]) -> bool:
        """Draw and send the frame everywhere it goes; True when the user asked to quit (q, Esc, window closed).

        decision: anything with label, score and uncertain (edgecls.camera.loop.Decision).
        """
        from edgecls.camera.overlay import draw_overlay

        cv2 = self._cv2
        annotated = draw_overlay(frame, decision.label, decision.score, live.get("fps"), live.get("latency_p50_ms"),
                                 uncertain=decision.uncertain)
        if self.record is not None:
            height, width = annotated.shape[:2]
            if self._writer is None:
                self._open_writer(width, height)
            if self._size != (width, height):  # a source whose frame size changed: keep the video's size
                annotated_out = cv2.resize(annotated, self._size, interpolation=cv2.INTER_AREA)
            else:
                annotated_out = annotated
            self._writer.write(annotated_out)
            self.recorded += 1
        if self.server is not None:
            ok, jpeg = cv2.imencode(".jpg", annotated, [cv2.IMWRITE_JPEG_QUALITY, 80])
            if ok:
                self.server.publish(jpeg.tobytes(), {"label": decision.label, "score": decision.score, **live, **extra})
        if self.show:
            cv2.imshow(WINDOW, annotated)
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27):
                return True
            with contextlib.suppress(cv2.error):
                if cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
                    return True
        return False

    def idle(self) -> None:
        """Keep the window responsive while no frame arrives."""
        if self.show:
            self._cv2.waitKey(1)

    def close(self) -> None:
        """Close window and server, then finish the recording: verified and renamed into place when it has frames.

        Raises ConfigError (and leaves no file under the recording's name) when the recording does not read
        back every frame written. Closing twice is harmless.
        """
        try:
            if self.server is not None:
                self.server.stop()
            if self.show:
                with contextlib.suppress(Exception):
                    self._cv2.destroyWindow(WINDOW)
                    self._cv2.waitKey(1)
        finally:
            self._finish_recording()

    def _finish_recording(self) -> None:
        from edgecls.data.video import verify_video

        writer, self._writer = self._writer, None
        if self._publish is None or self._tmp is None or self.record is None:
            return
        try:
            if writer is not None:
                writer.release()
            if not self.recorded:
                raise _NothingRecordedError()
            verify_video(self._tmp, self.record, self.recorded, self._size)
        except _NothingRecordedError:
            self._discard(None)
        except BaseException as exc:
            self._discard(exc)
            raise
        else:
            publish, self._publish = self._publish, None
            publish.__exit__(None, None, None)  # renames the temp file into place

    def _discard(self, exc: BaseException | None) -> None:
        """Remove the temp recording (atomic_path's clean-up); no file appears under the recording's name."""
        publish, self._publish = self._publish, None
        if publish is not None:
            error = exc if exc is not None else _NothingRecordedError()
            with contextlib.suppress(_NothingRecordedError):
                publish.__exit__(type(error), error, error.__traceback__)


class _NothingRecordedError(Exception):
    """No frame reached the recording: there is nothing to publish."""


__all__ = ["DEFAULT_RECORD_FPS", "RECORD_CODECS", "WINDOW", "Outputs", "check_output_path", "check_outputs", "display_available"]
