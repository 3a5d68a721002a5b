"""Safe outputs: atomic file and folder writes, output-vs-input checks, edgecls' output marker.

Every temp file or folder edgecls makes is named `.edgecls-tmp-<pid>-<8 chars>.tmp<suffix>` beside its
target: short (a 249-character target name still works), recognisable, removed on errors and signals
(clean-ups run on BaseException), and swept at the next write into the same folder once its pid is dead
(left by SIGKILL or a power cut). A folder edgecls publishes carries OUTPUT_MARKER; only such a folder is
ever deleted or replaced, and never when it is, or contains, an input of the command.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from edgecls.errors import ConfigError
from edgecls.locks import folder_lock, pid_alive

OUTPUT_MARKER = ".edgecls-output"
TEMP_PREFIX = ".edgecls-tmp-"
PathArg = str | Path | None

# Errors that say the output cannot be written, whichever call in the body hit them first.
_WRITE_ERRNOS = {errno.ENOSPC: "Free some disk space or choose an output folder on another disk",
                 errno.EDQUOT: "Free some disk space or choose an output folder on another disk",
                 errno.EFBIG: "Choose an output folder on another file system",
                 errno.EROFS: "Choose a writable output path"}


def _write_error(target: Path, exc: OSError) -> ConfigError:
    hint = _WRITE_ERRNOS.get(exc.errno or 0, "Choose a writable output path")
    return ConfigError(f"cannot write '{target}': {exc.strerror or exc}", hint)


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


# ----------------------------------------------------------------------------- outputs vs inputs

def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _same(a: os.stat_result | None, b: os.stat_result | None) -> bool:
    return a is not None and b is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _ancestors(path: Path) -> list[Path]:
    """`path` resolved, then each folder above it."""
    resolved = path.expanduser().resolve()
    return [resolved, *resolved.parents]


def _relation(output: Path, source: Path) -> str | None:
    """'is', 'inside' or 'contains' when `output` is `source`, lies inside it or contains it; None otherwise.

    Compared by resolved path (symlinks followed) and by inode where the paths exist (hard links, bind mounts).
    """
    out_chain, in_chain = _ancestors(output), _ancestors(source)
    if out_chain[0] == in_chain[0]:
        return "is"
    out_stat, in_stat = _stat(out_chain[0]), _stat(in_chain[0])
    if _same(out_stat, in_stat):
        return "is"
    if in_chain[0] in out_chain[1:] or (in_stat is not None and any(_same(_stat(p), in_stat) for p in out_chain[1:] if p.exists())):
        return "inside"
    if out_chain[0] in in_chain[1:] or (out_stat is not None and any(_same(_stat(p), out_stat) for p in in_chain[1:] if p.exists())):
        return "contains"
    return None


_RELATION_TEXT = {"is": "would overwrite", "inside": "lies inside", "contains": "contains"}


def check_outputs(outputs: Mapping[str, PathArg], inputs: Mapping[str, PathArg]) -> None:
    """Refuse before any work when an output is, or lies inside, an input, or contains one.

    Keys are the option names the user typed ({"--report": report}); None values are skipped.
    """
    for out_name, output in outputs.items():
        if output is None:
            continue
        for in_name, source in inputs.items():
            if source is None:
                continue
            relation = _relation(Path(output), Path(source))
            if relation is not None:
                raise ConfigError(f"{out_name} '{output}' {_RELATION_TEXT[relation]} the input {in_name} '{source}'",
                                  "Choose an output path outside the command's inputs")


# ----------------------------------------------------------------------------- marker and deletion

def make_marker(folder: Path, command: str) -> None:
    """Mark `folder` as made by edgecls, so a later --force may replace it."""
    from edgecls import __version__

    write_json(Path(folder) / OUTPUT_MARKER, {"tool": "edgecls", "version": __version__, "command": command,
                                              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def has_marker(folder: Path) -> bool:
    marker = Path(folder) / OUTPUT_MARKER
    if marker.is_symlink() or not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("tool") == "edgecls"
    except (OSError, ValueError, AttributeError):
        return False


def _is_empty_folder(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def check_removable(folder: Path, inputs: Mapping[str, PathArg] | None = None) -> None:
    """Raise ConfigError unless edgecls may delete `folder`: a real folder (not a link) that carries OUTPUT_MARKER or is
    empty, and is not, and does not contain, any input. A folder that does not exist passes (there is nothing to delete).
    No file pattern stands in for the marker: a user's folder that happens to hold model.tflite or train/Bag/*.png is
    theirs."""
    folder = Path(folder)
    try:
        mode = folder.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "a file"
        raise ConfigError(f"'{folder}' is {kind}, not a folder made by edgecls", "Remove it yourself or choose another --out")
    for name, source in (inputs or {}).items():
        relation = _relation(folder, Path(source)) if source is not None else None
        if relation in ("is", "contains"):
            raise ConfigError(f"'{folder}' {relation} the input {name} '{source}'", "Choose an --out outside the command's inputs")
    if not has_marker(folder) and not _is_empty_folder(folder):
        raise ConfigError(f"'{folder}' was not made by edgecls (no {OUTPUT_MARKER} marker)", "Remove it yourself or choose another --out")


def remove_output_folder(folder: Path, inputs: Mapping[str, PathArg] | None = None) -> None:
    """Delete a folder only under the check_removable rules; otherwise ConfigError and nothing is touched."""
    folder = Path(folder)
    check_removable(folder, inputs)
    with folder_lock(folder.parent, wait=True):
        check_removable(folder, inputs)  # again, now that no other edgecls process can publish it
        if not os.path.lexists(folder):
            return
        trash = _temp_name(folder.parent, ".old")
        os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


# ----------------------------------------------------------------------------- temps

_SWEPT: set[Path] = set()
# Temps this process made and has not yet published or removed: remove_live_temps() (run by the CLI on every exit
# and at interpreter exit, for library callers) removes whatever a clean-up missed, e.g. a signal that landed
# between creating a temp and entering its `try`.
_LIVE_TEMPS: set[Path] = set()


def _temp_name(folder: Path, suffix: str) -> Path:
    return folder / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def sweep_stale_temps(folder: Path) -> int:
    """Remove TEMP_PREFIX entries in `folder` whose pid is no longer alive (left by SIGKILL); returns the count."""
    removed = 0
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        pid_text = entry.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or pid_alive(int(pid_text)):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
        except FileNotFoundError:
            pass  # another process swept it first
        except OSError:
            continue
    return removed


def _sweep_once(folder: Path) -> None:
    """Sweep each folder once per process (writers of many files into one folder stay O(n))."""
    key = folder.resolve()
    if key not in _SWEPT:
        _SWEPT.add(key)
        sweep_stale_temps(folder)


def _make_temp(target: Path, suffix: str, directory: bool) -> Path:
    """Create a fresh temp file or folder beside `target`; mode 0666/0777 minus the umask, as open()/mkdir() give."""
    for _ in range(100):
        tmp = _temp_name(target.parent, suffix)
        _LIVE_TEMPS.add(tmp)  # before it exists: a signal at any point after creation still finds it
        try:
            if directory:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            _LIVE_TEMPS.discard(tmp)  # not ours
            continue
        except OSError as exc:
            _LIVE_TEMPS.discard(tmp)
            raise _write_error(target, exc) from exc
        except BaseException:
            _remove_temp(tmp)  # a signal while creating it
            raise
    raise ConfigError(f"cannot create a temp file beside '{target}'", "Choose another output folder")


def _remove_temp(tmp: Path) -> None:
    """Remove a temp file or folder; a folder is retried, since a file that appeared during rmtree leaves it behind."""
    for _ in range(3):
        try:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if not os.path.lexists(tmp):
            break
    _LIVE_TEMPS.discard(tmp)


def remove_live_temps() -> None:
    """Remove every temp this process made and still owns (run on exit, after the clean-ups ran).

    A forked child inherits the parent's set: it removes only the temps named with its own pid.
    """
    own = f"{TEMP_PREFIX}{os.getpid()}-"
    for tmp in list(_LIVE_TEMPS):
        if tmp.name.startswith(own):
            _remove_temp(tmp)


atexit.register(remove_live_temps)


# ----------------------------------------------------------------------------- atomic writers

@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp file path; on success it replaces `target`, on error (or signal) it is removed."""
    target = Path(target)
    check_parent(target)
    if target.is_dir() and not target.is_symlink():
        raise ConfigError(f"cannot write '{target}': it is a folder", "Choose a file name for the output")
    _sweep_once(target.parent)
    tmp = _make_temp(target, ".tmp" + suffix, directory=False)  # a signal before the `try`: remove_live_temps
    try:
        yield tmp
        os.replace(tmp, target)
        _LIVE_TEMPS.discard(tmp)
    except BaseException as exc:
        _remove_temp(tmp)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise _write_error(target, exc) from exc
        raise


