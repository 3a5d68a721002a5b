"""The Raspberry Pi AI Camera in a bundle (`edgecls deploy RUN --device pi-ai-camera`): the network runs on the IMX500
sensor, so the bundle ships the export's packerOut.zip (not a runtime artifact), and install.sh installs Sony's
imx500-firmware / imx500-tools with python3-picamera2 from apt, packages rpk/network.rpk on the Pi (imx500-package
exists only there) and copies meta.json and labels.txt beside it, where `edgecls camera --device imx500` reads them.

No golden set exists for the IMX500 (export validation ran MCT's simulation of the sensor on the PC), so install.sh
runs no `edgecls verify`; it checks that network.rpk and its labels are in place instead.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from edgecls.deploy.layout import MODEL_DIR

TARGET = "imx500"
PACKER = "packerOut.zip"
RPK_DIR = "rpk"
NETWORK = f"{RPK_DIR}/network.rpk"  # what imx500-package -i packerOut.zip -o rpk/ writes, under the install prefix
SHIPPED = (PACKER, "meta.json", "labels.txt", "memory_report.json", "export_report.json")  # not mct_quantized.keras: a PC file
APT_PACKAGES = ("imx500-firmware", "imx500-tools", "python3-picamera2")
SOURCE = "imx500"  # `edgecls camera --device imx500`


def is_imx500(target: str) -> bool:
    return target == TARGET


def copy_export(folder: Path, model_dir: Path) -> None:
    """The export's files the Pi needs into the bundle's model/ (labels.txt is rewritten from meta.json afterwards)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        if (folder / name).is_file():
            shutil.copy2(folder / name, model_dir / name)


def readme_section() -> str:
    """What the bundle's README says about the sensor, the rpk and the missing self-test."""
    return f"""
## On the AI Camera

The network runs on the Sony IMX500 sensor. `install.sh` installs `{' '.join(APT_PACKAGES)}` with apt, runs
`imx500-package -i {MODEL_DIR}/{PACKER} -o {RPK_DIR}/` (Sony's packager exists only on the Pi) and copies `meta.json` and
`labels.txt` beside `{NETWORK}`, where `edgecls camera --device imx500` reads the labels. The venv is made with
`--system-site-packages` so it sees apt's picamera2. The first start uploads the network to the camera and can take
minutes (the camera caches it afterwards); frames before the network's first result are counted as `awaiting_network`.
Those packages come from Raspberry Pi OS' own repository (archive.raspberrypi.com): on another Debian `install.sh` stops
at its apt step, before changing anything, naming what is missing and the command it would run.

No golden set exists for the IMX500: the export was validated on the PC with MCT's simulation of the sensor's arithmetic,
so `install.sh` runs no `edgecls verify`. Nothing of this has run on a real camera yet: watch the service's report.
"""


__all__ = ["APT_PACKAGES", "NETWORK", "PACKER", "RPK_DIR", "SHIPPED", "SOURCE", "TARGET", "copy_export", "is_imx500", "readme_section"]
