"""`edgecls deploy`: a self-contained bundle that installs a run's artifact on one device profile.

    BUNDLE/
      README.md                 what is inside, how to install, check and watch it
      bundle.json               manifest: run, profile, artifact, validation summary, sha256 of every file
      install.sh                Raspberry Pi OS / Debian: apt packages, a venv, the wheels, the token, the systemd unit
      edgecls-camera.service    runs `edgecls camera --serve` at boot (for the default prefix; install.sh writes its own)
      live-token                the live view's token (mode 0600), handed to the service by systemd's LoadCredential=
      camera-password           a stream URL's password (mode 0600; only when the camera URL has one), handed over the same way
      mqtt-password             the MQTT password (mode 0600; only with deploy --mqtt and a password), handed over the same way
      requirements.txt          runtime dependencies only (never TensorFlow), read from edgecls' own metadata
      constraints-picamera2.txt numpy<2 pins for a venv that sees apt's python3-picamera2 (raspberrypi/picamera2#1088)
      model/                    the validated artifact, meta.json, labels.txt, export_report.json (pi-ai-camera: packerOut.zip,
                                which install.sh packages into PREFIX/rpk/network.rpk with imx500-package: edgecls.deploy.imx500)
      wheels/                   edgecls as a wheel (+ the dependency wheels for the device with offline=True)

The artifact comes from RUN/export/<target>-<precision>/ as chosen by the profile (or overridden); edgecls
itself is built into a wheel from its source tree (or repacked from the installed files), so the bundle
installs without access to the machine that made it. The folder is written atomically, never over the run or a
folder edgecls did not make. Every value that reaches install.sh or the unit is checked (`edgecls.devices` checks
profiles when they load) and quoted for its language by `safe_text`; nothing is pasted raw.

Modules: `bundle` (build_bundle: assembles the folder), `artifact` (which export it ships), `wheel` (edgecls
as a wheel), `requirements` (runtime requirements, Requires-Python, pip platform tags and downloads for the device),
`templates` and `install_script` (the text files), `unit` (the systemd unit: one template, a Python and a bash
renderer), `safe_text` (checks and quoting for bash, systemd and Markdown), `live_view` (--serve and the token),
`mqtt` (deploy --mqtt), `camera_secret` (the camera source, a stream URL's password moved into camera-password),
`layout` (shared names and paths), `pip_command` (running pip).
"""
from __future__ import annotations

from edgecls.deploy.artifact import export_command, find_artifact, validation_summary
from edgecls.deploy.bundle import build_bundle, camera_args
from edgecls.deploy.install_script import INSTALL_TEMPLATE, render_install
from edgecls.deploy.layout import DEFAULT_PREFIX, DEFAULT_SERVE, MODEL_DIR, SERVICE_NAME, WHEEL_DIR
from edgecls.deploy.requirements import (
    FORBIDDEN,
    PICAMERA2_CONSTRAINTS,
    RUNTIME_EXTRA,
    download_dependencies,
    pip_platforms,
    pip_target_flags,
    python_ok,
    requires_python,
    runtime_requirements,
)
from edgecls.deploy.templates import render_readme, render_requirements, render_service
from edgecls.deploy.wheel import build_wheel, source_tree, wheel_metadata

__all__ = [
    "build_bundle", "build_wheel", "camera_args", "download_dependencies", "export_command", "find_artifact",
    "pip_platforms", "pip_target_flags", "python_ok", "render_install", "render_readme", "render_requirements",
    "render_service", "requires_python", "runtime_requirements", "source_tree", "validation_summary", "wheel_metadata",
    "DEFAULT_PREFIX", "DEFAULT_SERVE", "FORBIDDEN", "INSTALL_TEMPLATE", "MODEL_DIR", "PICAMERA2_CONSTRAINTS",
    "RUNTIME_EXTRA", "SERVICE_NAME", "WHEEL_DIR",
]
