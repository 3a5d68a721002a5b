"""MQTT settings from `--mqtt mqtt[s]://[user[:password]@]host[:port][/prefix]`: topics and Home Assistant discovery.

Credentials: the user name from the URL or EDGECLS_MQTT_USERNAME; the password from
`--mqtt-password-file FILE`, else EDGECLS_MQTT_PASSWORD, else the URL (then scrubbed from `ps`, see
edgecls.integrations.credentials). They are never part of a message, a log line or the report:
`MqttSettings.safe_url` is the URL with the password replaced by ***.

Topics under the prefix (default "edgecls"):
    PREFIX/availability   "online" / "offline" (retained; the last will sets "offline" when the process dies)
    PREFIX/state          the debounced label as JSON (retained by default): published when it changes
    PREFIX/result         every frame's result as JSON, at most `rate` per second (never retained)
    DISCOVERY/sensor/NODE/label/config   Home Assistant MQTT discovery (retained): a sensor showing the label,
                                         with score, top_k and latency_ms as attributes
"""
from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from edgecls import __version__
from edgecls.errors import ConfigError
from edgecls.integrations.credentials import read_secret_file, redact_url

PASSWORD_ENV = "EDGECLS_MQTT_PASSWORD"
USERNAME_ENV = "EDGECLS_MQTT_USERNAME"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
DEFAULT_PREFIX = "edgecls"
URL_HINT = "Use mqtt://HOST[:PORT]/PREFIX or mqtts://HOST[:PORT]/PREFIX, e.g. mqtt://192.168.1.10/kitchen-cam"
_TOPIC_BAD = re.compile(r"[#+\x00]")


@dataclass(frozen=True)
class MqttSettings:
    """Where and how to publish. `password` never appears in repr()."""

    host: str
    port: int = 1883
    tls: bool = False
    prefix: str = DEFAULT_PREFIX
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    safe_url: str = ""
    ca_file: Path | None = None
    qos: int = 0
    retain: bool = True  # the state topic (availability and discovery are always retained)
    rate: float = 1.0  # per-frame results per second at most; 0 = no per-frame results
    debounce: int = 3  # consecutive frames a label needs before it becomes the state
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    node_id: str = ""
    client_id: str = ""
    keepalive: int = 30
    reconnect_min: float = 1.0  # seconds before the first reconnect attempt, doubling up to reconnect_max
    reconnect_max: float = 30.0
    queue_size: int = 64  # messages waiting for the broker (ours and paho's) before new ones are dropped

    @property
    def availability_topic(self) -> str:
        return f"{self.prefix}/availability"

    @property
    def state_topic(self) -> str:
        return f"{self.prefix}/state"

    @property
    def result_topic(self) -> str:
        return f"{self.prefix}/result"

    @property
    def discovery_topic(self) -> str:
        return f"{self.discovery_prefix}/sensor/{self.node_id}/label/config"

    def describe(self) -> dict[str, Any]:
        """The settings for the run's report: no password."""
        return {"url": self.safe_url, "tls": self.tls, "ca_file": str(self.ca_file) if self.ca_file else None, "qos": self.qos,
                "retain": self.retain, "rate": self.rate, "debounce": self.debounce,
                "discovery": self.discovery_topic if self.discovery else None, "client_id": self.client_id,
                "authenticated": self.username is not None}


def _check_topic_part(value: str, what: str, safe: str) -> str:
    if not value or _TOPIC_BAD.search(value) or value.startswith("/") or value.endswith("/") or "//" in value:
        raise ConfigError(f"MQTT {what} {value!r} in '{safe}' is not a valid topic prefix",
                          "Use letters, digits, '-', '_' and '/' between levels, without '#', '+' or empty levels")
    return value


