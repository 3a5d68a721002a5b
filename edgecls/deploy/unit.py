"""The systemd unit of the bundle's service: one template, filled by two renderers.

`unit_template` builds the unit text with every value already escaped for systemd, leaving slots for what only
install time knows: the install prefix (escaped one way inside a quoted ExecStart argument, another in a path
setting) and the supplementary groups this system has. `render_unit` fills the slots in Python (the bundle's copy,
for /opt/edgecls); `unit_as_bash` writes a bash `printf` that install.sh runs to fill them for its --prefix,
so no sed ever touches a user value.

The service runs as a dynamic user with the camera groups, an explicit LimitNOFILE, and the live-view token (and
the MQTT and camera passwords, edgecls.deploy.mqtt and camera_secret) as systemd credentials (LoadCredential=,
read by systemd as root, passed as a file path: never on a command line).
"""
from __future__ import annotations

import re
from enum import Enum
from typing import Any

from edgecls.deploy.camera_secret import PASSWORD_FILE as CAMERA_PASSWORD_FILE
from edgecls.deploy.layout import SERVICE_NAME, STATE_DIR
from edgecls.deploy.live_view import TOKEN_FILE
from edgecls.deploy.mqtt import PASSWORD_FILE as MQTT_PASSWORD_FILE
from edgecls.deploy.safe_text import check_line, shell_quote, systemd_escape, systemd_program_text, systemd_word, systemd_word_text

PREFIX_MARK = "\x00prefix\x00"  # stands for the install prefix in camera arguments (no checked value holds a NUL)
CREDENTIALS_MARK = "\x00credentials\x00"  # stands for systemd's %d, the service's credentials folder
CAMERA_GROUPS = ("video", "render", "plugdev")  # install.sh keeps those this system has
LIMIT_NOFILE = 4096


class Slot(Enum):
    """What the renderers fill in."""

    PREFIX_EXEC = "unit_exec"  # the prefix in ExecStart's program path (quoted; % doubled; no quote or backslash)
    PREFIX_WORD = "unit_word"  # the prefix inside a double-quoted ExecStart argument
    PREFIX_PATH = "unit_path"  # the prefix in a path setting (LoadCredential=)
    GROUPS = "unit_groups"  # space-separated group names


Part = str | Slot


def unit_template(c: dict[str, Any]) -> list[Part]:
    """The unit as text parts and slots, from the bundle's context (profile, target, serve, unit_args)."""
    p = c["profile"]
    program, *args = c["unit_args"]
    exec_start = _exec_word(program, program=True)
    for arg in args:
        exec_start += [" ", *_exec_word(arg)]
    description = systemd_escape(f"edgecls camera ({c['target']} {c['precision']}, {c['backend_device']}) with a live view")
    serve = systemd_escape(c["serve"])
    head = f"""# edgecls camera for profile {systemd_escape(p.name)}: classifies the camera and serves a live view on {serve}
# Every request needs the token in {TOKEN_FILE} (?token=... or Authorization: Bearer ...).
# Written by install.sh for its --prefix (the bundle's copy is for the default prefix).
[Unit]
Description={description}
After=network.target
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStart="""
    tail = f"""
WorkingDirectory={STATE_DIR}
Environment=PYTHONUNBUFFERED=1
DynamicUser=yes
SupplementaryGroups="""
    credential = f"""
StateDirectory={STATE_DIR.rsplit('/', 1)[-1]}
# the token file stays root-only; systemd hands the service a private copy at %d/{TOKEN_FILE}
LoadCredential={TOKEN_FILE}:"""
    rest = f"""
LimitNOFILE={LIMIT_NOFILE}
NoNewPrivileges=yes
PrivateTmp=yes
# the report folder is the StateDirectory, writable under ProtectSystem=strict
ProtectSystem=strict
ProtectHome=yes
Restart=on-failure
RestartSec=5
# edgecls camera exits 143 on SIGTERM (systemctl stop) after writing its report
SuccessExitStatus=143 130

[Install]
WantedBy=multi-user.target
"""
    secrets: list[Part] = [credential, Slot.PREFIX_PATH, f"/{TOKEN_FILE}"]
    mqtt = c.get("mqtt")
    if mqtt is not None and mqtt.password is not None:  # the MQTT password: a credential too, never an argument
        secrets += [f"\nLoadCredential={MQTT_PASSWORD_FILE}:", Slot.PREFIX_PATH, f"/{MQTT_PASSWORD_FILE}"]
    camera = c.get("camera_secret")
    if camera is not None and camera.password is not None:  # the stream URL's password: the same way
        secrets += [f"\nLoadCredential={CAMERA_PASSWORD_FILE}:", Slot.PREFIX_PATH, f"/{CAMERA_PASSWORD_FILE}"]
    return _merge([head, *exec_start, tail, Slot.GROUPS, *secrets, rest])


def render_unit(parts: list[Part], prefix: str, groups: tuple[str, ...] = CAMERA_GROUPS) -> str:
    """The unit text for `prefix` and `groups` (what install.sh's printf writes for the same values)."""
    what = "install prefix"
    fill = {Slot.PREFIX_EXEC: systemd_program_text(prefix, what), Slot.PREFIX_WORD: systemd_word_text(prefix, what),
            Slot.PREFIX_PATH: systemd_escape(prefix, what), Slot.GROUPS: " ".join(check_line(group, "group") for group in groups)}
    return "".join(fill[part] if isinstance(part, Slot) else part for part in parts)


def unit_as_bash(parts: list[Part]) -> str:
    """A bash `printf` that writes the unit, reading the slots from $unit_exec, $unit_word, $unit_path and $unit_groups."""
    words = [f'"${part.value}"' if isinstance(part, Slot) else shell_quote(part, "unit text", multiline=True) for part in parts]
    return "printf '%s' " + " \\\n    ".join(words)


def unit_file_name() -> str:
    return f"{SERVICE_NAME}.service"


def _exec_word(arg: str, program: bool = False) -> list[Part]:
    """One ExecStart argument (or the program path): quoted and escaped, the prefix mark a slot, the credentials mark %d.

    systemd expands $VAR in arguments but not in the program path, and refuses quotes and backslashes there."""
    pieces = [piece for piece in re.split(f"({PREFIX_MARK}|{CREDENTIALS_MARK})", arg) if piece]
    if pieces == [arg] and not program:
        return [systemd_word(arg, "service argument")]
    escape = systemd_program_text if program else systemd_word_text
    out: list[Part] = ['"']
    for piece in pieces:
        if piece == PREFIX_MARK:
            out.append(Slot.PREFIX_EXEC if program else Slot.PREFIX_WORD)
        else:
            out.append("%d" if piece == CREDENTIALS_MARK else escape(piece, "service argument"))
    return [*out, '"']


def _merge(parts: list[Part]) -> list[Part]:
    """Adjacent text parts joined (a shorter printf)."""
    out: list[Part] = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        else:
            out.append(part)
    return out