def _check_replaceable(target: Path, overwrite: bool, inputs: Mapping[str, PathArg] | None) -> None:
    if not os.path.lexists(target):
        return
    if not overwrite:
        raise ConfigError(f"'{target}' already exists", "Pass a new --out path or remove it")
    check_removable(target, inputs)


@contextlib.contextmanager
def atomic_dir(target: str | Path, overwrite: bool = True, inputs: Mapping[str, PathArg] | None = None,
               command: str = "edgecls") -> Iterator[Path]:
    """Yield a temp folder; on success it gets OUTPUT_MARKER and replaces `target`, on error (or signal) it is deleted.

    An existing `target` is replaced only when `overwrite` and check_removable allows it: it carries the marker or is
    empty, and it is not, and does not contain, an input. That is checked before the body runs and again at the final
    replace, both under folder_lock(target.parent, wait=True): two publishers of one folder never collide, the later one
    wins.
    """
    target = Path(target)
    check_parent(target)
    with folder_lock(target.parent, wait=True):  # unlocked, another publisher's swap could be seen half-done
        _check_replaceable(target, overwrite, inputs)
    _sweep_once(target.parent)
    tmp = _make_temp(target, ".tmp", directory=True)
    trash: Path | None = None
    try:
        yield tmp
        make_marker(tmp, command)
        with folder_lock(target.parent, wait=True):
            _check_replaceable(target, overwrite, inputs)
            if os.path.lexists(target):
                trash = _temp_name(target.parent, ".old")
                os.replace(target, trash)
            try:
                os.replace(tmp, target)
                _LIVE_TEMPS.discard(tmp)
            except BaseException:
                if trash is not None:
                    os.replace(trash, target)  # put the previous output back: nothing lost
                    trash = None
                raise
    except BaseException as exc:
        _remove_temp(tmp)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise _write_error(target, exc) from exc
        raise
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


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
