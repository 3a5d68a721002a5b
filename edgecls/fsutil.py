"""Atomic file and folder writes: write to a temp path beside the target, then rename."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgecls.errors import ConfigError


# Errors that say the output cannot be written, whichever call in the body hit them first.
_WRITE_ERRNOS = {errno.ENOSPC: "Free some disk space or choose an output folder on another disk",
                 errno.EDQUOT: "Free some disk space or choose an output folder on another disk",
                 errno.EFBIG: "Choose an output folder on another file system",
                 errno.EROFS: "Choose a writable output path"}


def _write_error(target: Path, exc: OSError) -> ConfigError:
    return ConfigError(f"cannot write '{target}': {exc.strerror or exc}", _WRITE_ERRNOS.get(exc.errno, "Choose a writable output path"))


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_parent(target: Path) -> None:
    """Create `target`'s folder if needed, or raise ConfigError when it cannot hold a new file."""
    parent = target.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"cannot write '{target}': '{parent}' is a file", "Choose an output path inside a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create folder '{parent}': {exc.strerror}", "Choose a writable output path") from exc
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"output folder '{parent}' is not writable", "Choose a writable output path")


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp file path; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    check_parent(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + suffix, dir=target.parent)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the mode a plain open() would
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise _write_error(target, exc) from exc
        raise


@contextlib.contextmanager
def atomic_dir(target: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp folder; on success it replaces `target`, on error it is deleted."""
    target = Path(target)
    check_parent(target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise _write_error(target, exc) from exc
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; give the mode a plain mkdir would
    try:
        yield tmp
        if target.exists():
            if not overwrite:
                raise ConfigError(f"'{target}' already exists", "Pass a new --out path or remove it")
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise _write_error(target, exc) from exc
        raise


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically, with a trailing newline."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
