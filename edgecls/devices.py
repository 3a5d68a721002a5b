"""Device profiles (devices/*.toml, shipped as edgecls/profiles): preferred artifact, runtime settings,
camera defaults, published reference latencies. Read by `bench`, `deploy` and `camera --device-profile`."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecls.errors import ConfigError, suggest

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
    """A profile by name (pi5, coral-usb-pi, intel-cpu, ...) or from a TOML file path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        names = list_profiles()
        raise ConfigError(
            f"unknown device profile '{name_or_path}'.{suggest(str(name_or_path), names)}",
            f"Use one of {', '.join(names)}, or a path to a .toml profile",
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        references = tuple(Reference(**ref) for ref in data.pop("reference", []))
        for key in ("setup_notes", "pip_platforms"):
            data[key] = tuple(data.get(key, ()))
        return DeviceProfile(**data, reference=references, path=path)
    except (tomllib.TOMLDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"device profile '{path}' is malformed: {exc}", "Fix the TOML against devices/pi5.toml") from exc


def compare(measured_ms: float, ref: Reference) -> str:
    """'within 10% of reference (2.6 ms)' or '3.1x slower than reference (...): check ...'."""
    ratio = measured_ms / ref.latency_ms
    if abs(ratio - 1) <= ref.tolerance:
        return f"within {ref.tolerance:.0%} of reference ({ref.latency_ms:g} ms)"
    if ratio > 1:
        return (f"{ratio:.1f}x slower than reference ({ref.latency_ms:g} ms, {ref.source}): check the CPU governor, "
                "throttling (vcgencmd get_throttled), USB speed for a Coral, and thread count")
    return f"{1 / ratio:.1f}x faster than reference ({ref.latency_ms:g} ms)"