def node_id_for(prefix: str) -> str:
    """A Home Assistant node id from the prefix: [a-zA-Z0-9_-] only."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", prefix).strip("_") or "edgecls"


def parse_mqtt_url(url: str, *, password_file: str | Path | None = None, environ: dict[str, str] | None = None,
                   **options: Any) -> tuple[MqttSettings, str | None]:
    """(settings, the password as it was spelled in the URL or None): the second is for scrub_argv().

    options: any MqttSettings field (qos, retain, rate, debounce, ca_file, discovery, discovery_prefix, node_id, ...).
    Raises ConfigError naming the URL without its password.
    """
    environ = dict(os.environ) if environ is None else environ
    safe = redact_url(url) if isinstance(url, str) else repr(url)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except (ValueError, AttributeError):
        raise ConfigError(f"cannot parse the MQTT URL '{safe}'", URL_HINT) from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(f"MQTT URL '{safe}' has scheme {parts.scheme or 'none'!r}; mqtt:// or mqtts:// is needed", URL_HINT)
    if not parts.hostname:
        raise ConfigError(f"MQTT URL '{safe}' names no broker host", URL_HINT)
    if parts.query or parts.fragment:
        raise ConfigError(f"MQTT URL '{safe}' has a query or fragment, which edgecls does not read",
                          "Pass settings as options (--mqtt-qos, --mqtt-rate, ...): " + URL_HINT)
    prefix = _check_topic_part(unquote(parts.path.strip("/")) or DEFAULT_PREFIX, "prefix", safe)
    raw_password = None
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        raw_password = userinfo.partition(":")[2] if ":" in userinfo else None
    username = unquote(parts.username) if parts.username else environ.get(USERNAME_ENV) or None
    password = unquote(parts.password) if parts.password else None
    if password_file is not None:
        password = read_secret_file(password_file, "--mqtt-password-file")
    elif environ.get(PASSWORD_ENV):
        password = environ[PASSWORD_ENV]
    if password is not None and username is None:
        raise ConfigError(f"an MQTT password was given for '{safe}' but no user name",
                          f"Put the user in the URL (mqtt://USER@HOST/PREFIX) or in {USERNAME_ENV}")
    settings = _checked(MqttSettings(host=parts.hostname, port=port or DEFAULT_PORTS[scheme], tls=scheme == "mqtts", prefix=prefix,
                                     username=username, password=password, safe_url=safe, **options))
    return settings, raw_password or None


def _checked(settings: MqttSettings) -> MqttSettings:
    """Range checks and defaults that depend on other fields (node id, client id, CA file)."""
    if settings.qos not in (0, 1, 2):
        raise ConfigError(f"--mqtt-qos {settings.qos} is not an MQTT QoS", "Use 0 (at most once), 1 (at least once) or 2 (exactly once)")
    if not 0 <= settings.rate <= 100:
        raise ConfigError(f"--mqtt-rate {settings.rate:g} is outside 0..100 results per second", "Use e.g. 1 (one a second), or 0 for none")
    if not 1 <= settings.debounce <= 1000:
        raise ConfigError(f"--mqtt-debounce {settings.debounce} is outside 1..1000 frames", "Use e.g. 3")
    if not 0 < settings.reconnect_min <= settings.reconnect_max:
        raise ConfigError(f"reconnect delays {settings.reconnect_min:g}..{settings.reconnect_max:g} s are not increasing",
                          "Use e.g. reconnect_min=1, reconnect_max=30")
    if settings.ca_file is not None:
        ca = Path(settings.ca_file).expanduser()
        if not ca.is_file():
            raise ConfigError(f"--mqtt-ca '{ca}' is not a file", "Pass the PEM file of the CA that signed the broker's certificate")
        if not settings.tls:
            raise ConfigError(f"--mqtt-ca was given but '{settings.safe_url}' is not TLS", "Use an mqtts:// URL with --mqtt-ca")
        settings = _replace(settings, ca_file=ca)
    _check_topic_part(settings.discovery_prefix, "discovery prefix", settings.safe_url)
    node = node_id_for(settings.node_id or settings.prefix)
    client = settings.client_id or f"edgecls-{node}-{socket.gethostname()}"[:64]
    return _replace(settings, node_id=node, client_id=client)


def _replace(settings: MqttSettings, **changes: Any) -> MqttSettings:
    from dataclasses import replace

    return replace(settings, **changes)


def discovery_config(settings: MqttSettings, model_name: str, architecture: str) -> dict[str, Any]:
    """Home Assistant MQTT discovery for one sensor: state = the label, attributes = the state message's other keys."""
    node = settings.node_id
    return {
        "name": "Label",
        "unique_id": f"edgecls_{node}_label",
        "object_id": f"{node}_label",
        "state_topic": settings.state_topic,
        "value_template": "{{ value_json.label }}",
        "json_attributes_topic": settings.state_topic,
        "json_attributes_template": "{{ {'score': value_json.score, 'top_k': value_json.top_k, "
                                    "'latency_ms': value_json.latency_ms} | tojson }}",
        "availability_topic": settings.availability_topic,
        "payload_available": "online",
        "payload_not_available": "offline",
        "icon": "mdi:cctv",
        "device": {"identifiers": [f"edgecls_{node}"], "name": f"edgecls {settings.prefix}", "manufacturer": "edgecls",
                   "model": f"{architecture} ({model_name})", "sw_version": __version__},
    }


__all__ = ["DEFAULT_PREFIX", "PASSWORD_ENV", "USERNAME_ENV", "MqttSettings", "discovery_config", "node_id_for", "parse_mqtt_url"]
