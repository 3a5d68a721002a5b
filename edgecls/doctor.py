"""`edgecls doctor`: what this machine offers edgecls, as rows of (check, ok | warn | info, value, fix).

Meant to be run on the target (a Raspberry Pi, a Coral host, an Intel box) after installing a bundle:
Python version, installed runtimes, OpenCV, the Edge TPU library and the Coral's USB link speed, cameras
(/dev/video*, picamera2), the CPU governor, throttling, GPUs. With a device profile (`--device pi5`) the
checks also compare against what that profile needs. TensorFlow is imported only when it is installed
and `list_devices` is on (to list the devices it sees); nothing else here imports a framework.

All paths under /sys, /dev and /proc are read relative to `root`, so tests can fake a machine.
"""
from __future__ import annotations

import ctypes.util
import glob
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

OK, WARN, INFO = "ok", "warn", "info"
RUNTIMES = {  # distribution -> what it runs
    "ai-edge-litert": "TFLite + Edge TPU delegate", "tflite-runtime": "TFLite (legacy)",
    "onnxruntime": "ONNX", "openvino": "OpenVINO IR",
}
TARGET_RUNTIMES = {"tflite": ("ai-edge-litert", "tflite-runtime"), "edgetpu": ("ai-edge-litert", "tflite-runtime"),
                   "openvino": ("openvino",), "onnx": ("onnxruntime",)}
OPENCV = ("opencv-python-headless", "opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless")
CORAL_USB = {("18d1", "9302"): "Coral USB Accelerator", ("1a6e", "089a"): "Coral USB Accelerator (firmware not loaded yet)"}
USB3_MBPS = 5000
GOVERNOR_FIX = "echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"
EDGETPU_FIX = ("sudo apt-get install libedgetpu1-std (Coral apt repository: "
               "https://packages.cloud.google.com/apt coral-edgetpu-stable main; install.sh of a Coral bundle adds it)")
PICAMERA2_FIX = "sudo apt install python3-picamera2, and a venv made with --system-site-packages (install.sh --picamera2 does both)"
IMX500_FIRMWARE = "/lib/firmware/imx500_main.fpk"  # from Raspberry Pi OS' imx500-firmware
IMX500_NETWORK = "/opt/edgecls/rpk/network.rpk"  # where a pi-ai-camera bundle's install.sh packages the network


@dataclass(frozen=True)
class Check:
    """One row of the report."""

    check: str
    status: str  # ok | warn | info
    value: str
    fix: str = ""


def diagnose(list_devices: bool = True, profile: Any = None, root: str | Path = "/", rpk: str | Path | None = None) -> dict[str, Any]:
    """The report: `checks` (rows as dicts), `status` (warn when any row warns), `warnings`, and
    name -> value for every row (what earlier versions returned; scripts read e.g. report["python"]).
    rpk: the AI Camera's network.rpk to check (default: the one install.sh packages beside this venv, or /opt/edgecls's)."""
    profile = _profile(profile)
    rows = run_checks(list_devices=list_devices, profile=profile, root=root, rpk=rpk)
    warnings = sum(row.status == WARN for row in rows)
    report: dict[str, Any] = {row.check: row.value for row in rows}
    report.update({
        "status": WARN if warnings else OK,
        "warnings": warnings,
        "profile": getattr(profile, "name", None),
        "checks": [asdict(row) for row in rows],
    })
    return report


def run_checks(list_devices: bool = True, profile: Any = None, root: str | Path = "/", rpk: str | Path | None = None) -> list[Check]:
    profile = _profile(profile)
    root = Path(root)
    rows: list[Check] = []
    for section in (_python, _platform, _packages, _runtimes, _opencv, _tensorflow_and_gpus, _edgetpu, _coral_devices,
                    _cameras, _governor, _throttling):
        rows.extend(section(profile, root, list_devices))
    rows.extend(_imx500(profile, root, rpk))
    return rows


# ----------------------------------------------------------------------------------------------- helpers


