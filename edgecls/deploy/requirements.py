"""What the device installs besides edgecls: runtime requirements from the wheel's metadata (never TensorFlow),
the Python it needs, and pip's platform flags to check or download the device's (e.g. aarch64 cp311) wheels."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from edgecls.deploy.pip_command import run_pip
from edgecls.errors import ExportError

# pyproject extra each target installs (imx500: the camera side of "pi"; the network itself runs on the sensor)
RUNTIME_EXTRA = {"tflite": "pi", "edgetpu": "pi", "openvino": "intel", "imx500": "pi"}
FORBIDDEN = ("tensorflow", "tensorflow-cpu", "tf-keras", "keras", "torch")
PICAMERA2_CONSTRAINTS = ("numpy<2", "opencv-python-headless<4.12")  # apt's simplejpeg is built against numpy 1.24


def runtime_requirements(metadata_text: str, extra: str) -> list[str]:
    """Requires-Dist lines of the core dependencies plus one extra, markers other than `extra` kept."""
    out: list[str] = []
    for line in metadata_text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        requirement, _, marker = line.split(":", 1)[1].strip().partition(";")
        requirement, marker = requirement.strip(), marker.strip()
        match = re.fullmatch(r"(?:(.*?)\s+and\s+)?\(?\s*extra\s*==\s*[\"']([\w.-]+)[\"']\s*\)?", marker) if marker else None
        if marker and match is None:
            if "extra" not in marker:
                out.append(f"{requirement}; {marker}")
            continue
        if match is not None and match.group(2) != extra:
            continue
        rest = match.group(1) if match is not None else None
        line_out = f"{requirement}; {rest}" if rest else requirement
        if line_out not in out:
            out.append(line_out)
    heavy = [r for r in out if re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].lower().replace("_", "-") in FORBIDDEN]
    if heavy:
        raise ExportError(f"the runtime requirements would pull in {', '.join(heavy)}",
                          "Keep TensorFlow in the train extra only (pyproject.toml)")
    return out


def requires_python(metadata_text: str) -> str | None:
    """The Requires-Python of a wheel's METADATA text, if it has one."""
    match = re.search(r"(?m)^Requires-Python:\s*(.+)$", metadata_text)
    return match.group(1).strip() if match else None


def python_ok(spec: str | None, version: str) -> bool:
    """Whether `version` ("3.11") meets a Requires-Python made of >=, >, <, <=, == and != clauses."""
    if not spec:
        return True
    have = tuple(int(p) for p in version.split(".")[:2])
    for clause in spec.split(","):
        match = re.fullmatch(r"\s*(>=|<=|==|!=|>|<|~=)\s*(\d+)(?:\.(\d+))?(?:\.\*|\.\d+)*\s*", clause)
        if not match:
            continue
        op, want = match.group(1), (int(match.group(2)), int(match.group(3) or 0))
        ok = {">=": have >= want, "~=": have >= want, ">": have > want, "<=": have <= want, "<": have < want,
              "==": have == want, "!=": have != want}[op]
        if not ok:
            return False
    return True


def pip_platforms(platforms: tuple[str, ...] | list[str]) -> list[str]:
    """Platform tags for pip --platform, newest first. pip matches them literally, and e.g. ai-edge-litert's aarch64
    wheels are tagged manylinux_2_27 only: manylinux_2_28 must also list 2_27 ... 2_17 (and manylinux2014)."""
    manylinux: dict[str, int] = {}  # arch -> newest glibc minor
    others: list[str] = []
    for tag in platforms:
        match = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", tag) or re.fullmatch(r"manylinux(2014)_(\w+)", tag)
        if match is None:
            others.append(tag)
            continue
        minor = 17 if match.group(1) == "2014" else int(match.group(1))
        manylinux[match.group(2)] = max(minor, manylinux.get(match.group(2), 0))
    out: list[str] = []
    for arch, top in manylinux.items():
        out += [f"manylinux_2_{minor}_{arch}" for minor in range(top, 16, -1)] + [f"manylinux2014_{arch}"]
    return out + [tag for tag in others if tag not in out]


def pip_target_flags(profile: Any) -> list[str]:
    """`--platform ... --python-version X --implementation cp --only-binary=:all:` for the profile's device."""
    flags: list[str] = []
    for tag in pip_platforms(tuple(profile.pip_platforms)):
        flags += ["--platform", tag]
    return [*flags, "--python-version", str(profile.python), "--implementation", "cp", "--only-binary=:all:"]


def download_dependencies(requirements: Path, constraints: Path | None, profile: Any, dest: Path) -> list[str]:
    """`pip download` the device's wheels of `requirements` into dest; the file names downloaded."""
    before = {p.name for p in dest.glob("*.whl")}
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "-d", str(dest),
               *pip_target_flags(profile), "-r", str(requirements)]
    if constraints is not None:
        command += ["-c", str(constraints)]
    run_pip(command, f"download the {profile.name} wheels (needs the package index)")
    return sorted({p.name for p in dest.glob("*.whl")} - before)
