"""Who may talk to the live view: the Host allowlist on loopback and the access token elsewhere.

- Bound to a loopback address, the server answers only requests whose `Host:` names loopback with its
  port (127.0.0.1:PORT, localhost:PORT, [::1]:PORT): a web page on another site that rebinds its own
  DNS name to 127.0.0.1 sends its own name as Host, so it is refused (DNS rebinding).
- Bound to any other address, every route needs the token: `?token=` in the URL (the answer then sets
  an HttpOnly, SameSite=Strict cookie, so the page's own requests carry it), the cookie, or
  `Authorization: Bearer TOKEN`. Tokens are compared with hmac.compare_digest.

A token is read from a file (`edgecls camera --token-file FILE`, the deploy bundle's unit) or made
fresh for one run. Tokens use URL-safe characters only, so they travel unchanged in a URL, a cookie
and a header.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
import stat
import string
from collections.abc import Mapping
from email.message import Message
from pathlib import Path
from urllib.parse import parse_qs

from edgecls.errors import ConfigError

log = logging.getLogger(__name__)

TOKEN_COOKIE = "edgecls_token"
TOKEN_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~")
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_FILE_BYTES = 4096
MAKE_TOKEN_HINT = "Write one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE; chmod 600 FILE"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and the name localhost."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A fresh 256-bit URL-safe token."""
    return secrets.token_urlsafe(32)


def check_token(token: str, where: str) -> str:
    """`token` when it is long enough and URL-safe; ConfigError naming `where` otherwise (never the token itself)."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"the token in {where} is {len(token)} characters long; at least {MIN_TOKEN_LENGTH} are needed", MAKE_TOKEN_HINT)
    bad = sorted(set(token) - TOKEN_CHARACTERS)
    if bad:
        raise ConfigError(f"the token in {where} holds {len(bad)} character(s) outside A-Z a-z 0-9 - . _ ~ (e.g. {bad[0]!r})",
                          MAKE_TOKEN_HINT)
    return token


def read_token_file(path: str | Path) -> str:
    """The token in `path` (surrounding whitespace removed). The file must be a regular file; a warning
    when group or others may read it."""
    path = Path(path).expanduser()
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"token file '{path}' does not exist", MAKE_TOKEN_HINT) from None
    except OSError as exc:
        raise ConfigError(f"cannot read token file '{path}': {exc.strerror}", "Pass a readable file to --token-file") from exc
    if not stat.S_ISREG(info.st_mode):
        what = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise ConfigError(f"token file '{path}' is {what}", "Pass a regular file holding the token to --token-file")
    if info.st_size > MAX_TOKEN_FILE_BYTES:
        raise ConfigError(f"token file '{path}' is {info.st_size} bytes; a token file holds one line", MAKE_TOKEN_HINT)
    try:
        with open(path, "rb") as handle:  # O_NOFOLLOW is not needed: the file was checked to be regular above
            raw = handle.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read token file '{path}': {exc.strerror}", "Pass a readable file to --token-file") from exc
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"token file '{path}' is not ASCII text", MAKE_TOKEN_HINT) from None
    if info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("token file '%s' is readable by other users (mode %s); restrict it with: chmod 600 '%s'",
                    path, oct(stat.S_IMODE(info.st_mode)), path)
    return check_token(token, f"'{path}'")


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """Host header values a loopback-bound server answers: loopback names with the port (without it on port 80)."""
    names = {"127.0.0.1", "localhost", "[::1]"}
    bound = host.lower()
    names.add(f"[{bound}]" if ":" in bound else bound)
    allowed = {f"{name}:{port}" for name in names}
    if port == 80:
        allowed |= names
    return frozenset(allowed)


def host_allowed(header: str | None, allowed: frozenset[str]) -> bool:
    return header is not None and header.strip().lower() in allowed


def request_token(query: str, headers: Mapping[str, str] | Message) -> tuple[str | None, bool]:
    """(token the request carries, whether it came in the URL) from `?token=`, `Authorization: Bearer` or the cookie."""
    try:
        from_url = parse_qs(query, max_num_fields=20).get("token")
    except ValueError:  # more fields than any page of ours sends
        from_url = None
    if from_url:
        return from_url[0], True
    authorization = headers.get("Authorization") or ""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    for part in (headers.get("Cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == TOKEN_COOKIE and value:
            return value.strip('"'), False
    return None, False


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison; False for a missing or non-ASCII token."""
    if given is None:
        return False
    try:
        return hmac.compare_digest(given.encode("ascii"), expected.encode("ascii"))
    except UnicodeEncodeError:
        return False


def token_cookie(token: str) -> str:
    """The Set-Cookie value that lets the page's own requests (stream, stats) carry the token."""
    return f"{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"


__all__ = ["MIN_TOKEN_LENGTH", "TOKEN_COOKIE", "allowed_hosts", "check_token", "host_allowed", "is_loopback", "new_token",
           "read_token_file", "request_token", "token_cookie", "token_matches"]
