"""The bundle's text files other than install.sh: requirements.txt, constraints-picamera2.txt, the systemd unit and
README.md. Each render_* takes the bundle's context (see `edgecls.deploy.bundle.build_bundle`). Values that README.md
shows inside shell commands are shell-quoted, other values kept to one line: a user copying a line runs only it."""
from __future__ import annotations

import re
import shlex
from typing import Any

from edgecls.deploy.artifact import validation_summary
from edgecls.deploy.camera_secret import PASSWORD_FILE as CAMERA_PASSWORD_FILE
from edgecls.deploy.imx500 import readme_section as imx500_section
from edgecls.deploy.layout import DEFAULT_PREFIX, MODEL_DIR, SERVICE_NAME, STATE_DIR, WHEEL_DIR
from edgecls.deploy.live_view import TOKEN_FILE, parse_serve
from edgecls.deploy.mqtt import CA_FILE as MQTT_CA_FILE
from edgecls.deploy.mqtt import PASSWORD_FILE as MQTT_PASSWORD_FILE
from edgecls.deploy.requirements import PICAMERA2_CONSTRAINTS, pip_target_flags
from edgecls.deploy.safe_text import doc_text
from edgecls.deploy.unit import render_unit, unit_template


def pip_check_command(profile: Any) -> str:
    """The `pip download` line that shows the device's wheels of requirements.txt exist."""
    return f"pip download -d /tmp/w {shlex.join(pip_target_flags(profile))} -r requirements.txt"


def live_view_port(serve: str) -> str:
    """The port of a HOST:PORT --serve value."""
    return str(parse_serve(serve)[1])


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
    """The systemd unit running `edgecls camera --serve` at boot, for the default prefix (install.sh writes its own
    for --prefix from the same template)."""
    return render_unit(unit_template(c), DEFAULT_PREFIX)


def render_picamera2_constraints() -> str:
    """constraints-picamera2.txt: keeps numpy 1.x in a venv that sees apt's python3-picamera2."""
    return ("# Only with apt's python3-picamera2 (install.sh --picamera2): its simplejpeg is built against numpy 1.24,\n"
            "# so the venv keeps numpy 1.x (raspberrypi/picamera2#1088, #1211); opencv-python-headless >= 4.12 needs numpy 2.\n"
            + "\n".join(PICAMERA2_CONSTRAINTS) + "\n")


def render_readme(c: dict[str, Any]) -> str:
    """README.md: what is inside, how to install, check and watch it (the live view and its token), the device's notes."""
    p, meta = c["profile"], c["meta"]
    validation = validation_summary(c["report"])
    port = live_view_port(c["serve"])
    quality = quality_sentence(validation)
    notes = "\n".join(f"- {doc_text(note)}" for note in p.setup_notes) or "- none"
    camera = c["camera"]
    name = shlex.quote(doc_text(c["name"]))
    model = shlex.quote(f"{DEFAULT_PREFIX}/{c.get('service_model') or c['artifact']}")
    on_sensor = bool(c.get("imx500"))
    runner = "the Sony IMX500 sensor of the AI Camera (packaged into `rpk/network.rpk` by install.sh)" if on_sensor else (
        'LiteRT' if c['target'] in ('tflite', 'edgetpu') else 'OpenVINO')
    verify_line = "" if on_sensor else (f"{DEFAULT_PREFIX}/venv/bin/edgecls verify {model} --backend-device {c['backend_device']}"
                                        "   # the export's golden set on this device\n")
    try_source = "imx500" if on_sensor else "clip.mp4"
    picam = ("installs apt's `python3-picamera2` and makes the venv with `--system-site-packages`, keeping numpy < 2 "
             "(`constraints-picamera2.txt`: apt's simplejpeg is built against numpy 1.24, raspberrypi/picamera2#1088)"
             if c["picamera2"] else "does not install picamera2 (`--picamera2` adds it)")
    return f"""# edgecls bundle: {doc_text(meta.architecture)} for {doc_text(p.title)}

Made by `edgecls deploy` from run {code(c['run'])}: the validated **{c['target']} {c['precision']}** artifact
{code(c['artifact'])} ({meta.input_size[0]}x{meta.input_size[1]} px, {len(meta.labels)} classes), run by
{runner} on **{c['backend_device']}**. Validation at export: {quality}.

| file | what |
|---|---|
| {code(c['artifact'])}, `{MODEL_DIR}/meta.json`, `{MODEL_DIR}/labels.txt` | the model, its input contract and labels |
{golden_row(c)}| `{WHEEL_DIR}/{c['wheel']}` | edgecls itself (installs offline; TensorFlow is only in its `train` extra) |
| `requirements.txt` | runtime dependencies only: {', '.join(c['requirements'])} |
| `install.sh` | apt packages, a venv, the wheels, the live-view token, the systemd service |
| `{SERVICE_NAME}.service` | `edgecls camera --serve {c['serve']}` at boot, restarted on failure (install.sh writes it for its `--prefix`) |
| `{TOKEN_FILE}` | the live view's token (mode 0600; installed root-only) |
{mqtt_rows(c)}{camera_row(c)}| `bundle.json` | manifest with the sha256 of every file |

## Install

```bash
scp -rp {name} pi@raspberrypi.local:   # or a USB stick (-p keeps {TOKEN_FILE} private)
ssh pi@raspberrypi.local
cd {name} && sudo ./install.sh        # to {DEFAULT_PREFIX}; --help for options
```

`install.sh` installs `python3-venv`{', `libedgetpu1-std` (Coral apt repository)' if c['backend_device'] == 'coral' else ''}, {picam},
creates `{DEFAULT_PREFIX}/venv`, installs `requirements.txt` from PyPI (or, for a bundle made with
`edgecls deploy --offline`, only from `{WHEEL_DIR}/`), installs edgecls from `{WHEEL_DIR}/`, checks that the
model loads, copies `{TOKEN_FILE}` (mode 0600, owned by root), writes the unit for its prefix, enables
`{SERVICE_NAME}.service` and, last, {self_test(c)}. Without root: `./install.sh --no-apt --no-service --prefix ~/edgecls`.
Only the files and the unit, nothing outside the prefix: `./install.sh --no-apt --no-venv --no-service --prefix DIR`.

## Live view

Every page needs the token in `{TOKEN_FILE}`: open `http://<device>:{port}/?token=TOKEN`, or send
`Authorization: Bearer TOKEN`. systemd hands the token to the service as a credential (`LoadCredential=`),
so it never appears on a command line or in the journal. New token: make the bundle again.
{mqtt_section(c)}
## Check and watch

```bash
{DEFAULT_PREFIX}/venv/bin/edgecls doctor --device {p.name}     # Python, runtimes, Edge TPU + USB speed, camera, governor
{verify_line}systemctl status {SERVICE_NAME}; journalctl -u {SERVICE_NAME} -f
# live view: http://<device>:{port}/?token=TOKEN     report: {STATE_DIR}/camera_report.json
{DEFAULT_PREFIX}/venv/bin/edgecls camera --model {model} --device {try_source} --frames 100 --headless
```

The service runs {code('edgecls ' + shlex.join(c['exec_args']))} (camera {code(str(camera.get('source', '0')))}
{camera.get('width', '?')}x{camera.get('height', '?')}; `%d` is systemd's credentials folder). Edit
`/etc/systemd/system/{SERVICE_NAME}.service`, then `sudo systemctl daemon-reload && sudo systemctl restart {SERVICE_NAME}`.
{camera_sentence(c)}{imx500_section() if on_sensor else ''}
## Device notes ({p.name})

{notes}

The device's wheels resolve with: `{pip_check_command(p)}`{' -c constraints-picamera2.txt' if c['picamera2'] else ''}
"""


