"""How the camera's live output thread gives the CPU to inference: Linux schedules each thread on its own.

SCHED_IDLE where the kernel has it: a waking inference thread then preempts the output thread at once (a nice-19 thread
that got a core keeps it for its time slice, and OpenVINO's threads, which wait for each other, pay for that); else the
highest niceness. Threads the output thread starts (an encoder's) inherit its scheduling.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading

OUTPUT_NICE = 19  # the live output thread's niceness where SCHED_IDLE is unavailable


def lower_thread_priority(nice: int = OUTPUT_NICE) -> str | None:
    """Give the calling thread only the CPU time other threads leave (see the module docstring).

    Returns "idle" (SCHED_IDLE), "nice" (niceness `nice`) or None (neither is available).
    """
    if not sys.platform.startswith("linux"):
        return None
    tid = threading.get_native_id()
    if hasattr(os, "SCHED_IDLE") and hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            return "idle"
        except OSError:
            pass
    if not hasattr(os, "setpriority"):
        return None
    try:
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), min(19, nice)))
    except OSError:
        return None
    return "nice"


def restore_thread_priority(thread: threading.Thread) -> None:
    """Give `thread` the calling thread's scheduling back once the loop has stopped, so it finishes its work promptly
    (undoes lower_thread_priority; Linux lets only a process with CAP_SYS_NICE raise a priority: without it, a no-op)."""
    tid = thread.native_id
    if tid is None or not sys.platform.startswith("linux") or not hasattr(os, "sched_setscheduler"):
        return
    with contextlib.suppress(OSError):
        if os.sched_getscheduler(tid) != os.SCHED_OTHER:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        if os.getpriority(os.PRIO_PROCESS, tid) > own:
            os.setpriority(os.PRIO_PROCESS, tid, own)


__all__ = ["OUTPUT_NICE", "lower_thread_priority", "restore_thread_priority"]
