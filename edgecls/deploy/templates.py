"""The bundle's text files other than install.sh: requirements.txt, constraints-picamera2.txt, the systemd unit and
README.md. Each render_* takes the bundle's context (see `edgecls.deploy.bundle.build_bundle`)."""
from __future__ import annotations

import shlex
from typing import Any

from edgecls.deploy.artifact import validation_summary
from edgecls.deploy.layout import DEFAULT_PREFIX, EDGECLS_BIN, MODEL_DIR, SERVICE_NAME, WHEEL_DIR
from edgecls.deploy.requirements import PICAMERA2_CONSTRAINTS, pip_target_flags


def pip_check_command(profile: Any) -> str:
    """The `pip download` line that shows the device's wheels of requirements.txt exist."""
    return f"pip download -d /tmp/w {shlex.join(pip_target_flags(profile))} -r requirements.txt"


def live_view_port(serve: str) -> str:
    """The port of a HOST:PORT --serve value."""
    return serve.rsplit(":", 1)[-1]


def render_requirements(c: dict[str, Any]) -> str:
    """requirements.txt: the runtime dependencies (never TensorFlow) under a header saying how to check them."""
    p = c["profile"]
    head = [
        f"# Runtime dependencies of edgecls for {p.name} ({c['target']} {c['precision']} on {c['backend_device']}); no TensorFlow.",
        f"# edgecls itself is {WHEEL_DIR}/{c['wheel']}; install.sh installs both into a venv.",
        f"# Check the device's wheels exist: {pip_check_command(p)}",
    ]
    return "\n".join([*head, *c["requirements"]]) + "\n"


def render_service(c: dict[str, Any]) -> str:
    """The systemd unit running `edgecls camera --serve` at boot, with paths for the default prefix."""
    p = c["profile"]
    exec_start = shlex.join([EDGECLS_BIN, *c["exec_args"]])
    return f"""# edgecls camera on {p.title}: classifies the camera and serves a live view at http://HOST:{live_view_port(c['serve'])}/
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


def render_picamera2_constraints() -> str:
    """constraints-picamera2.txt: keeps numpy 1.x in a venv that sees apt's python3-picamera2."""
    return ("# Only with apt's python3-picamera2 (install.sh --picamera2): its simplejpeg is built against numpy 1.24,\n"
            "# so the venv keeps numpy 1.x (raspberrypi/picamera2#1088, #1211); opencv-python-headless >= 4.12 needs numpy 2.\n"
            + "\n".join(PICAMERA2_CONSTRAINTS) + "\n")


def render_readme(c: dict[str, Any]) -> str:
    """README.md: what is inside, how to install, check and watch it, and the device's notes."""
    p, meta = c["profile"], c["meta"]
    validation = validation_summary(c["report"])
    port = live_view_port(c["serve"])
    quality = quality_sentence(validation)
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

The device's wheels resolve with: `{pip_check_command(p)}`{' -c constraints-picamera2.txt' if c['picamera2'] else ''}
"""


def quality_sentence(v: dict[str, Any]) -> str:
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
