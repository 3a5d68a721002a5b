"""`edgecls deploy`: a self-contained bundle that installs a run's artifact on one device profile.

    BUNDLE/
      README.md                 what is inside, how to install, check and watch it
      bundle.json               manifest: run, profile, artifact, validation summary, sha256 of every file
      install.sh                Raspberry Pi OS / Debian: apt packages, a venv, the wheels, the systemd unit
      edgecls-camera.service    runs `edgecls camera --serve` at boot (paths for the default prefix)
      requirements.txt          runtime dependencies only (never TensorFlow), read from edgecls' own metadata
      constraints-picamera2.txt numpy<2 pins for a venv that sees apt's python3-picamera2 (raspberrypi/picamera2#1088)
      model/                    the validated artifact, meta.json, labels.txt, export_report.json
      wheels/                   edgecls as a wheel (+ the dependency wheels for the device with offline=True)

The artifact comes from RUN/export/<target>-<precision>/ as chosen by the profile (or overridden); edgecls
itself is built into a wheel from its source tree (or repacked from the installed files), so the bundle
installs without access to the machine that made it. The folder is written atomically.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgecls.errors import ConfigError, ExportError, ModelError, suggest
from edgecls.fsutil import atomic_dir, write_json
from edgecls.meta import META_FILENAME, ModelMeta

MODEL_DIR = "model"
WHEEL_DIR = "wheels"
SERVICE_NAME = "edgecls-camera"
DEFAULT_PREFIX = "/opt/edgecls"
DEFAULT_SERVE = "0.0.0.0:8080"
PICAMERA2_CONSTRAINTS = ("numpy<2", "opencv-python-headless<4.12")  # apt's simplejpeg is built against numpy 1.24
RUNTIME_EXTRA = {"tflite": "pi", "edgetpu": "pi", "openvino": "intel"}  # pyproject extra each target installs
FORBIDDEN = ("tensorflow", "tensorflow-cpu", "tf-keras", "keras", "torch")
PRECISION_FLAGS = {"int8": "--int8", "fp16": "--fp16", "fp32": "", "dynamic": "--precision dynamic"}
PIP_TIMEOUT_S = 600


# ----------------------------------------------------------------------------------------------- choice


def export_command(run: Path, target: str, precision: str) -> str:
    flag = PRECISION_FLAGS.get(precision, f"--precision {precision}")
    return " ".join(part for part in ("edgecls export", str(run), flag, f"--target {target}") if part)


def find_artifact(run: Path, target: str, precision: str) -> tuple[Path, str, dict[str, Any]]:
    """(export folder, artifact file name, export report) for RUN/export/<target>-<precision>/."""
    folder = run / "export" / f"{target}-{precision}"
    command = export_command(run, target, precision)
    if not folder.is_dir():
        made = sorted(p.name for p in (run / "export").glob("*-*") if p.is_dir()) if (run / "export").is_dir() else []
        have = f" (it has: {', '.join(made)})" if made else ""
        raise ModelError(f"run '{run}' has no validated {target} {precision} export at '{folder}'{have}", f"Make it first: {command}")
    report_path = folder / "export_report.json"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read '{report_path}': {exc}", f"Re-export: {command}") from exc
    name = str(report.get("artifact") or "")
    if target == "edgetpu" and not name.endswith("_edgetpu.tflite"):
        compiled = sorted(folder.glob("*_edgetpu.tflite"))
        if not compiled:
            raise ExportError(
                f"'{folder}' holds only the uncompiled INT8 model: edgetpu_compiler did not run, so nothing would run on the Edge TPU",
                f"Install edgetpu_compiler on an x86-64 Debian host (coral.ai/docs/edgetpu/compiler) and re-run: {command}",
            )
        name = compiled[0].name
    if not name or not (folder / name).is_file():
        raise ModelError(f"'{folder}' lacks its artifact '{name or '?'}'", f"Re-export: {command}")
    if not (folder / META_FILENAME).is_file():
        raise ModelError(f"'{folder}' lacks {META_FILENAME}", f"Re-export: {command}")
    return folder, name, report


def _load_profile(profile: Any) -> Any:
    if isinstance(profile, (str, Path)):
        from edgecls.devices import load_profile

        return load_profile(profile)
    return profile


# ----------------------------------------------------------------------------------------------- wheel


def source_tree() -> Path | None:
    """The project folder edgecls was imported from (pyproject.toml naming edgecls beside the package), if any."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and re.search(r'(?m)^name\s*=\s*"edgecls"', pyproject.read_text(encoding="utf-8")):
        return root
    return None


