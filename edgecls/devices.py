"""Device profiles (devices/*.toml, shipped as edgecls/profiles): preferred artifact, runtime settings,
camera defaults, published reference latencies. Read by `bench --device`, `deploy --device` and `doctor --device`.

Profiles are data, never code: every field is checked when the profile is loaded (names, architectures and
platform tags against an allowlist, free text for one printable line), because `edgecls deploy` writes them
into install.sh, a systemd unit and README.md that users run as root. A bad field is one line naming it.
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgecls.errors import ConfigError, suggest
from edgecls.export.formats import FORMATS, PRECISIONS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


@dataclass(frozen=True)
class Reference:
    """A published or measured latency for one model on this device."""

    model: str
    input_size: int
    precision: str
    latency_ms: float
    source: str
    tolerance: float = 0.1  # fraction: 0.1 = within 10%
    target: str | None = None
    note: str = ""


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    title: str
    arch: str
    preferred_target: str
    precision: str
    backend_device: str
    threads: int
    python: str = "3.11"
    qemu_cpu: str | None = None
    camera: dict[str, Any] = field(default_factory=dict)
    reference: tuple[Reference, ...] = ()
    setup_notes: tuple[str, ...] = ()
    pip_platforms: tuple[str, ...] = ()
    path: Path | None = None

    def reference_for(self, model: str, input_size: int, precision: str, target: str | None = None) -> Reference | None:
        for ref in self.reference:
            if (ref.model, ref.input_size, ref.precision) == (model, input_size, precision) and ref.target in (None, target):
                return ref
        return None


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A profile by name (pi5, coral-usb-pi, intel-cpu, ...) or from a TOML file path, with every field checked."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        names = list_profiles()
        raise ConfigError(
            f"unknown device profile {_show(str(name_or_path))}.{suggest(str(name_or_path), names)}",
            f"Use one of {', '.join(names)}, or a path to a .toml profile",
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"device profile {_show(str(path))} is malformed: {exc}", "Fix the TOML against devices/pi5.toml") from exc
    return profile_from_dict(data, path)


def profile_from_dict(data: dict[str, Any], path: Path | None = None) -> DeviceProfile:
    """A DeviceProfile from parsed TOML data; ConfigError naming the first bad field and its value."""
    where = f"device profile {_show(str(path))}" if path is not None else "device profile"
    unknown = sorted(set(data) - set(FIELDS) - {"reference"})
    if unknown:
        raise ConfigError(f"{where} has an unknown field {_show(unknown[0])}.{suggest(unknown[0], FIELDS)}",
                          f"Use only {', '.join(FIELDS)} and [[reference]]")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise ConfigError(f"{where} lacks the field '{missing[0]}'", "Add it (see devices/pi5.toml)")
    values: dict[str, Any] = {}
    for key, check in FIELDS.items():
        if key in data:
            values[key] = check(data[key], f"{where}: field '{key}'")
    refs = data.get("reference", [])
    if not isinstance(refs, list):
        raise ConfigError(f"{where}: field 'reference' = {_show(refs)} is not a list of tables", "Write each as [[reference]]")
    references = tuple(_reference(ref, f"{where}: [[reference]] {i + 1}") for i, ref in enumerate(refs))
    return DeviceProfile(**values, reference=references, path=path)


def checked_profile(profile: DeviceProfile) -> DeviceProfile:
    """`profile` (made in Python, not read from a file) with every field checked as load_profile checks a file."""
    data: dict[str, Any] = {}
    for item in fields(DeviceProfile):
        value = getattr(profile, item.name)
        if item.name not in ("path", "reference") and value is not None:
            data[item.name] = list(value) if isinstance(value, tuple) else value
    data["reference"] = [{k: v for k, v in asdict(ref).items() if v is not None} for ref in profile.reference]
    return profile_from_dict(data, profile.path)


def _show(value: Any) -> str:
    """A value for a one-line error: repr() shows newlines and control characters as escapes."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _bad(what: str, value: Any, rule: str) -> ConfigError:
    return ConfigError(f"{what} = {_show(value)} is not allowed: {rule}", "Fix the value in the profile (see devices/pi5.toml)")


def _pattern(regex: str, rule: str) -> Any:
    """A checker accepting strings that match `regex` in full."""
    compiled = re.compile(regex)

    def check(value: Any, what: str) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise _bad(what, value, rule)
        return value

    return check


def _choice(choices: tuple[str, ...]) -> Any:
    def check(value: Any, what: str) -> str:
        if value not in choices:
            raise _bad(what, value, f"use one of {', '.join(choices)}")
        return str(value)

    return check


def _text(limit: int, empty: bool = False) -> Any:
    """One printable line (no newline, tab or other control character) of at most `limit` characters."""
    def check(value: Any, what: str) -> str:
        if not isinstance(value, str) or not (empty or value.strip()) or len(value) > limit or CONTROL_CHARS.search(value):
            raise _bad(what, value, f"use one line of text (no newline or control character), at most {limit} characters")
        return value

    return check


