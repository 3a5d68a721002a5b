"""The bundle's live view: the --serve address it binds (checked at deploy time) and the token every request needs.

The token is made at deploy time (`secrets.token_urlsafe(24)`), stored in the bundle as a 0600 file, installed
root-only, and handed to the service by systemd's LoadCredential=: it never appears on a command line or in the unit.
"""
from __future__ import annotations

import ipaddress
import os
import re
import secrets
from pathlib import Path

from edgecls.errors import ConfigError

TOKEN_FILE = "live-token"  # in the bundle and in the install prefix; the service's credential of the same name
TOKEN_BYTES = 24
HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # RFC 1123
SERVE_FIX = "Use HOST:PORT with an IPv4 address or a host name and a port from 1 to 65535, e.g. 0.0.0.0:8080"


def parse_serve(text: str) -> tuple[str, int]:
    """(host, port) of a HOST:PORT --serve value; ConfigError naming the value when it is not one."""
    raw = text if isinstance(text, str) else ""
    host, sep, port_text = raw.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"--serve {text!r} is not HOST:PORT", SERVE_FIX)
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5 and 1 <= int(port_text) <= 65535):
        raise ConfigError(f"--serve {text!r} has no port from 1 to 65535", SERVE_FIX)
    if not _valid_host(host):
        raise ConfigError(f"--serve {text!r}: {host!r} is neither an IPv4 address nor a host name", SERVE_FIX)
    return host, int(port_text)


def _valid_host(host: str) -> bool:
    """An IPv4 literal or an RFC 1123 host name (labels of letters, digits and inner '-', 253 characters at most)."""
    try:
        return ipaddress.ip_address(host).version == 4
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", host):  # looks numeric but is no IPv4 address (e.g. 300.1.1.1)
        return False
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return len(host) <= 253 and all(HOSTNAME_LABEL.fullmatch(label) for label in labels)


def write_token(folder: Path) -> tuple[Path, str]:
    """A new random token in folder/live-token, created with mode 0600 whatever the umask; (path, token)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    path = folder / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(token)  # no newline: a reader that does not strip still gets the token
    return path, token


def live_view_url(serve: str, token: str) -> str:
    """The page to open, with the token: the address itself, or <device> when the service binds every address."""
    host, port = parse_serve(serve)
    shown = "<device>" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}/?token={token}"