def build_wheel(dest: Path) -> Path:
    """edgecls as a py3-none-any wheel in `dest`: built from the source tree, else repacked from the installation."""
    dest.mkdir(parents=True, exist_ok=True)
    root = source_tree()
    return _wheel_from_source(root, dest) if root is not None else _wheel_from_installed(dest)


def _wheel_from_source(root: Path, dest: Path) -> Path:
    """`pip wheel --no-deps` on a clean copy of the project (no stale build/ folder, the repo left untouched)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    with tempfile.TemporaryDirectory(prefix="edgecls-wheel-") as tmp:
        copy = Path(tmp) / "src"
        copy.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "setup.cfg", "setup.py"):
            if (root / name).is_file():
                shutil.copy2(root / name, copy / name)
        shutil.copytree(root / "edgecls", copy / "edgecls", ignore=ignore)
        out = Path(tmp) / "out"
        # with setuptools here, build with it (no package index needed); else pip fetches the build backend
        isolation = ["--no-build-isolation"] if _has_module("setuptools") else []
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "--disable-pip-version-check", "-q",
                   "-w", str(out), str(copy)]
        proc = _run(command, "build the edgecls wheel")
        wheels = sorted(out.glob("edgecls-*.whl"))
        if not wheels:
            raise ExportError(f"pip wheel made no edgecls wheel: {proc.stderr.strip()[-500:]}", "Run it by hand: pip wheel --no-deps . -w wheels")
        target = dest / wheels[0].name
        shutil.copy2(wheels[0], target)
    return target


def _wheel_from_installed(dest: Path) -> Path:
    """Repack an installed (non-editable) edgecls from its RECORD into a wheel (no source tree needed)."""
    from importlib import metadata

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


def wheel_metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        return whl.read(name).decode("utf-8")


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
        raise ExportError(f"the runtime requirements would pull in {', '.join(heavy)}", "Keep TensorFlow in the train extra only (pyproject.toml)")
    return out


def requires_python(metadata_text: str) -> str | None:
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


# ----------------------------------------------------------------------------------------------- pip for the device


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
    _run(command, f"download the {profile.name} wheels (needs the package index)")
    return sorted({p.name for p in dest.glob("*.whl")} - before)


def _run(command: list[str], what: str) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"could not {what}: pip ran past {PIP_TIMEOUT_S} s", "Check the network or the package index") from exc
    if proc.returncode != 0:
        tail = " | ".join(line for line in (proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise ExportError(f"could not {what}: {tail}", f"Run it by hand to see more: {shlex.join(command)}")
    return proc


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ----------------------------------------------------------------------------------------------- the bundle


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
        (tmp / "constraints-picamera2.txt").write_text(
            "# Only with apt's python3-picamera2 (install.sh --picamera2): its simplejpeg is built against numpy 1.24,\n"
            "# so the venv keeps numpy 1.x (raspberrypi/picamera2#1088, #1211); opencv-python-headless >= 4.12 needs numpy 2.\n"
            + "\n".join(PICAMERA2_CONSTRAINTS) + "\n", encoding="utf-8")
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
            "validation": _validation_summary(report),
            "wheel": f"{WHEEL_DIR}/{wheel.name}", "requires_python": needs,
            "requirements": requirements, "picamera2": use_picamera2, "offline": offline, "dependency_wheels": downloaded,
            "pip_target_flags": pip_target_flags(profile),
            "service": {"name": f"{SERVICE_NAME}.service", "exec": [f"{DEFAULT_PREFIX}/venv/bin/edgecls", *exec_args], "serve": serve},
            "files": {},
        }
        manifest["files"] = {
            p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(tmp.rglob("*")) if p.is_file()
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


def _profile_dict(profile: Any) -> dict[str, Any]:
    data = asdict(profile) if is_dataclass(profile) else dict(vars(profile))
    data.pop("path", None)  # where the profile file lay on the machine that made the bundle
    return json.loads(json.dumps(data, default=str))


def _validation_summary(report: dict[str, Any]) -> dict[str, Any]:
    validation = report.get("validation") or {}
    keys = ("passed", "top1_agreement", "reference_accuracy", "artifact_accuracy", "accuracy_drop", "images", "max_abs_diff")
    return {key: validation[key] for key in keys if key in validation}


def _quality(v: dict[str, Any]) -> str:
    """One sentence from the export validation: agreement and accuracy on held-out images."""
    parts = []
    if "top1_agreement" in v:
        parts.append(f"top-1 agreement with the Keras model {v['top1_agreement']:.4f}")
    if "reference_accuracy" in v and "artifact_accuracy" in v:
        parts.append(f"accuracy {v['reference_accuracy']:.4f} -> {v['artifact_accuracy']:.4f}")
    if "max_abs_diff" in v:
        parts.append(f"max |diff| {v['max_abs_diff']:.2g}")
    text = ", ".join(parts) or "see model/export_report.json"
    return text + (f" on {v['images']} held-out images" if "images" in v else "")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------- file texts


def render_requirements(c: dict[str, Any]) -> str:
    p = c["profile"]
    head = [
        f"# Runtime dependencies of edgecls for {p.name} ({c['target']} {c['precision']} on {c['backend_device']}); no TensorFlow.",
        f"# edgecls itself is {WHEEL_DIR}/{c['wheel']}; install.sh installs both into a venv.",
        f"# Check the device's wheels exist: pip download -d /tmp/w {shlex.join(pip_target_flags(p))} -r requirements.txt",
    ]
    return "\n".join([*head, *c["requirements"]]) + "\n"


def render_service(c: dict[str, Any]) -> str:
    p = c["profile"]
    exec_start = shlex.join([f"{DEFAULT_PREFIX}/venv/bin/edgecls", *c["exec_args"]])
    return f"""# edgecls camera on {p.title}: classifies the camera and serves a live view at http://HOST:{c['serve'].rsplit(':', 1)[-1]}/
