"""Assembling the bundle folder, atomically: the artifact, edgecls' wheel, requirements, install.sh, the systemd unit,
README.md and bundle.json (a manifest with the sha256 of every file)."""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgecls.deploy.artifact import find_artifact, validation_summary
from edgecls.deploy.install_script import render_install
from edgecls.deploy.layout import DEFAULT_PREFIX, DEFAULT_SERVE, EDGECLS_BIN, MODEL_DIR, SERVICE_NAME, WHEEL_DIR
from edgecls.deploy.requirements import (
    RUNTIME_EXTRA, download_dependencies, pip_target_flags, python_ok, requires_python, runtime_requirements,
)
from edgecls.deploy.templates import render_picamera2_constraints, render_readme, render_requirements, render_service
from edgecls.deploy.wheel import build_wheel, wheel_metadata
from edgecls.errors import ConfigError, ModelError, suggest
from edgecls.fsutil import atomic_dir, write_json
from edgecls.meta import META_FILENAME, ModelMeta


def build_bundle(run: str | Path, profile: Any, out: str | Path, *, target: str | None = None, precision: str | None = None,
                 serve: str = DEFAULT_SERVE, picamera2: bool | None = None, offline: bool = False,
                 overwrite: bool = False) -> dict[str, Any]:
    """Write the bundle for `run` on `profile` (a name such as "pi5", a .toml path or a DeviceProfile) to `out`.

    target/precision: override the profile's preferred_target / precision. picamera2: install apt's
    python3-picamera2 (default: when the profile's camera source is picamera2). offline: also download the
    device's dependency wheels (pip download with the profile's platform tags) so install.sh needs no network.
    Returns the manifest (also written as bundle.json).
    """
    run = Path(run).expanduser()
    if not run.is_dir():
        raise ModelError(f"run folder '{run}' does not exist", "Pass a folder made by 'edgecls train'")
    profile = _load_profile(profile)
    target = target or profile.preferred_target
    precision = precision or profile.precision
    if target not in RUNTIME_EXTRA:
        raise ConfigError(f"deploy cannot bundle target '{target}'.{suggest(target, RUNTIME_EXTRA)}", f"Use one of {', '.join(RUNTIME_EXTRA)}")
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise ConfigError(f"'{out}' already exists", "Pass a new --out path, or --force to replace it")
    folder, artifact_name, report = find_artifact(run, target, precision)
    meta = ModelMeta.load(folder / META_FILENAME)
    backend_device = "coral" if target == "edgetpu" else profile.backend_device
    camera = dict(profile.camera or {})
    use_picamera2 = str(camera.get("source", "")) == "picamera2" if picamera2 is None else picamera2
    if not use_picamera2 and str(camera.get("source", "")) == "picamera2":
        camera["source"] = "0"  # no picamera2 installed: the first V4L2 camera

    with atomic_dir(out, overwrite=overwrite) as tmp:
        wheel = build_wheel(tmp / WHEEL_DIR)
        metadata_text = wheel_metadata(wheel)
        needs = requires_python(metadata_text)
        if not python_ok(needs, str(profile.python)):
            raise ConfigError(
                f"edgecls needs Python {needs}, and profile '{profile.name}' has Python {profile.python}",
                "Run the artifact with the device's own runtime, or use a newer OS image on it",
            )
        requirements = runtime_requirements(metadata_text, RUNTIME_EXTRA[target])
        model_dir = tmp / MODEL_DIR
        shutil.copytree(folder, model_dir, ignore=shutil.ignore_patterns(".*"))
        (model_dir / "labels.txt").write_text("\n".join(meta.labels) + "\n", encoding="utf-8")
        model_path = f"{MODEL_DIR}/{artifact_name}"
        exec_args = camera_args(model_path, camera, backend_device, profile.threads, serve, DEFAULT_PREFIX)
        context = {
            "profile": profile, "target": target, "precision": precision, "meta": meta, "report": report, "run": run,
            "artifact": model_path, "wheel": wheel.name, "requirements": requirements, "picamera2": use_picamera2,
            "backend_device": backend_device, "serve": serve, "exec_args": exec_args, "camera": camera, "name": out.name,
        }
        (tmp / "requirements.txt").write_text(render_requirements(context), encoding="utf-8")
        (tmp / "constraints-picamera2.txt").write_text(render_picamera2_constraints(), encoding="utf-8")
        downloaded: list[str] = []
        if offline:
            constraints = tmp / "constraints-picamera2.txt" if use_picamera2 else None
            downloaded = download_dependencies(tmp / "requirements.txt", constraints, profile, tmp / WHEEL_DIR)
        (tmp / "install.sh").write_text(render_install(context), encoding="utf-8")
        (tmp / "install.sh").chmod(0o755)
        (tmp / f"{SERVICE_NAME}.service").write_text(render_service(context), encoding="utf-8")
        (tmp / "README.md").write_text(render_readme(context), encoding="utf-8")
        manifest = {
            "bundle_version": 1,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "edgecls": wheel.name.split("-")[1],
            "run": str(run.resolve()),
            "source_export": str(folder.resolve()),
            "device": _profile_dict(profile),
            "target": target, "precision": precision, "backend_device": backend_device,
            "artifact": model_path, "meta": f"{MODEL_DIR}/{META_FILENAME}", "labels": f"{MODEL_DIR}/labels.txt",
            "input_size": list(meta.input_size), "classes": len(meta.labels),
            "validation": validation_summary(report),
            "wheel": f"{WHEEL_DIR}/{wheel.name}", "requires_python": needs,
            "requirements": requirements, "picamera2": use_picamera2, "offline": offline, "dependency_wheels": downloaded,
            "pip_target_flags": pip_target_flags(profile),
            "service": {"name": f"{SERVICE_NAME}.service", "exec": [EDGECLS_BIN, *exec_args], "serve": serve},
            "files": _file_hashes(tmp),
        }
        write_json(tmp / "bundle.json", manifest)
    return {**manifest, "out": str(out)}


def camera_args(model_path: str, camera: dict[str, Any], backend_device: str, threads: int | None, serve: str, prefix: str) -> list[str]:
    """The `edgecls camera` arguments the service runs with (paths under `prefix`)."""
    args = ["camera", "--model", f"{prefix}/{model_path}", "--device", str(camera.get("source", "0")),
            "--backend-device", backend_device, "--serve", serve, "--headless",
            "--report", "/var/lib/edgecls/camera_report.json"]
    if threads:
        args += ["--threads", str(threads)]
    for key in ("width", "height"):
        if camera.get(key):
            args += [f"--{key}", str(camera[key])]
    return args


def _load_profile(profile: Any) -> Any:
    """A DeviceProfile from a name or .toml path; anything else is taken as a profile already."""
    if isinstance(profile, (str, Path)):
        from edgecls.devices import load_profile

        return load_profile(profile)
    return profile


def _profile_dict(profile: Any) -> dict[str, Any]:
    """The profile as plain JSON data for the manifest, without the local path it was read from."""
    data = asdict(profile) if is_dataclass(profile) else dict(vars(profile))
    data.pop("path", None)  # where the profile file lay on the machine that made the bundle
    return json.loads(json.dumps(data, default=str))


def _file_hashes(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under `folder`, keyed by its relative POSIX path, sorted."""
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