def _profile(profile: Any) -> Any:
    if isinstance(profile, (str, Path)):
        from edgecls.devices import load_profile

        return load_profile(profile)
    return profile


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def _under(root: Path, absolute: str) -> Path:
    return root / absolute.lstrip("/")


# ----------------------------------------------------------------------------------------------- sections


def _python(profile: Any, root: Path, list_devices: bool) -> list[Check]:
    version = platform.python_version()
    have = sys.version_info[:2]
    rows = []
    if have < (3, 10):
        rows.append(Check("python", WARN, version, "edgecls needs Python >= 3.10 (Raspberry Pi OS bookworm has 3.11)"))
    elif profile is not None and f"{have[0]}.{have[1]}" != str(profile.python):
        rows.append(Check("python", WARN, version, f"profile {profile.name} expects Python {profile.python}: "
                                                   "a bundle made with --offline carries wheels for that version only"))
    else:
        rows.append(Check("python", OK, version))
    in_venv = sys.prefix != sys.base_prefix
    site_shared = _read(Path(sys.prefix) / "pyvenv.cfg") or ""
    system_site = "include-system-site-packages = true" in site_shared
    venv = (f"venv {sys.prefix}" + (" (sees system packages)" if system_site else "")) if in_venv else f"no venv ({sys.executable})"
    rows.append(Check("environment", INFO, venv))
    return rows


def _platform(profile: Any, root: Path, list_devices: bool) -> list[Check]:
    machine = platform.machine()
    board = _read(_under(root, "/proc/device-tree/model")) or _read(_under(root, "/sys/firmware/devicetree/base/model"))
    value = f"{platform.system()} {machine}" + (f", {board}" if board else "")
    rows = []
    if machine in ("armv7l", "armv6l"):
        rows.append(Check("platform", WARN, value, "ai-edge-litert ships aarch64 wheels only: install the 64-bit Raspberry Pi OS"))
    elif profile is not None and machine != profile.arch:
        rows.append(Check("platform", WARN, value,
                          f"profile {profile.name} is for {profile.arch}; pick this machine's profile with --device"))
    else:
        rows.append(Check("platform", OK if profile is not None else INFO, value))
    memory = _read(_under(root, "/proc/meminfo")) or ""
    total = next((line.split()[1] for line in memory.splitlines() if line.startswith("MemTotal:")), None)
    cores = f"{os.cpu_count()} cores" + (f", {int(total) / 1024 / 1024:.1f} GiB memory" if total and total.isdigit() else "")
    rows.append(Check("cpu cores", INFO, cores))
    return rows


def _packages(profile: Any, root: Path, list_devices: bool) -> list[Check]:
    rows = [Check("edgecls", INFO, _version("edgecls") or "not installed as a package (source tree)")]
    for name in ("numpy", "pillow"):
        version = _version(name)
        rows.append(Check(name, OK, version) if version else Check(name, WARN, "not installed", f"pip install {name}"))
    numpy_version = _version("numpy") or ""
    spec = importlib.util.find_spec("picamera2")
    if spec is not None and numpy_version.split(".")[0].isdigit() and int(numpy_version.split(".")[0]) >= 2 \
            and spec.origin and spec.origin.startswith("/usr/lib/python3/"):
        rows.append(Check("numpy for picamera2", WARN, f"numpy {numpy_version} with apt's picamera2",
                          'apt\'s simplejpeg is built against numpy 1.x (raspberrypi/picamera2#1088): '
                          'pip install "numpy<2" "opencv-python-headless<4.12"'))
    return rows