# Installed by install.sh (which rewrites {DEFAULT_PREFIX} for --prefix and keeps only the groups this system has).
[Unit]
Description=edgecls camera ({c['target']} {c['precision']}, {c['backend_device']}) with a live view
After=network.target
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStart={exec_start}
WorkingDirectory={DEFAULT_PREFIX}
Environment=PYTHONUNBUFFERED=1
DynamicUser=yes
SupplementaryGroups=video render plugdev
StateDirectory=edgecls
Restart=on-failure
RestartSec=5
# edgecls camera exits 143 on SIGTERM (systemctl stop) after writing its report
SuccessExitStatus=143 130

[Install]
WantedBy=multi-user.target
"""


def render_install(c: dict[str, Any]) -> str:
    p = c["profile"]
    values = {
        "@TITLE@": p.title, "@PROFILE@": p.name, "@ARCH@": p.arch, "@PYTHON@": str(p.python),
        "@PICAMERA2@": "1" if c["picamera2"] else "0", "@CORAL@": "1" if c["backend_device"] == "coral" else "0",
        "@PREFIX@": DEFAULT_PREFIX, "@SERVICE@": SERVICE_NAME, "@WHEEL@": c["wheel"], "@ARTIFACT@": c["artifact"],
    }
    text = INSTALL_TEMPLATE
    for key, value in values.items():
        text = text.replace(key, value)
    return text


INSTALL_TEMPLATE = r"""#!/usr/bin/env bash
# Install this edgecls bundle on @TITLE@.
# Raspberry Pi OS / Debian bookworm: apt packages, a venv with the runtime (no TensorFlow), edgecls from
# wheels/, the model, and the @SERVICE@ systemd service (edgecls camera --serve at boot). Re-run to upgrade.
#
#   sudo ./install.sh                 install to @PREFIX@ and start the service
#   options: --prefix DIR   --picamera2 | --no-picamera2   --no-apt   --no-service   --offline | --online
#   --picamera2: apt's python3-picamera2 and a venv with --system-site-packages (numpy kept < 2 for it)
#   --offline: install only from wheels/ (made by 'edgecls deploy --offline'); default when wheels/ has them
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROFILE="@PROFILE@"
PROFILE_ARCH="@ARCH@"
PROFILE_PYTHON="@PYTHON@"
DEFAULT_PREFIX="@PREFIX@"
PREFIX="$DEFAULT_PREFIX"
PICAMERA2=@PICAMERA2@
CORAL=@CORAL@
APT=1
SERVICE=1
OFFLINE=auto

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; PREFIX="$2"; shift 2 ;;
    --prefix=*) PREFIX="${1#*=}"; shift ;;
    --picamera2) PICAMERA2=1; shift ;;
    --no-picamera2) PICAMERA2=0; shift ;;
    --no-apt) APT=0; shift ;;
    --no-service) SERVICE=0; shift ;;
    --offline) OFFLINE=1; shift ;;
    --online) OFFLINE=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done
