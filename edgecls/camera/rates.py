"""The camera's output rates, checked before the camera starts: the live view's (--live-fps) and the recording's (--record-fps).

Every recorded frame is drawn and encoded (mp4v ~2.5 ms at 640x480) and every live-view frame is a JPEG (~1 ms), on the
camera's CPU beside inference: these rates are what the outputs cost. No OpenCV, no TensorFlow.
"""
from __future__ import annotations

import math

from edgecls.errors import ConfigError

DEFAULT_RECORD_FPS = 10.0  # a real-time recording's frames a second (--record-fps), capped at the source's rate
MAX_RECORD_FPS = 60.0
UNTIMED_FPS = 15.0  # the video's rate for a file recording of a source with no frame rate (an image folder)

DEFAULT_LIVE_FPS = 10.0  # live-view JPEGs a second while a stream client watches (--live-fps)
MAX_LIVE_FPS = 60.0


def check_live_fps(value: float) -> float:
    """The live view's frame rate (--live-fps) as a float, or one clear ConfigError."""
    return _check_rate("--live-fps", value, MAX_LIVE_FPS, f"Use e.g. --live-fps {DEFAULT_LIVE_FPS:g} (a browser view needs no more "
                       "than 10-15; each frame is a JPEG encoded on the camera's CPU)")


def check_record_fps(value: float) -> float:
    """The recording's frame rate (--record-fps) as a float, or one clear ConfigError."""
    return _check_rate("--record-fps", value, MAX_RECORD_FPS, f"Use e.g. --record-fps {DEFAULT_RECORD_FPS:g} (each recorded frame "
                       "is drawn and encoded on the camera's CPU; leave it out for the default)")


def _check_rate(flag: str, value: float, maximum: float, fix: str) -> float:
    try:
        fps = float(value)
    except (TypeError, ValueError):
        fps = float("nan")
    if not 0.0 < fps <= maximum:  # also refuses NaN
        raise ConfigError(f"{flag} {value!r} is not between 0 and {maximum:g}", fix)
    return fps


def record_fps_option(value: float | None, record: object | None) -> float | None:
    """--record-fps as given (None: left out, the default applies), checked: only with --record, within (0, 60]."""
    if value is None:
        return None
    if record is None:
        raise ConfigError(f"--record-fps {value:g} applies to a recording only", "Add --record FILE.mp4, or leave --record-fps out")
    return check_record_fps(value)


def recording_rate(record_fps: float | None, source_fps: float | None, real_time: bool) -> float:
    """The recording's frames a second: --record-fps (DEFAULT_RECORD_FPS for a real-time recording when left out), never
    above the source's own rate; a file's lossless recording without --record-fps keeps the file's rate."""
    source = source_fps if source_fps is not None and math.isfinite(source_fps) and source_fps > 0 else None
    if record_fps is None:
        if not real_time:
            return source or UNTIMED_FPS
        record_fps = DEFAULT_RECORD_FPS
    record_fps = check_record_fps(record_fps)
    return min(record_fps, source) if source else record_fps


__all__ = ["DEFAULT_LIVE_FPS", "DEFAULT_RECORD_FPS", "MAX_LIVE_FPS", "MAX_RECORD_FPS", "UNTIMED_FPS", "check_live_fps", "check_record_fps",
           "record_fps_option", "recording_rate"]