def mqtt_rows(c: dict[str, Any]) -> str:
    """The README's file-table rows for the MQTT password and CA files ("" when the bundle has none)."""
    mqtt = c.get("mqtt")
    rows = ""
    if mqtt is not None and mqtt.password is not None:
        rows += f"| `{MQTT_PASSWORD_FILE}` | the MQTT password (mode 0600; installed root-only, handed over like the token) |\n"
    if mqtt is not None and mqtt.ca_source is not None:
        rows += f"| `{MQTT_CA_FILE}` | the CA that signed the broker's certificate |\n"
    return rows


def camera_row(c: dict[str, Any]) -> str:
    """The README's file-table row for the camera stream's password ("" when the bundle has none)."""
    secret = c.get("camera_secret")
    if secret is None or secret.password is None:
        return ""
    return f"| `{CAMERA_PASSWORD_FILE}` | the camera stream's password (mode 0600; installed root-only, handed over like the token) |\n"


def camera_sentence(c: dict[str, Any]) -> str:
    """How the camera stream's password reaches the service ("" when the bundle has none)."""
    secret = c.get("camera_secret")
    if secret is None or secret.password is None:
        return ""
    return (f"The stream's password is in `{CAMERA_PASSWORD_FILE}` (mode 0600, installed root-only); systemd hands it to the service "
            "as a credential and `edgecls camera --device-password-file` puts it into the URL in memory, so it is in no command "
            "line, unit or log. New password: make the bundle again.\n")


def mqtt_section(c: dict[str, Any]) -> str:
    """The README's MQTT section ("" without --mqtt)."""
    mqtt = c.get("mqtt")
    if mqtt is None:
        return ""
    password = (f"The password is in `{MQTT_PASSWORD_FILE}` (mode 0600, installed root-only); systemd hands it to the service "
                "as a credential, so it is in no command line, unit or log. New password: make the bundle again."
                if mqtt.password is not None else "No password (the broker must allow this user, or anonymous clients).")
    return f"""
## MQTT

The service publishes its results to {code(doc_text(mqtt.url))} (availability, debounced state, per-frame results,
Home Assistant discovery: see edgecls' README). {password}
"""


def golden_row(c: dict[str, Any]) -> str:
    """The README's file-table row for the golden set ("" when the export had none)."""
    if not c.get("golden"):
        return ""
    return f"| {code(c['golden'])} | the golden set: a few held-out images and the scores the validated export gave them |\n"


def self_test(c: dict[str, Any]) -> str:
    """What install.sh's last step does with this bundle."""
    if c.get("imx500"):
        return ("runs no `edgecls verify`: no golden set exists for the IMX500 (the export was validated on the PC with MCT's "
                "simulation of the sensor), so it checks that `rpk/network.rpk` and its labels are in place")
    if not c.get("golden"):
        return ("would run `edgecls verify` on the model, but this bundle has no golden set (the export made none: export "
                "again with a newer edgecls), so it says so and skips it")
    return ("runs `edgecls verify`: the golden set, re-run on this device's runtime"
            f"{' and Edge TPU' if c['backend_device'] == 'coral' else ''}; a failure stops and disables the service and "
            "fails the install with the diagnosis (wrong labels, preprocessing drift, runtime version, Edge TPU missing)")


def code(value: object) -> str:
    """`value` as a Markdown code span that shows it unchanged (a fence longer than any backtick run inside)."""
    text = doc_text(value)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


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