case "$PREFIX" in /*) ;; *) PREFIX="$(pwd)/$PREFIX" ;; esac

SUDO=""
if [ "$(id -u)" -ne 0 ] && { [ "$APT" = 1 ] || [ "$SERVICE" = 1 ] || [ ! -w "$(dirname "$PREFIX")" ]; }; then
  command -v sudo >/dev/null 2>&1 || die "run as root, or pass --no-apt --no-service --prefix DIR"
  SUDO=sudo
fi

machine="$(uname -m)"
[ "$machine" = "$PROFILE_ARCH" ] || warn "this bundle was made for $PROFILE_ARCH ($PROFILE), this machine is $machine"

wheel_count=$(find "$HERE/wheels" -maxdepth 1 -name '*.whl' | wc -l)
if [ "$OFFLINE" = auto ]; then
  if [ "$wheel_count" -gt 1 ]; then OFFLINE=1; else OFFLINE=0; fi
fi

# 1. System packages
if [ "$APT" = 1 ]; then
  packages=(python3 python3-venv python3-pip)
  [ "$PICAMERA2" = 1 ] && packages+=(python3-picamera2)
  if [ "$CORAL" = 1 ]; then
    if ! apt-cache show libedgetpu1-std >/dev/null 2>&1; then
      say "adding Coral's apt repository (packages.cloud.google.com)"
      $SUDO apt-get install -y curl gnupg ca-certificates
      curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | $SUDO gpg --dearmor --yes -o /usr/share/keyrings/coral-edgetpu.gpg
      echo "deb [signed-by=/usr/share/keyrings/coral-edgetpu.gpg] https://packages.cloud.google.com/apt coral-edgetpu-stable main" \
        | $SUDO tee /etc/apt/sources.list.d/coral-edgetpu.list >/dev/null
    fi
    packages+=(libedgetpu1-std)
  fi
  say "apt-get install ${packages[*]}"
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "${packages[@]}"
fi

# 2. Python
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (apt-get install python3 python3-venv)"
have_python="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$have_python" != "$PROFILE_PYTHON" ]; then
  [ "$OFFLINE" = 1 ] && die "the wheels in wheels/ are for Python $PROFILE_PYTHON, this system has $have_python (install with --online)"
  warn "profile $PROFILE expects Python $PROFILE_PYTHON, this system has $have_python"
fi

# 3. Files and venv
say "installing to $PREFIX"
$SUDO mkdir -p "$PREFIX"
if [ "$(cd "$PREFIX" && pwd -P)" != "$(cd "$HERE" && pwd -P)" ]; then
  $SUDO rm -rf "$PREFIX/model" "$PREFIX/wheels"
  $SUDO cp -R "$HERE/model" "$HERE/wheels" "$PREFIX/"
  $SUDO cp "$HERE"/requirements.txt "$HERE"/constraints-picamera2.txt "$HERE"/bundle.json "$HERE"/README.md "$HERE"/@SERVICE@.service "$PREFIX/"
fi
venv_flags=()
[ "$PICAMERA2" = 1 ] && venv_flags+=(--system-site-packages)
if [ -x "$PREFIX/venv/bin/python" ] && [ "$PICAMERA2" = 1 ] && ! grep -q 'include-system-site-packages = true' "$PREFIX/venv/pyvenv.cfg"; then
  $SUDO rm -rf "$PREFIX/venv"  # a venv made without --system-site-packages cannot see picamera2
fi
[ -x "$PREFIX/venv/bin/python" ] || $SUDO "$PYTHON" -m venv "${venv_flags[@]}" "$PREFIX/venv"
pip_flags=(--disable-pip-version-check)
[ "$OFFLINE" = 1 ] && pip_flags+=(--no-index --find-links "$PREFIX/wheels")
[ "$PICAMERA2" = 1 ] && pip_flags+=(-c "$PREFIX/constraints-picamera2.txt")
say "pip install -r requirements.txt $( [ "$OFFLINE" = 1 ] && echo '(offline, from wheels/)' )"
$SUDO "$PREFIX/venv/bin/python" -m pip install "${pip_flags[@]}" -r "$PREFIX/requirements.txt"
$SUDO "$PREFIX/venv/bin/python" -m pip install --disable-pip-version-check --no-index --no-deps --force-reinstall "$PREFIX/wheels/@WHEEL@"
say "checking that the model loads"
"$PREFIX/venv/bin/python" -c "
import sys
from edgecls.runtime import load_backend
backend = load_backend(sys.argv[1], device=sys.argv[2])
print('model ok:', backend.name, backend.precision_ran, len(backend.meta.labels), 'classes',
      '(TensorFlow imported!)' if 'tensorflow' in sys.modules else '')
" "$PREFIX/@ARTIFACT@" "$([ "$CORAL" = 1 ] && echo coral || echo cpu)" || warn "the model did not load: see 'edgecls doctor --device $PROFILE'"

# 4. Service
if [ "$SERVICE" = 1 ]; then
  unit=/etc/systemd/system/@SERVICE@.service
  groups=""
  for group in video render plugdev; do getent group "$group" >/dev/null && groups="$groups $group"; done
  sed -e "s#$DEFAULT_PREFIX#$PREFIX#g" -e "s#^SupplementaryGroups=.*#SupplementaryGroups=${groups# }#" "$HERE/@SERVICE@.service" | $SUDO tee "$unit" >/dev/null
  $SUDO systemctl daemon-reload
  $SUDO systemctl enable --now @SERVICE@.service
  $SUDO systemctl restart @SERVICE@.service
  say "service @SERVICE@ running: journalctl -u @SERVICE@ -f"
fi
say "done. Check the device: $PREFIX/venv/bin/edgecls doctor --device $PROFILE"
"""


def render_readme(c: dict[str, Any]) -> str:
    p, meta = c["profile"], c["meta"]
    validation = _validation_summary(c["report"])
    port = c["serve"].rsplit(":", 1)[-1]
    quality = _quality(validation)
    notes = "\n".join(f"- {note}" for note in p.setup_notes) or "- none"
    camera = c["camera"]
    picam = ("installs apt's `python3-picamera2` and makes the venv with `--system-site-packages`, keeping numpy < 2 "
             "(`constraints-picamera2.txt`: apt's simplejpeg is built against numpy 1.24, raspberrypi/picamera2#1088)"
             if c["picamera2"] else "does not install picamera2 (`--picamera2` adds it)")
    return f"""# edgecls bundle: {meta.architecture} for {p.title}

Made by `edgecls deploy` from run `{c['run']}`: the validated **{c['target']} {c['precision']}** artifact
`{c['artifact']}` ({meta.input_size[0]}x{meta.input_size[1]} px, {len(meta.labels)} classes), run by
{'LiteRT' if c['target'] in ('tflite', 'edgetpu') else 'OpenVINO'} on **{c['backend_device']}**. Validation at export: {quality}.

| file | what |
|---|---|
| `{c['artifact']}`, `{MODEL_DIR}/meta.json`, `{MODEL_DIR}/labels.txt` | the model, its input contract and labels |
| `{WHEEL_DIR}/{c['wheel']}` | edgecls itself (installs offline; TensorFlow is only in its `train` extra) |
| `requirements.txt` | runtime dependencies only: {', '.join(c['requirements'])} |
| `install.sh` | apt packages, a venv, the wheels, the systemd service |
| `{SERVICE_NAME}.service` | `edgecls camera --serve {c['serve']}` at boot, restarted on failure |
| `bundle.json` | manifest with the sha256 of every file |

## Install

```bash
scp -r {c['name']} pi@raspberrypi.local:   # or a USB stick
ssh pi@raspberrypi.local
cd {c['name']} && sudo ./install.sh        # to {DEFAULT_PREFIX}; --help for options
```

`install.sh` installs `python3-venv`{', `libedgetpu1-std` (Coral apt repository)' if c['backend_device'] == 'coral' else ''}, {picam},
creates `{DEFAULT_PREFIX}/venv`, installs `requirements.txt` from PyPI (or, for a bundle made with
`edgecls deploy --offline`, only from `{WHEEL_DIR}/`), installs edgecls from `{WHEEL_DIR}/`, checks that the
model loads, and enables `{SERVICE_NAME}.service`. Without root: `./install.sh --no-apt --no-service --prefix ~/edgecls`.

## Check and watch

```bash
{DEFAULT_PREFIX}/venv/bin/edgecls doctor --device {p.name}     # Python, runtimes, Edge TPU + USB speed, camera, governor
systemctl status {SERVICE_NAME}; journalctl -u {SERVICE_NAME} -f
# live view: http://<device>:{port}/     report: /var/lib/edgecls/camera_report.json
{DEFAULT_PREFIX}/venv/bin/edgecls camera --model {DEFAULT_PREFIX}/{c['artifact']} --device clip.mp4 --frames 100 --headless
```

The service runs `edgecls {shlex.join(c['exec_args'])}` (camera `{camera.get('source', '0')}`
{camera.get('width', '?')}x{camera.get('height', '?')}). Edit `/etc/systemd/system/{SERVICE_NAME}.service`, then
`sudo systemctl daemon-reload && sudo systemctl restart {SERVICE_NAME}`.

## Device notes ({p.name})

{notes}

The device's wheels resolve with: `pip download -d /tmp/w {shlex.join(pip_target_flags(p))} -r requirements.txt`{' -c constraints-picamera2.txt' if c['picamera2'] else ''}
"""


__all__ = ["build_bundle", "build_wheel", "find_artifact", "pip_platforms", "pip_target_flags", "runtime_requirements"]
