"""The bundle's camera source and its password: `edgecls deploy ... [--camera SOURCE] [--camera-password-file FILE]`.

A stream URL from the profile's [camera] source or --camera may hold a password (`rtsp://user:PASS@cam/...`). It never
lands in a world-readable file (the unit, install.sh, README.md, bundle.json are all 0644) or the device's process list:
it is taken out of the URL (the service's URL keeps the user name) or read from --camera-password-file, written to
BUNDLE/camera-password (mode 0600, no sha256 in bundle.json), installed root-only by install.sh and handed to the
service by systemd's LoadCredential= (`--device-password-file=%d/camera-password`), like the MQTT password; `edgecls
camera` puts it back into the URL in memory only (edgecls.camera.sources.source_with_password).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from edgecls.deploy.safe_text import CONTROL_CHARS
from edgecls.errors import ConfigError
from edgecls.integrations.credentials import read_secret_file, redact_url, url_password, without_password, write_secret_file

PASSWORD_FILE = "camera-password"  # in the bundle and the prefix; the service's credential of the same name
MAX_SOURCE_CHARS = 2048  # as a profile's camera source (edgecls.devices)
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")  # edgecls.camera.sources.LIVE_SCHEMES


@dataclass(frozen=True)
class BundleCamera:
    """The camera source the service gets (never holding a password) and the password for the 0600 file."""

    source: str | None  # None: the profile names no source (the camera's default, 0)
    password: str | None = field(default=None, repr=False)
    password_in_url: str | None = field(default=None, repr=False)  # as spelled in the URL (for scrub_argv and the warning)
    from_profile: bool = True  # where the source came from: the profile, or --camera

    def camera_args(self, credentials: str) -> list[str]:
        """`edgecls camera` arguments beyond --device: the password as a systemd credential."""
        return [f"--device-password-file={credentials}/{PASSWORD_FILE}"] if self.password is not None else []

    def describe(self) -> dict[str, Any]:
        """For bundle.json: the source without its password, and where the password is."""
        return {"source": self.source, "password_file": PASSWORD_FILE if self.password is not None else None}

    def write_files(self, folder: Path) -> None:
        """BUNDLE/camera-password (0600 whatever the umask) when there is a password."""
        if self.password is not None:
            write_secret_file(folder / PASSWORD_FILE, self.password)


def camera_setting(profile_source: str | None, source: str | None = None, password_file: str | Path | None = None) -> BundleCamera:
    """The checked camera source: `source` (--camera) or else the profile's, with any password moved out of it.

    ConfigError (naming the URL without its password) for a source with a control character, a password given both in
    the URL and in `password_file`, a password file for a source that is no stream URL or a URL without a user name."""
    from_profile = source is None
    what = "the profile's camera source" if from_profile else "--camera"
    chosen = profile_source if from_profile else source
    if chosen is None:
        if password_file is not None:
            raise ConfigError("--camera-password-file was given, but no stream URL (the profile names no camera source)",
                              "Add --camera rtsp://USER@HOST/PATH, or leave --camera-password-file out")
        return BundleCamera(None)
    text = str(chosen)  # as given: the camera strips it itself
    shown = CONTROL_CHARS.sub("?", redact_url(text))
    if CONTROL_CHARS.search(text):  # before parsing: urlsplit would silently drop tabs and newlines
        raise ConfigError(f"{what} '{shown}' holds a newline or control character, which no unit can carry safely",
                          "Pass the source on one line")
    if not text.strip() or len(text) > MAX_SOURCE_CHARS:
        raise ConfigError(f"{what} '{shown[:80]}' is empty or longer than {MAX_SOURCE_CHARS} characters",
                          "Pass a camera index, a device, a video file or a stream URL")
    scheme, sep, _ = text.strip().partition("://")
    is_stream = bool(sep) and scheme.lower() in STREAM_SCHEMES
    raw = url_password(text) if is_stream else None
    if password_file is not None and not is_stream:
        raise ConfigError(f"--camera-password-file was given, but {what} '{shown}' is not a stream URL",
                          f"Use it with a URL ({', '.join(s + '://' for s in STREAM_SCHEMES[:3])}...), or leave it out")
    if raw is not None and password_file is not None:
        raise ConfigError(f"the camera password is given twice: in {what} '{shown}' and in --camera-password-file",
                          "Keep only --camera-password-file (the URL is written into the unit)")
    if raw is None and password_file is None:
        return BundleCamera(text, from_profile=from_profile)
    try:
        user = urlsplit(text).username
    except ValueError:
        raise ConfigError(f"cannot parse {what} '{shown}'", "Pass rtsp://USER@HOST[:PORT]/PATH") from None
    if not user:
        raise ConfigError(f"{what} '{shown}' names no user for its password", "Put the user in the URL: rtsp://USER@HOST/PATH")
    password = unquote(raw) if raw is not None else read_secret_file(password_file, "--camera-password-file")  # type: ignore[arg-type]
    if CONTROL_CHARS.search(password):
        raise ConfigError(f"the camera password for '{shown}' holds a control character", "Use a password on one line")
    return BundleCamera(without_password(text), password=password, password_in_url=raw, from_profile=from_profile)


__all__ = ["PASSWORD_FILE", "BundleCamera", "camera_setting"]
