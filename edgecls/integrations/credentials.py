"""Secrets on the command line: read them from a file or the environment, scrub them from `ps`, redact URLs.

A password passed in a URL (`mqtt://user:pass@host/...`) is visible to every user of the machine in
`ps` and /proc/PID/cmdline. `scrub_argv` overwrites it in place in the process's own argument memory
(Linux: the range /proc/self/stat names as arg_start..arg_end, the memory /proc/PID/cmdline reads), so
`ps` shows `*` instead, and removes it from sys.argv. It cannot reach shell history or what `ps` saw
before the program started: a file or an environment variable is the safe way.
"""
from __future__ import annotations

import ctypes
import logging
import os
import stat
import sys
from pathlib import Path
from urllib.parse import SplitResult, quote, urlsplit

from edgecls.errors import ConfigError

log = logging.getLogger(__name__)

MAX_SECRET_FILE_BYTES = 4096
USERINFO_SAFE = "!$&'()*+,;="  # RFC 3986 sub-delims: left as they are in a password put into a URL (the rest %-encoded)


def read_secret_file(path: str | Path, option: str) -> str:
    """The first line of a small regular file (surrounding whitespace removed); a warning when others may read it."""
    path = Path(path).expanduser()
    fix = f"Pass a readable file holding the secret on one line to {option} (chmod 600 it)"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{option} '{path}' does not exist", fix) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {option} '{path}': {exc.strerror}", fix) from exc
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{option} '{path}' is {'a folder' if stat.S_ISDIR(info.st_mode) else 'not a regular file'}", fix)
    if info.st_size > MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"{option} '{path}' is {info.st_size} bytes; it should hold one line", fix)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {option} '{path}': {exc.strerror}", fix) from exc
    try:
        lines = raw.decode("utf-8").strip().splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"{option} '{path}' is not UTF-8 text", fix) from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"{option} '{path}' is empty", fix)
    if info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s '%s' is readable by other users (mode %s); restrict it with: chmod 600 '%s'",
                    option, path, oct(stat.S_IMODE(info.st_mode)), path)
    return lines[0].strip()


def redact_url(url: str) -> str:
    """The URL with any password replaced by *** (user name, host, port and path kept)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:
        return "<unparsable URL>"
    if "@" not in netloc:
        return url
    userinfo, _, hostport = netloc.rpartition("@")
    user, has_password, _ = userinfo.partition(":")
    safe = f"{user}:***@{hostport}" if has_password else f"{user}@{hostport}"
    return SplitResult(parts.scheme, safe, parts.path, parts.query, parts.fragment).geturl()


def write_secret_file(path: str | Path, secret: str) -> None:
    """`secret` and a newline in a new file of mode 0600 whatever the umask (never through a link, never over a file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(secret + "\n")


def _userinfo(url: str) -> tuple[SplitResult, str | None, str | None, str]:
    """(parts, user, password as spelled or None, host[:port]) of a URL; ValueError when it does not parse."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return parts, None, None, parts.netloc
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, has_password, password = userinfo.partition(":")
    return parts, user, password if has_password else None, hostport


def url_password(url: str) -> str | None:
    """The password as spelled in the URL (`rtsp://user:PASS@host/...` -> 'PASS'), or None (also for an unparsable URL)."""
    try:
        return _userinfo(url)[2] or None
    except ValueError:
        return None


def without_password(url: str) -> str:
    """The URL with any `:password` removed from its user info (user name, host, port and path as spelled)."""
    parts, user, password, hostport = _userinfo(url)
    if password is None:
        return url
    netloc = f"{user}@{hostport}" if user else hostport
    return SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment).geturl()


def with_password(url: str, password: str) -> str:
    """The URL (with a user, without a password) with `password` put in, %-encoded where a URL needs it (FFmpeg and
    paho decode it back); ValueError when the URL has no user name or already has a password."""
    parts, user, spelled, hostport = _userinfo(url)
    if not user or spelled is not None:
        raise ValueError("the URL needs a user name and no password")
    netloc = f"{user}:{quote(password, safe=USERINFO_SAFE)}@{hostport}"
    return SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment).geturl()


def _argument_memory() -> tuple[int, int] | None:
    """(arg_start, arg_end) of this process from /proc/self/stat, or None where that is not available."""
    try:
        data = Path("/proc/self/stat").read_bytes()
        fields = data[data.rindex(b")") + 2 :].split()  # after "pid (comm) ": field 3 is fields[0]
        return int(fields[45]), int(fields[46])  # fields 48 and 49 of proc(5)
    except (OSError, ValueError, IndexError):
        return None


def scrub_argv(secret: str) -> bool:
    """Overwrite every occurrence of `secret` in this process's command line with '*'; True when none is left."""
    if not secret:
        return True
    sys.argv[:] = [arg.replace(secret, "*" * len(secret)) for arg in sys.argv]
    if not sys.platform.startswith("linux"):
        return False
    bounds = _argument_memory()
    if bounds is None:
        return False
    start, end = bounds
    needle = secret.encode()
    try:
        shown = Path("/proc/self/cmdline").read_bytes()
        if end <= start or len(shown) > end - start or ctypes.string_at(start, len(shown)) != shown:
            return False  # the memory is not what ps shows (a changed process title): leave it alone
        offset = shown.find(needle)
        while offset >= 0:
            ctypes.memmove(start + offset, b"*" * len(needle), len(needle))
            offset = shown.find(needle, offset + len(needle))
        return needle not in Path("/proc/self/cmdline").read_bytes()
    except (OSError, ValueError):
        return False


__all__ = ["read_secret_file", "redact_url", "scrub_argv", "url_password", "with_password", "without_password", "write_secret_file"]
