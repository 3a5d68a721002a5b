"""The bundle's MQTT setting: `edgecls deploy ... --mqtt URL [--mqtt-password-file FILE] [--mqtt-ca CA.pem]`.

The URL (and --mqtt-qos/-rate/-debounce/-retain/-discovery) is checked at deploy time exactly as `edgecls camera
--mqtt` checks it (edgecls.integrations.mqtt_config), so a typo fails on the build machine, not at boot on the
device. The service runs `edgecls camera --mqtt=URL` plus the options that differ from the camera's defaults.

The password never lands in a world-readable file (the unit, install.sh, README.md, bundle.json are all 0644):
one spelled in the URL is taken out of it (the service's URL keeps the user name), one from
--mqtt-password-file is read; either is written to BUNDLE/mqtt-password (mode 0600, no sha256 in bundle.json:
a hash of a human password can be guessed offline), installed root-only by install.sh and handed to the service
by systemd's LoadCredential= like the live-view token (`--mqtt-password-file=%d/mqtt-password`). A CA file is
copied to BUNDLE/mqtt-ca.pem and installed in the prefix.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecls.deploy.safe_text import CONTROL_CHARS, check_line
from edgecls.errors import ConfigError
from edgecls.integrations.credentials import write_secret_file

PASSWORD_FILE = "mqtt-password"  # in the bundle and the prefix; the service's credential of the same name
CA_FILE = "mqtt-ca.pem"
SERVICE_OPTIONS = ("qos", "rate", "debounce", "retain", "discovery")  # MqttSettings fields the service's command line can set


@dataclass(frozen=True)
class BundleMqtt:
    """What the service publishes to: the URL without a password, the password (for the 0600 file), the CA file."""

    url: str  # never holds a password
    safe_url: str
    password: str | None = field(default=None, repr=False)
    ca_source: Path | None = None
    password_in_url: str | None = field(default=None, repr=False)  # as spelled on the command line (for scrub_argv)
    options: dict[str, Any] = field(default_factory=dict)  # qos, rate, debounce, retain, discovery: only those not the camera's defaults

    def camera_args(self, prefix: str, credentials: str) -> list[str]:
        """`edgecls camera` arguments: the URL, the password as a systemd credential, the CA file in the prefix."""
        args = [f"--mqtt={self.url}"]
        if self.password is not None:
            args.append(f"--mqtt-password-file={credentials}/{PASSWORD_FILE}")
        if self.ca_source is not None:
            args.append(f"--mqtt-ca={prefix}/{CA_FILE}")
        for name, value in self.options.items():
            if name == "retain":
                args.append("--mqtt-retain" if value else "--mqtt-no-retain")
            elif name == "discovery":
                args.append("--mqtt-discovery" if value else "--no-mqtt-discovery")
            else:
                args.append(f"--mqtt-{name}={value:g}" if isinstance(value, float) else f"--mqtt-{name}={value}")
        return args

    def describe(self) -> dict[str, Any]:
        """For bundle.json: where things are, never the password."""
        return {"url": self.url, "password_file": PASSWORD_FILE if self.password is not None else None,
                "ca_file": CA_FILE if self.ca_source is not None else None, **self.options}

    def write_files(self, folder: Path) -> None:
        """BUNDLE/mqtt-password (0600 whatever the umask) and BUNDLE/mqtt-ca.pem, as this setting needs them."""
        if self.password is not None:
            write_secret_file(folder / PASSWORD_FILE, self.password)
        if self.ca_source is not None:
            shutil.copyfile(self.ca_source, folder / CA_FILE)
            (folder / CA_FILE).chmod(0o644)


def mqtt_setting(url: str | None, password_file: str | Path | None = None, ca_file: str | Path | None = None,
                 **options: Any) -> BundleMqtt | None:
    """The checked setting for `--mqtt` (None without one); ConfigError naming the URL without its password.

    options: qos, rate, debounce, retain, discovery (None = the camera's default), checked like `edgecls camera`'s.

    The deploying shell's EDGECLS_MQTT_USERNAME / EDGECLS_MQTT_PASSWORD are not read: the bundle carries exactly
    what the command line says."""
    chosen = {name: value for name, value in options.items() if value is not None}
    unknown = sorted(set(chosen) - set(SERVICE_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown MQTT option(s) {', '.join(unknown)}", f"Use {', '.join(SERVICE_OPTIONS)}")
    if url is None:
        if chosen:
            raise ConfigError(f"--mqtt-{next(iter(chosen))} was given without --mqtt", "Add --mqtt URL, or leave it out")
        if password_file is not None or ca_file is not None:
            given = "--mqtt-password-file" if password_file is not None else "--mqtt-ca"
            raise ConfigError(f"{given} was given without --mqtt", "Add --mqtt mqtt[s]://[USER@]HOST[:PORT]/PREFIX, or leave it out")
        return None
    from edgecls.integrations.credentials import redact_url, without_password
    from edgecls.integrations.mqtt_config import MqttSettings, parse_mqtt_url

    if CONTROL_CHARS.search(url):  # before parsing: urlsplit would silently drop tabs and newlines
        shown = CONTROL_CHARS.sub("?", redact_url(url))
        raise ConfigError(f"--mqtt URL '{shown}' holds a newline or control character, which no unit can carry safely",
                          "Pass the URL on one line")
    settings, raw_password = parse_mqtt_url(url, password_file=password_file, environ={}, ca_file=ca_file, **chosen)
    if raw_password is not None and password_file is not None:
        raise ConfigError(f"the MQTT password is given twice: in the URL '{settings.safe_url}' and in --mqtt-password-file",
                          "Keep only --mqtt-password-file (the URL is written into the unit)")
    service_url = check_line(without_password(url.strip()), "--mqtt URL")
    password = settings.password
    if password is not None and CONTROL_CHARS.search(password):
        raise ConfigError(f"the MQTT password for '{settings.safe_url}' holds a control character", "Use a password on one line")
    defaults = MqttSettings(host="-")
    changed = {name: getattr(settings, name) for name in SERVICE_OPTIONS if getattr(settings, name) != getattr(defaults, name)}
    return BundleMqtt(url=service_url, safe_url=settings.safe_url, password=password, ca_source=settings.ca_file,
                      password_in_url=raw_password, options=changed)


__all__ = ["CA_FILE", "PASSWORD_FILE", "BundleMqtt", "mqtt_setting"]
