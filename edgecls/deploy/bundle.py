"""Assembling the bundle folder, atomically: the artifact, edgecls' wheel, requirements, install.sh, the systemd unit,
README.md and bundle.json (a manifest with the sha256 of every file)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgecls.deploy.artifact import copy_published_files, export_command, find_artifact, validation_summary
from edgecls.deploy.camera_secret import PASSWORD_FILE as CAMERA_PASSWORD_FILE
from edgecls.deploy.camera_secret import BundleCamera, camera_setting
from edgecls.deploy.imx500 import NETWORK, copy_export, is_imx500
from edgecls.deploy.imx500 import SOURCE as IMX500_SOURCE
from edgecls.deploy.install_script import render_install
from edgecls.deploy.layout import DEFAULT_PREFIX, DEFAULT_SERVE, MODEL_DIR, SERVICE_NAME, STATE_DIR, WHEEL_DIR
from edgecls.deploy.live_view import TOKEN_FILE, live_view_url, parse_serve, write_token
from edgecls.deploy.mqtt import PASSWORD_FILE, BundleMqtt
from edgecls.deploy.requirements import (
    RUNTIME_EXTRA,
    download_dependencies,
    pip_target_flags,
    python_ok,
    requires_python,
    runtime_requirements,
)
from edgecls.deploy.safe_text import check_line
from edgecls.deploy.templates import render_picamera2_constraints, render_readme, render_requirements
from edgecls.deploy.unit import CREDENTIALS_MARK, PREFIX_MARK, render_unit, unit_template
from edgecls.deploy.wheel import build_wheel, wheel_metadata
from edgecls.devices import DeviceProfile, checked_profile, load_profile
from edgecls.errors import ConfigError, ModelError, suggest
from edgecls.fsutil import OUTPUT_MARKER, atomic_dir, check_outputs, write_json
from edgecls.meta import META_FILENAME, ModelMeta
from edgecls.metadata.golden import GOLDEN_FILE


def build_bundle(run: str | Path, profile: Any, out: str | Path, *, target: str | None = None, precision: str | None = None,
                 serve: str = DEFAULT_SERVE, picamera2: bool | None = None, offline: bool = False,
                 overwrite: bool = False, wheel: str | Path | None = None, mqtt: BundleMqtt | None = None,
                 camera: BundleCamera | None = None) -> dict[str, Any]:
    """Write the bundle for `run` on `profile` (a name such as "pi5", a .toml path or a DeviceProfile) to `out`.

    target/precision: override the profile's preferred_target / precision. picamera2: install apt's
    python3-picamera2 (default: when the profile's camera source is picamera2). offline: also download the
    device's dependency wheels (pip download with the profile's platform tags) so install.sh needs no network.
    overwrite: replace an `out` that edgecls made (never the run or a folder holding it). wheel: an edgecls
    wheel already built (else one is built). mqtt: the service's `--mqtt` setting (edgecls.deploy.mqtt.mqtt_setting:
    the password goes into a 0600 file handed over by systemd, never into the unit). camera: the camera source
    (edgecls.deploy.camera_secret.camera_setting; default: the profile's), a stream URL's password moved out of it the same way.
    Returns the manifest (also written as bundle.json) plus `out`,
    `token_file` and `live_view_url` (the page with its token: shown once, kept out of bundle.json).
    """
    run = Path(run).expanduser()
    if not run.is_dir():
        raise ModelError(f"run folder '{run}' does not exist", "Pass a folder made by 'edgecls train'")
    profile = _load_profile(profile)
    parse_serve(serve)
    target = target or profile.preferred_target
    precision = precision or profile.precision
    if target not in RUNTIME_EXTRA:
        raise ConfigError(f"deploy cannot bundle target '{target}'.{suggest(target, RUNTIME_EXTRA)}",
                          f"Use one of {', '.join(RUNTIME_EXTRA)}")
    out = Path(out).expanduser()
    inputs = {"RUN": run, "--device": getattr(profile, "path", None), "wheel": wheel}
    check_outputs({"--out": out}, inputs)
    if os.path.lexists(out) and not overwrite:
        raise ConfigError(f"'{out}' already exists", "Pass a new --out path, or --force to replace it")
    folder, artifact_name, report = find_artifact(run, target, precision)
    meta = ModelMeta.load(folder / META_FILENAME)
    for label in meta.labels:
        check_line(str(label), f"label in '{folder / META_FILENAME}'")
    backend_device = "coral" if target == "edgetpu" else profile.backend_device
    on_sensor = is_imx500(target)  # the AI Camera: packerOut.zip, packaged into rpk/network.rpk on the Pi
    chosen_camera = camera is not None and not camera.from_profile and camera.source not in (None, IMX500_SOURCE)
    if on_sensor and (chosen_camera or picamera2 is False):
        raise ConfigError("an imx500 bundle runs the network on the AI Camera's sensor: its camera is that camera (picamera2)",
                          "Leave out --camera and --no-picamera2, or deploy another target (--target tflite)")
    secret = camera if camera is not None else camera_setting((profile.camera or {}).get("source"))
    camera_table = dict(profile.camera or {})
    if secret.source is not None:
        camera_table["source"] = secret.source  # never a password: that goes into camera-password
    if on_sensor:
        camera_table["source"] = IMX500_SOURCE
    use_picamera2 = on_sensor or (str(camera_table.get("source", "")) == "picamera2" if picamera2 is None else picamera2)
    if not use_picamera2 and str(camera_table.get("source", "")) == "picamera2":
        camera_table["source"] = "0"  # no picamera2 installed: the first V4L2 camera

    with atomic_dir(out, overwrite=overwrite, inputs=inputs, command="deploy") as tmp:
        built = _wheel(tmp / WHEEL_DIR, wheel)
        metadata_text = wheel_metadata(built)
        needs = requires_python(metadata_text)
        if not python_ok(needs, str(profile.python)):
            raise ConfigError(
                f"edgecls needs Python {needs}, and profile '{profile.name}' has Python {profile.python}",
                "Run the artifact with the device's own runtime, or use a newer OS image on it",
            )
        requirements = runtime_requirements(metadata_text, RUNTIME_EXTRA[target])
        model_dir = tmp / MODEL_DIR
        if on_sensor:
            copy_export(folder, model_dir)  # packerOut.zip and its labels; mct_quantized.keras stays on the PC
        else:
            copy_published_files(folder, report, artifact_name, model_dir, export_command(run, target, precision))
        (model_dir / "labels.txt").write_text("\n".join(meta.labels) + "\n", encoding="utf-8")
        model_path = f"{MODEL_DIR}/{artifact_name}"
        service_model = NETWORK if on_sensor else model_path  # the sensor's network: made by install.sh (imx500-package)
        golden = f"{MODEL_DIR}/{GOLDEN_FILE}" if (model_dir / GOLDEN_FILE).is_file() else None  # install.sh's self-test
        token_path, token = write_token(tmp)
        exec_args = [*camera_args(service_model, camera_table, backend_device, profile.threads, serve, DEFAULT_PREFIX, f"%d/{TOKEN_FILE}"),
                     *secret.camera_args("%d")]
        unit_token = f"{CREDENTIALS_MARK}/{TOKEN_FILE}"
        unit_args = [f"{PREFIX_MARK}/venv/bin/edgecls",
                     *camera_args(service_model, camera_table, backend_device, profile.threads, serve, PREFIX_MARK, unit_token),
                     *secret.camera_args(CREDENTIALS_MARK)]
        secret.write_files(tmp)
        if mqtt is not None:
            mqtt.write_files(tmp)
            exec_args += mqtt.camera_args(DEFAULT_PREFIX, "%d")
            unit_args += mqtt.camera_args(PREFIX_MARK, CREDENTIALS_MARK)
        context = {
            "profile": profile, "target": target, "precision": precision, "meta": meta, "report": report, "run": run,
            "artifact": model_path, "golden": golden, "wheel": built.name, "requirements": requirements, "picamera2": use_picamera2,
            "backend_device": backend_device, "serve": serve, "exec_args": exec_args, "camera": camera_table, "name": out.name,
            "unit_args": unit_args, "mqtt": mqtt, "camera_secret": secret, "imx500": on_sensor, "service_model": service_model,
        }
        (tmp / "requirements.txt").write_text(render_requirements(context), encoding="utf-8")
        (tmp / "constraints-picamera2.txt").write_text(render_picamera2_constraints(), encoding="utf-8")
        downloaded: list[str] = []
        if offline:
            constraints = tmp / "constraints-picamera2.txt" if use_picamera2 else None
            downloaded = download_dependencies(tmp / "requirements.txt", constraints, profile, tmp / WHEEL_DIR)
        (tmp / "install.sh").write_text(render_install(context), encoding="utf-8")
        (tmp / "install.sh").chmod(0o755)
        (tmp / f"{SERVICE_NAME}.service").write_text(render_unit(unit_template(context), DEFAULT_PREFIX), encoding="utf-8")
        (tmp / "README.md").write_text(render_readme(context), encoding="utf-8")
        manifest = {
            "bundle_version": 1,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "edgecls": built.name.split("-")[1],
            "run": str(run.resolve()),
            "source_export": str(folder.resolve()),
            "device": _profile_dict(profile, secret.source),
            "target": target, "precision": precision, "backend_device": backend_device,
            "artifact": model_path, "service_model": service_model,
            "meta": f"{MODEL_DIR}/{META_FILENAME}", "labels": f"{MODEL_DIR}/labels.txt", "golden": golden,
            "input_size": list(meta.input_size), "classes": len(meta.labels),
            "validation": validation_summary(report),
            "wheel": f"{WHEEL_DIR}/{built.name}", "requires_python": needs,
            "requirements": requirements, "picamera2": use_picamera2, "offline": offline, "dependency_wheels": downloaded,
            "pip_target_flags": pip_target_flags(profile),
            "service": {"name": f"{SERVICE_NAME}.service", "exec": [f"{DEFAULT_PREFIX}/venv/bin/edgecls", *exec_args],
                        "serve": serve, "token_file": token_path.name, "report": f"{STATE_DIR}/camera_report.json"},
            "mqtt": mqtt.describe() if mqtt is not None else None,
            "camera": secret.describe(),
            "files": _file_hashes(tmp),
        }
        write_json(tmp / "bundle.json", manifest)
    return {**manifest, "out": str(out), "token_file": str(out / TOKEN_FILE), "live_view_url": live_view_url(serve, token)}


def camera_args(model_path: str, camera: dict[str, Any], backend_device: str, threads: int | None, serve: str, prefix: str,
                token_file: str | None = None) -> list[str]:
    """The `edgecls camera` arguments the service runs with (paths under `prefix`; `--opt=value`, so no value can
    pass for an option, whatever it starts with)."""
    args = ["camera", f"--model={prefix}/{model_path}", f"--device={camera.get('source', '0')}",
            f"--backend-device={backend_device}", f"--serve={serve}", "--headless", f"--report={STATE_DIR}/camera_report.json"]
    if token_file:
        args.append(f"--token-file={token_file}")
    if threads:
        args.append(f"--threads={threads}")
    for key in ("width", "height"):
        if camera.get(key):
            args.append(f"--{key}={camera[key]}")
    return args


def _wheel(dest: Path, wheel: str | Path | None) -> Path:
    """edgecls' wheel in `dest`: a copy of `wheel` when given, else built."""
    if wheel is None:
        return build_wheel(dest)
    source = Path(wheel)
    if not (source.is_file() and source.name.startswith("edgecls-") and source.suffix == ".whl"):
        raise ConfigError(f"'{source}' is not an edgecls wheel", "Pass a file named edgecls-*.whl, or no wheel to build one")
    dest.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(source, dest / source.name))


def _load_profile(profile: Any) -> DeviceProfile:
    """A DeviceProfile from a name or .toml path, or a DeviceProfile made in Python: every field checked either way."""
    return load_profile(profile) if isinstance(profile, (str, Path)) else checked_profile(profile)


def _profile_dict(profile: DeviceProfile, camera_source: str | None) -> dict[str, Any]:
    """The profile as plain JSON data for the manifest, without the local path it was read from, its camera source as
    the service gets it (without a password)."""
    data = asdict(profile)
    data.pop("path", None)  # where the profile file lay on the machine that made the bundle
    if camera_source is not None and isinstance(data.get("camera"), dict) and "source" in data["camera"]:
        data["camera"]["source"] = camera_source
    return json.loads(json.dumps(data, default=str))


def _file_hashes(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under `folder`, keyed by its relative POSIX path, sorted. The password files get
    no sha256: bundle.json is world-readable, and a hash of a human password can be guessed offline."""
    secrets = (PASSWORD_FILE, CAMERA_PASSWORD_FILE)
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": None if p.name in secrets else _sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != OUTPUT_MARKER}


def _sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