def _runtimes(profile: Any, root: Path, list_devices: bool) -> list[Check]:
    rows = []
    needed = TARGET_RUNTIMES.get(profile.preferred_target, ()) if profile is not None else ()
    for name, what in RUNTIMES.items():
        version = _version(name)
        if version:
            rows.append(Check(name, OK, f"{version} ({what})"))
        elif name in needed and not any(_version(other) for other in needed):
            extra = "intel" if name == "openvino" else "pi"
            rows.append(Check(name, WARN, "not installed",
                              f"profile {profile.name} runs {profile.preferred_target}: pip install 'edgecls[{extra}]'"))
        else:
            rows.append(Check(name, INFO, "not installed"))
    if not any(_version(name) for name in RUNTIMES):
        rows.append(Check("runtimes", WARN, "none installed", "pip install 'edgecls[pi]' (LiteRT) or 'edgecls[intel]' (OpenVINO)"))
    return rows


def _opencv(profile: Any, root: Path, list_devices: bool) -> list[Check]:
    found = [(name, _version(name)) for name in OPENCV if _version(name)]
    if not found:
        return [Check("opencv", WARN, "not installed", "edgecls camera needs it: pip install opencv-python-headless")]
    value = ", ".join(f"{name} {version}" for name, version in found)
    if len(found) > 1:
        extras = " ".join(n for n, _ in found[1:])
        return [Check("opencv", WARN, value, f"these share one cv2 module and break each other: pip uninstall {extras}")]
    return [Check("opencv", OK, value)]


