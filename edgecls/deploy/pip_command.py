"""Running pip in a subprocess: a time limit, and errors that show the command to run by hand."""
from __future__ import annotations

import importlib.util
import shlex
import subprocess

from edgecls.errors import ExportError

PIP_TIMEOUT_S = 600


def run_pip(command: list[str], what: str) -> subprocess.CompletedProcess[str]:
    """Run `command` (a pip call); ExportError naming `what` and the pip output's tail when it fails or times out."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"could not {what}: pip ran past {PIP_TIMEOUT_S} s", "Check the network or the package index") from exc
    if proc.returncode != 0:
        tail = " | ".join(line for line in (proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise ExportError(f"could not {what}: {tail}", f"Run it by hand to see more: {shlex.join(command)}")
    return proc


def has_module(name: str) -> bool:
    """Whether `name` is importable here, without importing it."""
    return importlib.util.find_spec(name) is not None