def _integer(low: int, high: int) -> Any:
    def check(value: Any, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _bad(what, value, f"use a whole number from {low} to {high}")
        return value

    return check


def _number(low: float, high: float) -> Any:
    def check(value: Any, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low < value <= high:
            raise _bad(what, value, f"use a number above {low:g} and at most {high:g}")
        return value

    return check


def _list_of(item: Any, limit: int) -> Any:
    def check(value: Any, what: str) -> tuple[Any, ...]:
        if not isinstance(value, list) or len(value) > limit:
            raise _bad(what, value, f"use a list of at most {limit} items")
        return tuple(item(entry, what) for entry in value)

    return check


def _optional(check_value: Any) -> Any:
    return lambda value, what: None if value is None else check_value(value, what)


def _camera(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(what, value, "use a [camera] table")
    unknown = sorted(set(value) - set(CAMERA_FIELDS))
    if unknown:
        raise ConfigError(f"{what} has an unknown key {_show(unknown[0])}", f"Use only {', '.join(CAMERA_FIELDS)}")
    return {key: CAMERA_FIELDS[key](entry, f"{what[:-1]}.{key}'") for key, entry in value.items()}


def _camera_source(value: Any, what: str) -> str:
    """picamera2, a V4L2 index, a device or file path, or a stream URL: one line (it is quoted wherever it goes)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    try:
        return _text(2048)(value, what)
    except ConfigError:  # the message shows the value: never a stream password in it
        raise _bad(what, URL_PASSWORD.sub(r"\1***@", value) if isinstance(value, str) else value,
                   "use one line of text (no newline or control character), at most 2048 characters") from None


def _reference(value: Any, what: str) -> Reference:
    if not isinstance(value, dict):
        raise _bad(what, value, "use a [[reference]] table")
    unknown = sorted(set(value) - set(REFERENCE_FIELDS))
    if unknown:
        raise ConfigError(f"{what} has an unknown key {_show(unknown[0])}", f"Use only {', '.join(REFERENCE_FIELDS)}")
    missing = [key for key in ("model", "input_size", "precision", "latency_ms", "source") if key not in value]
    if missing:
        raise ConfigError(f"{what} lacks '{missing[0]}'", "Add it (see devices/coral-usb-pi.toml)")
    return Reference(**{key: REFERENCE_FIELDS[key](entry, f"{what} '{key}'") for key, entry in value.items()})


CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
URL_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^@/]*@")  # scheme://user:PASSWORD@host
NAME_RULE = "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
TARGETS = tuple(FORMATS)
FIELDS: dict[str, Any] = {
    "name": _pattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", NAME_RULE),
    "title": _text(200),
    "arch": _choice(("aarch64", "armv7l", "armv6l", "x86_64")),
    "preferred_target": _choice(TARGETS),
    "precision": _choice(PRECISIONS),
    "backend_device": _pattern(r"[A-Za-z][A-Za-z0-9:.,_-]{0,63}", "use a device name such as cpu, coral, GPU or AUTO"),
    "threads": _integer(1, 256),
    "python": _pattern(r"3\.\d{1,2}", "use MAJOR.MINOR such as 3.11"),
    "qemu_cpu": _optional(_pattern(r"[a-z0-9][a-z0-9.-]{0,31}", "use a QEMU CPU model such as cortex-a76")),
    "camera": _camera,
    "setup_notes": _list_of(_text(1000), 50),
    "pip_platforms": _list_of(_pattern(r"[a-z0-9_]{1,64}", "use pip platform tags such as manylinux_2_28_aarch64"), 20),
}
REQUIRED = ("name", "title", "arch", "preferred_target", "precision", "backend_device", "threads")
CAMERA_FIELDS: dict[str, Any] = {"source": _camera_source, "width": _integer(1, 16384), "height": _integer(1, 16384),
                                 "fps": _number(0, 1000)}
REFERENCE_FIELDS: dict[str, Any] = {
    "model": _pattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", NAME_RULE), "input_size": _integer(1, 16384),
    "precision": _choice(PRECISIONS), "latency_ms": _number(0, 1e7), "source": _text(500), "tolerance": _number(0, 100),
    "target": _optional(_choice(TARGETS)), "note": _text(1000, empty=True),
}


def compare(measured_ms: float, ref: Reference) -> str:
    """'within 10% of reference (2.6 ms)' or '3.1x slower than reference (...): check ...'."""
    ratio = measured_ms / ref.latency_ms
    if abs(ratio - 1) <= ref.tolerance:
        return f"within {ref.tolerance:.0%} of reference ({ref.latency_ms:g} ms)"
    if ratio > 1:
        return (f"{ratio:.1f}x slower than reference ({ref.latency_ms:g} ms, {ref.source}): check the CPU governor, "
                "throttling (vcgencmd get_throttled), USB speed for a Coral, and thread count")
    return f"{1 / ratio:.1f}x faster than reference ({ref.latency_ms:g} ms)"
