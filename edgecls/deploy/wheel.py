"""edgecls itself as a py3-none-any wheel for the bundle: built from the source tree, or repacked from the installation."""
from __future__ import annotations

import base64
import hashlib
import re
import shutil
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from edgecls.deploy.pip_command import has_module, run_pip
from edgecls.errors import ExportError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SOURCE_FILES = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "setup.cfg", "setup.py")


def source_tree() -> Path | None:
    """The project folder edgecls was imported from (pyproject.toml naming edgecls beside the package), if any."""
    root = Path(__file__).resolve().parents[2]  # <root>/edgecls/deploy/wheel.py
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and re.search(r'(?m)^name\s*=\s*"edgecls"', pyproject.read_text(encoding="utf-8")):
        return root
    return None


def build_wheel(dest: Path) -> Path:
    """edgecls as a py3-none-any wheel in `dest`: built from the source tree, else repacked from the installation."""
    dest.mkdir(parents=True, exist_ok=True)
    root = source_tree()
    return _wheel_from_source(root, dest) if root is not None else _wheel_from_installed(dest)


def wheel_metadata(wheel: Path) -> str:
    """The text of the wheel's .dist-info/METADATA."""
    with zipfile.ZipFile(wheel) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        return whl.read(name).decode("utf-8")


def build_requirements_met(pyproject: Path) -> bool:
    """Whether every [build-system] requires entry (name, optionally >=X.Y) is installed here in a recent enough version."""
    try:
        requires = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("build-system", {}).get("requires", [])
    except (OSError, ValueError):
        return False
    for requirement in requires:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*(?:>=\s*([0-9.]+))?\s*", str(requirement))
        if match is None or not has_module(match.group(1).replace("-", "_")):
            return False
        try:
            have = metadata.version(match.group(1))
        except metadata.PackageNotFoundError:
            return False
        if match.group(2) and _numbers(have) < _numbers(match.group(2)):
            return False
    return True


def _numbers(version: str) -> tuple[int, ...]:
    """(77, 0, 1) from "77.0.1" or "77.0.1.post1"; stops at the first part that is not a number."""
    out: list[int] = []
    for part in version.split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


def _wheel_from_source(root: Path, dest: Path) -> Path:
    """`pip wheel --no-deps` on a clean copy of the project (no stale build/ folder, the repo left untouched)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    with tempfile.TemporaryDirectory(prefix="edgecls-wheel-") as tmp:
        copy = Path(tmp) / "src"
        copy.mkdir()
        for name in SOURCE_FILES:
            if (root / name).is_file():
                shutil.copy2(root / name, copy / name)
        shutil.copytree(root / "edgecls", copy / "edgecls", ignore=ignore)
        out = Path(tmp) / "out"
        # with the build backend installed here, build with it (no package index needed); else pip fetches it
        isolation = ["--no-build-isolation"] if build_requirements_met(root / "pyproject.toml") else []
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "--disable-pip-version-check", "-q",
                   "-w", str(out), str(copy)]
        proc = run_pip(command, "build the edgecls wheel")
        wheels = sorted(out.glob("edgecls-*.whl"))
        if not wheels:
            raise ExportError(f"pip wheel made no edgecls wheel: {proc.stderr.strip()[-500:]}",
                              "Run it by hand: pip wheel --no-deps . -w wheels")
        target = dest / wheels[0].name
        shutil.copy2(wheels[0], target)
    return target


def _wheel_from_installed(dest: Path) -> Path:
    """Repack an installed (non-editable) edgecls from its RECORD into a wheel (no source tree needed)."""
    dist = metadata.distribution("edgecls")
    files = [f for f in dist.files or [] if "__pycache__" not in f.parts and not str(f).endswith(".pyc")]
    if not any(str(f).startswith("edgecls/") for f in files):
        raise ExportError("cannot find edgecls' own files to pack into the bundle (an editable install without its source?)",
                          "Run edgecls deploy from a source checkout, or pip install edgecls without -e")
    version = dist.version
    info = f"edgecls-{version}.dist-info"
    skip = {f"{info}/{name}" for name in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    target = dest / f"edgecls-{version}-py3-none-any.whl"
    record: list[str] = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as whl:
        for file in sorted(files, key=str):
            name = str(file).replace("\\", "/")
            if name in skip or name.startswith("..") or (not name.startswith("edgecls/") and not name.startswith(info)):
                continue
            data = Path(file.locate()).read_bytes()
            whl.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        record.append(f"{info}/RECORD,,")
        whl.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return target
