"""Folder locks between edgecls processes, and whether a process id is still alive.

folder_lock takes an exclusive fcntl.flock on the folder's own directory fd (no lock file), re-entrant within a
process; a forked child drops its copies of the held fds, so it never keeps its parent's lock.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from edgecls.errors import ConfigError


class _HeldLock:
    def __init__(self) -> None:
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None


_HELD: dict[tuple[int, int], _HeldLock] = {}
_HELD_GUARD = threading.Lock()


def _forget_locks_in_child() -> None:
    """A forked child closes its copies of the lock fds (so a long-lived child does not keep the parent's lock)."""
    for held in _HELD.values():
        if held.fd is not None:
            with contextlib.suppress(OSError):
                os.close(held.fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


@contextlib.contextmanager
def folder_lock(folder: Path, wait: bool = False, what: str = "written") -> Iterator[None]:
    """An exclusive fcntl.flock on the folder's own directory fd (no lock file), re-entrant within a process.

    wait=False: a lock held by another process (or thread) raises ConfigError; wait=True blocks until it is free.
    """
    folder = Path(folder)
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise ConfigError(f"cannot lock folder '{folder}': {exc.strerror}", "Choose a writable output path") from exc
    busy = ConfigError(f"'{folder}' is being {what} by another edgecls process", "Wait for it to finish or choose another folder")
    info = os.fstat(fd)
    with _HELD_GUARD:
        held = _HELD.setdefault((info.st_dev, info.st_ino), _HeldLock())
    if not held.thread_lock.acquire(blocking=wait):
        os.close(fd)
        raise busy
    try:
        if held.depth == 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                raise busy from None
            held.fd = fd
        else:
            os.close(fd)  # re-entered: the outer level's fd holds the lock
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
            if held.depth == 0 and held.fd is not None:
                os.close(held.fd)  # closing the fd releases the flock
                held.fd = None
    finally:
        held.thread_lock.release()


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists (also one of another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True