def _tensorflow_and_gpus(profile: Any, root: Path, list_devices: bool) -> list[Check]:
    rows = []
    tf_version = _version("tensorflow") or _version("tensorflow-cpu")
    if tf_version:
        rows.append(Check("tensorflow", INFO, f"{tf_version} (training and export)"))
    else:
        rows.append(Check("tensorflow", INFO, "not installed (not needed to run exported artifacts)"))
    tf_gpus: list[str] = []
    if list_devices and tf_version:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import tensorflow as tf
        except ImportError as exc:  # installed but broken: say so instead of failing the whole report
            rows.append(Check("tensorflow devices", WARN, f"cannot import tensorflow: {exc}",
                              "pip install --force-reinstall 'edgecls[train]'"))
        else:
            devices = tf.config.list_physical_devices()
            rows.append(Check("tensorflow devices", INFO, ", ".join(f"{d.device_type}:{d.name.split(':')[-1]}" for d in devices) or "none"))
            tf_gpus = [d.name for d in devices if d.device_type == "GPU"]
    gpus = []
    if tf_gpus:
        gpus.append(f"TensorFlow sees {len(tf_gpus)} (mixed precision + XLA used by train)")
    elif any(row.check == "tensorflow devices" for row in rows):
        gpus.append("TensorFlow sees none (training runs on the CPU)")
    nvidia = shutil.which("nvidia-smi")
    if nvidia:
        try:
            names = subprocess.run([nvidia, "-L"], capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
            gpus += [line.split(" (UUID")[0] for line in names if line.startswith("GPU")]
        except (OSError, subprocess.SubprocessError):
            pass
    for node in sorted(glob.glob(str(_under(root, "/dev/dri/renderD*")))):
        driver = Path(os.path.realpath(_under(root, f"/sys/class/drm/{Path(node).name}/device/driver"))).name
        driver_text = driver if driver != "driver" else "unknown driver"
        gpus.append(f"{Path(node).name} ({driver_text}{', OpenVINO GPU' if driver in ('i915', 'xe') else ''})")
    if _version("openvino"):
        try:
            from edgecls.openvino_import import import_openvino

            gpus.append("OpenVINO devices: " + ", ".join(import_openvino("intel").Core().available_devices))
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the report
            gpus.append(f"OpenVINO devices: error {type(exc).__name__}")
    rows.append(Check("GPU", OK if tf_gpus else INFO, "; ".join(gpus) if gpus else
                      "no (training runs on the CPU)" if tf_version else "none found"))
    return rows


def edgetpu_library_path(root: Path = Path("/")) -> str | None:
    """Where libedgetpu.so.1 is, or None."""
    candidates = sorted(glob.glob(str(_under(root, "/usr/lib/*/libedgetpu.so.1*")))
                        + glob.glob(str(_under(root, "/usr/lib/libedgetpu.so.1*"))))
    if candidates:
        return candidates[0]
    if str(root) == "/":
        return ctypes.util.find_library("edgetpu")
    return None


def coral_usb_devices(root: Path = Path("/")) -> list[dict[str, Any]]:
    """Coral USB Accelerators in sysfs: [{"id": "18d1:9302", "name", "speed_mbps", "path"}]."""
    found = []
    for device in sorted(glob.glob(str(_under(root, "/sys/bus/usb/devices/*")))):
        vendor, product = _read(Path(device) / "idVendor") or "", _read(Path(device) / "idProduct") or ""
        if (vendor, product) in CORAL_USB:
            speed = _read(Path(device) / "speed")
            found.append({"id": f"{vendor}:{product}", "name": CORAL_USB[(vendor, product)], "path": Path(device).name,
                          "speed_mbps": float(speed) if speed and speed.replace(".", "", 1).isdigit() else None})
    return found


def _wants_coral(profile: Any) -> bool:
    return profile is not None and profile.backend_device == "coral"


def _edgetpu(profile: Any, root: Path, list_devices: bool) -> list[Check]:
    path = edgetpu_library_path(root)
    if path:
        return [Check("edgetpu library", OK, path)]
    needed = _wants_coral(profile) or bool(coral_usb_devices(root)) or bool(glob.glob(str(_under(root, "/dev/apex_*"))))
    return [Check("edgetpu library", WARN if needed else INFO, "not found" + ("" if needed else " (needed only for a Coral)"),
                  EDGETPU_FIX if needed else "")]


def _coral_devices(profile: Any, root: Path, list_devices: bool) -> list[Check]:
    rows = []
    for device in coral_usb_devices(root):
        speed = device["speed_mbps"]
        label = f"{device['name']} {device['id']} at usb {device['path']}, " + (f"{speed:g} Mb/s" if speed else "speed unknown")
        if speed is not None and speed < USB3_MBPS:
            rows.append(Check("coral usb", WARN, label + " (USB 2)",
                              "plug it into a blue USB 3 port: on USB 2 it is about 4x slower (google-coral/edgetpu#115); "
                              "'lsusb -t' shows the link"))
        else:
            rows.append(Check("coral usb", OK, label + (" (USB 3)" if speed else "")))
    for apex in sorted(glob.glob(str(_under(root, "/dev/apex_*")))):
        rows.append(Check("coral pcie", OK, f"{Path(apex).name} (PCIe/M.2 or Dev Board Edge TPU)"))
    if not rows:
        wanted = _wants_coral(profile)
        rows.append(Check("coral", WARN if wanted else INFO, "no Coral device found",
                          "plug in the Coral USB Accelerator (USB 3 port), then re-run edgecls doctor" if wanted else ""))
    return rows


def _cameras(profile: Any, root: Path, list_devices: bool) -> list[Check]:
    rows = []
    nodes = sorted(glob.glob(str(_under(root, "/dev/video*"))), key=lambda p: (len(p), p))
    names = []
    for node in nodes:
        name = _read(_under(root, f"/sys/class/video4linux/{Path(node).name}/name"))
        names.append(f"{Path(node).name}" + (f" ({name})" if name else ""))
    wants_picamera2 = profile is not None and str((profile.camera or {}).get("source", "")) == "picamera2"
    if names:
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        rows.append(Check("cameras", OK, shown))
    else:
        rows.append(Check("cameras", INFO if wants_picamera2 else WARN, "no /dev/video* device",
                          "" if wants_picamera2 else "connect a USB camera (edgecls camera also reads video files, folders and URLs)"))
    spec = importlib.util.find_spec("picamera2")
    if spec is not None:
        rows.append(Check("picamera2", OK, f"importable ({spec.origin})"))
    else:
        apt_copy = Path("/usr/lib/python3/dist-packages/picamera2").is_dir()
        value = "installed by apt, hidden from this venv" if apt_copy else "not installed"
        fix = ("recreate the venv with --system-site-packages (install.sh --picamera2)" if apt_copy else PICAMERA2_FIX)
        rows.append(Check("picamera2", WARN if wants_picamera2 else INFO, value, fix if wants_picamera2 or apt_copy else ""))
    return rows


def _imx500(profile: Any, root: Path, rpk: str | Path | None) -> list[Check]:
    """The AI Camera (a profile whose target is imx500, or an --rpk to check): the sensor firmware and the network.rpk."""
    wanted = rpk is not None or (profile is not None and "imx500" in (profile.preferred_target, profile.backend_device))
    firmware = _under(root, IMX500_FIRMWARE)
    if not wanted:
        return [Check("imx500 firmware", INFO, str(firmware))] if firmware.is_file() else []
    rows = [Check("imx500 firmware", OK, str(firmware)) if firmware.is_file() else
            Check("imx500 firmware", WARN, f"{firmware} not found", "sudo apt install imx500-firmware, then reboot")]
    prefix = "PREFIX"
    if rpk is None:
        bundle = Path(sys.prefix).parent  # PREFIX/venv of a pi-ai-camera bundle -> PREFIX/rpk/network.rpk
        beside_venv = bundle / "rpk" / "network.rpk"
        installed_here = beside_venv.is_file() or (bundle / "model" / "packerOut.zip").is_file()
        network = beside_venv if installed_here else _under(root, IMX500_NETWORK)
        prefix = str(bundle) if installed_here else prefix
    else:
        network = Path(rpk).expanduser()
    package = f"imx500-package -i {prefix}/model/packerOut.zip -o {prefix}/rpk/ (sudo ./install.sh of the pi-ai-camera bundle does it)"
    if not network.is_file():
        rows.append(Check("imx500 network", WARN, f"{network} not found", package))
        return rows
    from edgecls.camera.imx500 import labels_beside
    from edgecls.errors import EdgeclsError

    try:
        labels = labels_beside(network)
    except EdgeclsError:
        rows.append(Check("imx500 network", WARN, f"{network} has no meta.json or labels.txt beside it",
                          "copy PREFIX/model/meta.json and labels.txt next to network.rpk (install.sh does it)"))
        return rows
    rows.append(Check("imx500 network", OK, f"{network} ({len(labels)} classes)"))
    return rows


def _governor(profile: Any, root: Path, list_devices: bool) -> list[Check]:
    files = sorted(glob.glob(str(_under(root, "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor"))))
    governors = sorted({value for value in (_read(Path(f)) for f in files) if value})
    if not governors:
        return [Check("cpu governor", INFO, "not exposed (virtual machine or container)")]
    value = ", ".join(governors)
    if governors == ["performance"]:
        return [Check("cpu governor", OK, value)]
    return [Check("cpu governor", WARN, value, f"latency varies while clocks ramp up; for steady numbers: {GOVERNOR_FIX}")]


def _throttling(profile: Any, root: Path, list_devices: bool) -> list[Check]:
    if str(root) != "/":
        return []
    from edgecls.camera.stats import cpu_temperature, throttling

    rows = []
    state = throttling()
    if state is not None:
        flags = state.get("flags") or []
        throttled = f": {', '.join(flags)}" if flags else " (never throttled)"
        rows.append(Check("throttling", WARN if flags else OK, f"{state.get('raw')}{throttled}",
                          "better cooling and a 5 V / 5 A (Pi 5) or 3 A (Pi 4) supply" if flags else ""))
    temperature = cpu_temperature()
    if temperature is not None:
        rows.append(Check("cpu temperature", WARN if temperature >= 80 else OK, f"{temperature:.1f} C",
                          "it throttles at 80-85 C: add a heatsink or fan" if temperature >= 80 else ""))
    return rows


__all__ = ["Check", "coral_usb_devices", "diagnose", "edgetpu_library_path", "run_checks"]
