"""Sony's IMX500 toolchain (Raspberry Pi AI Camera) in its own pinned virtual environment. No TensorFlow here.

Edge-MDT (`edge-mdt[tf]`: Model Compression Toolkit, `imx500-converter[tf]`, the IMX500 target-platform
capabilities) pins TensorFlow 2.14-2.15 and numpy < 2, so it can never share the project's venv. This module
creates it from PyPI the first time (about 2.3 GB), caches it per toolchain version under
`$EDGECLS_CACHE/imx500-<version>` (default `~/.cache/edgecls`), and reuses it afterwards. The converter
(`imxconv-tf`) runs on Java 17: `apt-get install openjdk-17-jre-headless` (scripts/setup.sh does it as root).

A venv is usable only once it holds the stamp file written after a complete, checked install: a killed or
failed install is removed and redone, never used half-made. Two processes creating it at once take turns
(a lock on the cache folder).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgecls.errors import ExportError
from edgecls.locks import folder_lock

TOOLCHAIN_VERSION = "edge-mdt-1.3.0"  # the cache folder's name follows it: a new pin set gets a new venv
# The exact set measured to quantize, convert and simulate edgecls classifiers (Python 3.11, x86-64). Edge-MDT 1.3.0
# asks for imx500-converter[tf] ~= 3.18.2 and model-compression-toolkit ~= 2.5; TensorFlow 2.15 is the newest it takes.
PINS: tuple[str, ...] = (
    "edge-mdt[tf]==1.3.0",
    "tensorflow==2.15.1",
    "numpy==1.26.4",
)
IMPORT_CHECK = "import model_compression_toolkit, tensorflow, numpy; print(tensorflow.__version__, numpy.__version__)"
STAMP = ".edgecls-toolchain.json"
CONVERTER = "imxconv-tf"
JAVA_PACKAGE = "openjdk-17-jre-headless"
MIN_JAVA = 17
INSTALL_TIMEOUT_S = 3600  # a cold install downloads ~600 MB of wheels
ENV_CACHE = "EDGECLS_CACHE"
ENV_PYTHON = "EDGECLS_IMX500_PYTHON"  # the interpreter the venv is made from (default: the one running edgecls)


@dataclass(frozen=True)
class Toolchain:
    """A ready toolchain venv: its interpreter and converter, and what it holds."""

    root: Path
    python: Path
    converter: Path
    versions: dict[str, str]


def cache_root() -> Path:
    base = os.environ.get(ENV_CACHE)
    return Path(base).expanduser() if base else Path.home() / ".cache" / "edgecls"


def venv_dir(version: str = TOOLCHAIN_VERSION) -> Path:
    return cache_root() / f"imx500-{version}"


def _bin(root: Path, name: str) -> Path:
    return root / ("Scripts" if os.name == "nt" else "bin") / name


def ready(root: Path | None = None) -> Toolchain | None:
    """The cached toolchain when it is complete (stamp written after a checked install), else None. Creates nothing."""
    root = root or venv_dir()
    stamp = root / STAMP
    python, converter = _bin(root, "python"), _bin(root, CONVERTER)
    if not (stamp.is_file() and python.exists() and converter.exists()):
        return None
    try:
        data = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("pins") != list(PINS):
        return None
    return Toolchain(root, python, converter, dict(data.get("versions", {})))


def java_version(java: str | None = None) -> int | None:
    """The major version of the `java` on PATH (or `java`), None when there is none that answers."""
    found = java or shutil.which("java")
    if not found:
        return None
    try:
        proc = subprocess.run([found, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def check_java() -> int:
    """Java >= 17 for imxconv-tf, or ExportError with the apt command."""
    version = java_version()
    if version is None:
        raise ExportError("the IMX500 converter (imxconv-tf) needs Java 17 and no 'java' was found on PATH",
                          f"Install it: sudo apt-get install {JAVA_PACKAGE} (scripts/setup.sh does it when run as root)")
    if version < MIN_JAVA:
        raise ExportError(f"the IMX500 converter (imxconv-tf) needs Java {MIN_JAVA} or newer, found Java {version}",
                          f"Install it: sudo apt-get install {JAVA_PACKAGE}, and put it first on PATH")
    return version


def base_python() -> str:
    """The interpreter the toolchain venv is made from: $EDGECLS_IMX500_PYTHON, else the one running edgecls."""
    return os.environ.get(ENV_PYTHON) or sys.executable


def ensure_toolchain(say: Callable[[str], None] = lambda message: None, root: Path | None = None) -> Toolchain:
    """The cached toolchain, created from PyPI first when it is missing or incomplete. ExportError (one line, the fix)
    when it cannot be made: no venv module, pip failing (offline, no wheel for this Python), a broken install."""
    root = root or venv_dir()
    found = ready(root)
    if found is not None:
        return found
    root.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(root.parent, wait=True, what="used to create the IMX500 toolchain"):
        found = ready(root)  # another process may have made it while we waited
        if found is not None:
            return found
        say(f"creating the IMX500 toolchain venv {root} (once per toolchain version: about 2.3 GB, minutes)")
        return _create(root)


def _create(root: Path) -> Toolchain:
    if root.exists():
        if not (root / "pyvenv.cfg").is_file():  # not a venv this code started: never delete what edgecls did not make
            raise ExportError(f"{root} exists and is not a Python venv", "Move it away, or set EDGECLS_CACHE to another folder")
        shutil.rmtree(root)  # an incomplete or outdated venv (no stamp, or other pins): never reused half-made
    began = time.perf_counter()
    python = base_python()
    _run([python, "-m", "venv", str(root)], "create the toolchain venv",
         f"Install Python's venv module (apt-get install python3-venv), or set {ENV_PYTHON} to a Python 3.11 with it")
    venv_python = _bin(root, "python")
    _run([str(venv_python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *PINS], f"pip install {' '.join(PINS)}",
         "Check the connection to PyPI (or a pip proxy/index in pip.conf) and that the Python is 3.9-3.11 (TensorFlow 2.15); "
         f"the log is in {root}.log", log=root.with_name(root.name + ".log"))
    converter = _bin(root, CONVERTER)
    if not converter.exists():
        raise ExportError(f"the toolchain venv {root} has no {CONVERTER} after pip install",
                          f"Remove {root} and run the export again; pins: {' '.join(PINS)}")
    check = subprocess.run([str(venv_python), "-c", IMPORT_CHECK], capture_output=True, text=True, timeout=600)
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExportError(f"the toolchain venv {root} cannot import Model Compression Toolkit: {last}",
                          f"Remove {root} and run the export again")
    versions = _versions(venv_python)
    stamp = {"pins": list(PINS), "versions": versions, "python": python, "seconds": round(time.perf_counter() - began, 1)}
    (root / STAMP).write_text(json.dumps(stamp, indent=2), encoding="utf-8")
    return Toolchain(root, venv_python, converter, versions)


def _run(command: Sequence[str], what: str, fix: str, log: Path | None = None) -> None:
    try:
        proc = subprocess.run(list(command), capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except FileNotFoundError as exc:
        raise ExportError(f"cannot {what}: {exc.filename} was not found", fix) from exc
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"cannot {what}: no result within {INSTALL_TIMEOUT_S} s", fix) from exc
    if log is not None:
        log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("WARNING: Location")]
        reason = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise ExportError(f"cannot {what}: {reason[:300]}", fix)


def _versions(python: Path) -> dict[str, str]:
    code = ("import json\nfrom importlib import metadata\nout = {}\n"
            "for name in ('edge-mdt', 'model-compression-toolkit', 'imx500-converter', 'edge-mdt-tpc', 'tensorflow', 'numpy'):\n"
            "    try: out[name] = metadata.version(name)\n    except metadata.PackageNotFoundError: pass\nprint(json.dumps(out))")
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    try:
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {}


def require_toolchain(say: Callable[[str], None] = lambda message: None) -> Toolchain:
    """What an IMX500 export needs before any work: Java 17, then the toolchain venv (made when missing)."""
    check_java()
    return ensure_toolchain(say)


def offline_reason() -> str | None:
    """Why the toolchain cannot be had on this machine without creating it (for tests and doctor), else None."""
    if ready() is not None:
        return None
    if java_version() is None:
        return f"no Java ({JAVA_PACKAGE})"
    return f"the toolchain venv {venv_dir()} does not exist yet (scripts/imx500_env.sh creates it from PyPI)"


__all__ = ["PINS", "TOOLCHAIN_VERSION", "Toolchain", "check_java", "ensure_toolchain", "ready", "require_toolchain", "venv_dir"]
