"""MQTT / Home Assistant: a REAL Mosquitto broker (Debian's `mosquitto`, started here on a free 127.0.0.1 port with
its own config) and a REAL paho subscriber. The camera runs through the real CLI (a video file, or a live MJPEG
stream over HTTP) or, where exact control of what is published is needed, the MqttSink is fed real Decisions
from the camera's own Postprocessor."""
from __future__ import annotations

import getpass
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.camera_helpers import free_port, mjpeg_camera, shared_tflite, wait_until
from tests.conftest import REPO, assert_clean_error, run_cli

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
pytestmark = [
    pytest.mark.skipif(MOSQUITTO is None, reason="Debian's mosquitto is missing: run 'make setup' as root, or apt-get install mosquitto"),
    pytest.mark.skipif(importlib.util.find_spec("paho") is None, reason="paho-mqtt is not installed (pip install 'edgecls[mqtt]')"),
]

from edgecls.camera.decision import Postprocessor  # noqa: E402
from edgecls.camera.loop import FrameResult  # noqa: E402
from edgecls.errors import ConfigError  # noqa: E402
from edgecls.integrations.credentials import scrub_argv  # noqa: E402
from edgecls.integrations.mqtt import Debouncer, MqttSink  # noqa: E402
from edgecls.integrations.mqtt_config import parse_mqtt_url  # noqa: E402
from edgecls.meta import ModelMeta  # noqa: E402

LABELS = ["cat", "dog", "bird"]
SECRET = "Pa55-w0rd-xyz"


# ---------------------------------------------------------------- a real broker and a real subscriber


class Broker:
    """mosquitto on 127.0.0.1:port with its own config (anonymous, a password file, and/or TLS)."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None, tls: dict[str, Path] | None = None) -> None:
        self.folder, self.users, self.tls = folder, users, tls
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> Broker:
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", f"user {getpass.getuser()}"]
        if self.users:
            passwords = self.folder / "passwords"
            passwords.write_text("")
            for user, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True, capture_output=True)
            passwords.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            lines += [f"cafile {self.tls['ca']}", f"certfile {self.tls['cert']}", f"keyfile {self.tls['key']}"]
        config = self.folder / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        log = open(self.folder / "broker.log", "ab")  # noqa: SIM115 - the broker writes it while it runs
        self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(config)], stdout=log, stderr=log)
        log.close()
        assert wait_until(self._listening, 10), (self.folder / "broker.log").read_text()
        return self

    def _listening(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class Subscriber:
    """A paho client subscribed to '#' that records every message (retained ones included) with its retain flag."""

    def __init__(self, broker: Broker, username: str | None = None, password: str | None = None, ca: Path | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{time.monotonic_ns()}")
        if username:
            self.client.username_pw_set(username, password)
        if ca:
            self.client.tls_set(ca_certs=str(ca))
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.on_connect = lambda client, *args: client.subscribe("#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port, 30)
        self.client.loop_start()
        assert wait_until(self.client.is_connected, 10)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:  # noqa: ARG002
        with self.lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))

    def on(self, topic: str) -> list[str]:
        with self.lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    running = Broker(tmp_path / "broker").start()
    yield running
    running.stop()


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:
    sub = Subscriber(broker)
    yield sub
    sub.close()


@pytest.fixture(scope="module")
def model(plain_int8_exports: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tflite(plain_int8_exports, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def clip(fmnist_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import cv2

    pictures = sorted((fmnist_tree / "test").glob("*/*.png"))[:10]
    path = tmp_path_factory.mktemp("mqtt-clip") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (64, 64))
    for index in range(40):
        image = np.asarray(Image.open(pictures[(index // 5) % len(pictures)]).convert("RGB").resize((64, 64)))
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def model_info() -> Any:
    """What MqttSink.open reads of a backend: its meta and its file name (a real ModelMeta)."""
    meta = ModelMeta(architecture="plain_cnn", input_size=(32, 32), labels=list(LABELS))
    return SimpleNamespace(meta=meta, path=Path("export/tflite-int8/model.tflite"))


def results(labels: list[str], threshold: float = 0.5) -> list[FrameResult]:
    """FrameResults whose Decision comes from the camera's Postprocessor: 0.8 on the named label ('?' = unsure)."""
    post = Postprocessor(LABELS, top_k=2, threshold=threshold)
    made = []
    for index, name in enumerate(labels):
        scores = np.full(len(LABELS), 0.1, np.float32) if name != "?" else np.array([0.4, 0.35, 0.25], np.float32)
        if name != "?":
            scores[LABELS.index(name)] = 0.8
        decision = post(scores)
        made.append(FrameResult(index, index + 1, np.zeros((4, 4, 3), np.uint8), scores, decision,
                                {"inference": 1.5, "end_to_end": 3.0}))
    return made


def sink_for(broker: Broker, prefix: str = "test/cam", clock: Any = time.monotonic, **options: Any) -> MqttSink:
    settings, _ = parse_mqtt_url(f"mqtt://127.0.0.1:{broker.port}/{prefix}", environ={}, reconnect_min=0.1, reconnect_max=0.5, **options)
    return MqttSink(settings, clock=clock)


class Clock:
    """A clock the test advances: the rate limit sees exactly the times the test gives it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(("url", "fragment"), [
    (f"http://u:{SECRET}@h/p", "scheme 'http'"), (f"mqtt://u:{SECRET}@/p", "names no broker host"),
    (f"mqtt://u:{SECRET}@h/p?qos=1", "query or fragment"), (f"mqtt://u:{SECRET}@h/a/+", "not a valid topic prefix"),
    (f"mqtt://u:{SECRET}@h:99999/p", "cannot parse"), (f"mqtt://:{SECRET}@h/p", "no user name"),
])
def test_bad_urls_are_one_line_errors_without_the_password(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_mqtt_url(url, environ={})
    assert fragment in str(info.value) and SECRET not in str(info.value) and "\n" not in str(info.value)


def test_settings_defaults_and_credential_sources(tmp_path: Path) -> None:
    settings, raw = parse_mqtt_url("mqtts://bob:" + SECRET + "@broker.lan/home/cam", environ={})
    assert (settings.host, settings.port, settings.tls, settings.prefix, settings.username) == ("broker.lan", 8883, True, "home/cam", "bob")
    assert settings.password == SECRET and raw == SECRET and SECRET not in repr(settings) and SECRET not in json.dumps(settings.describe())
    assert settings.safe_url == "mqtts://bob:***@broker.lan/home/cam"
    assert settings.discovery_topic == "homeassistant/sensor/home_cam/label/config"
    env, _ = parse_mqtt_url("mqtt://h", environ={"EDGECLS_MQTT_USERNAME": "eve", "EDGECLS_MQTT_PASSWORD": "from-env"})
    assert (env.prefix, env.port, env.username, env.password) == ("edgecls", 1883, "eve", "from-env")
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n")
    secret_file.chmod(0o600)
    filed, raw = parse_mqtt_url("mqtt://eve@h/x", password_file=secret_file, environ={"EDGECLS_MQTT_PASSWORD": "from-env"})
    assert filed.password == "from-file" and raw is None
    for options, fragment in (({"qos": 3}, "--mqtt-qos 3"), ({"rate": -1}, "--mqtt-rate"), ({"debounce": 0}, "--mqtt-debounce"),
                              ({"ca_file": tmp_path / "none.pem"}, "--mqtt-ca")):
        with pytest.raises(ConfigError, match=fragment):
            parse_mqtt_url("mqtt://h/p", environ={}, **options)


def test_scrub_argv_hides_a_password_from_ps() -> None:
    code = ("import sys; from edgecls.integrations.credentials import scrub_argv; "
            "ok = scrub_argv(sys.argv[1].split(':')[2].split('@')[0]); "
            "print(ok, open('/proc/self/cmdline', 'rb').read().split(b'\\0')[-2].decode(), sys.argv[1])")
    proc = subprocess.run([sys.executable, "-c", code, f"mqtt://u:{SECRET}@h/p"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.stdout.split() == ["True", "mqtt://u:" + "*" * len(SECRET) + "@h/p", "mqtt://u:" + "*" * len(SECRET) + "@h/p"], proc.stderr
    assert scrub_argv("") is True


def test_debouncer_needs_n_consecutive_frames() -> None:
    debouncer = Debouncer(3)
    changes = [label for label in "aabaaabbbcb" if debouncer.update(label)]
    assert changes == ["a", "b"] and debouncer.state == "b"
    one = Debouncer(1)
    assert [label for label in "aab" if one.update(label)] == ["a", "b"]


# ---------------------------------------------------------------- the sink against the real broker


def test_discovery_availability_debounced_state_and_rate_limit(broker: Broker, subscriber: Subscriber) -> None:
    clock = Clock()
    sink = sink_for(broker, clock=clock, rate=4.0, debounce=3, qos=1)
    sink.open(model_info())
    labels = ["cat", "cat", "dog", "cat", "cat", "cat"] + ["dog"] * 26 + ["?"] * 32  # 64 frames, 1/64 s apart: 1 s
    for result in results(labels):
        sink.offer(result)
        clock.now += 1 / 64
    assert wait_until(lambda: len(subscriber.on("test/cam/result")) == 4 and len(subscriber.on("test/cam/state")) == 3)
    sink.close()
    assert wait_until(lambda: subscriber.on("test/cam/availability")[-1:] == ["offline"])
    config = json.loads(subscriber.on("homeassistant/sensor/test_cam/label/config")[0])
    assert config["state_topic"] == "test/cam/state" and config["availability_topic"] == "test/cam/availability"
    assert config["value_template"] == "{{ value_json.label }}" and config["json_attributes_topic"] == "test/cam/state"
    assert {"score", "top_k", "latency_ms"} <= set(config["json_attributes_template"].replace("'", " ").split())
    assert config["device"]["identifiers"] == ["edgecls_test_cam"] and config["unique_id"] == "edgecls_test_cam_label"
    assert subscriber.on("test/cam/availability") == ["online", "offline"]
    states = [json.loads(p) for p in subscriber.on("test/cam/state")]
    assert [s["label"] for s in states] == ["cat", "dog", "uncertain"]  # each after 3 frames in a row; the early dog did not count
    assert [s["previous"] for s in states] == [None, "cat", "dog"] and states[1]["frame"] == 8
    assert {"score", "top_k", "latency_ms", "time"} <= set(states[0]) and states[0]["latency_ms"] == {"inference": 1.5, "end_to_end": 3.0}
    frames = [json.loads(p)["frame"] for p in subscriber.on("test/cam/result")]
    assert frames == [0, 16, 32, 48]  # 4 a second at most: one every 16 frames of 1/64 s
    report = sink.report()
    assert report["results_published"] == 4 and report["states_published"] == 3 and report["state_changes"] == 3
    assert report["connects"] == 1 and report["dropped_offline"] == 0 and report["state"] == "uncertain"
    late = Subscriber(broker)  # a subscriber that comes later (Home Assistant restarting) gets all three, retained
    wanted = {"test/cam/state", "test/cam/availability", "homeassistant/sensor/test_cam/label/config"}
    assert wait_until(lambda: wanted <= {t for t, _, retain in late.messages if retain})
    assert json.loads(late.on("test/cam/state")[0])["label"] == "uncertain" and late.on("test/cam/availability") == ["offline"]
    late.close()


def test_reconnects_after_the_broker_restarts_and_the_loop_never_waits(broker: Broker, subscriber: Subscriber,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "edgecls.camera.mqtt")
    clock = Clock()
    sink = sink_for(broker, clock=clock, rate=10.0, debounce=1)
    sink.open(model_info())

    def offer(labels: list[str]) -> None:
        for result in results(labels):
            sink.offer(result)
            clock.now += 0.1  # every frame is due at 10 a second

    offer(["cat"] * 3)
    assert wait_until(lambda: len(subscriber.on("test/cam/result")) == 3)
    broker.stop()
    assert wait_until(lambda: not sink._client.is_connected())
    offer(["dog"] * 200)  # while the broker is away: counted, never waited for
    assert wait_until(lambda: sink.report()["dropped_offline"] + sink.report()["dropped_queue_full"] == 200)
    broker.start()  # same port
    assert wait_until(lambda: sink.report()["connects"] == 2, 15)
    availability = lambda: subscriber.on("test/cam/availability")  # noqa: E731
    assert wait_until(lambda: availability()[-1:] == ["online"] and len(availability()) >= 2)
    assert wait_until(lambda: subscriber.on("test/cam/state") and json.loads(subscriber.on("test/cam/state")[-1])["label"] == "dog")
    before = len(subscriber.on("test/cam/result"))
    offer(["bird"] * 2)
    assert wait_until(lambda: len(subscriber.on("test/cam/result")) >= before + 2)
    sink.close()
    report = sink.report()
    assert report["disconnects"] == 1 and report["connects"] == 2 and report["state"] == "bird"
    assert any("lost the broker" in r.getMessage() for r in caplog.records)
    assert any("reconnected" in r.getMessage() for r in caplog.records)


def test_a_broker_that_is_down_at_start_costs_the_run_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens here
    settings, _ = parse_mqtt_url(f"mqtt://127.0.0.1:{port}/down", environ={}, reconnect_min=0.1, reconnect_max=0.2)
    sink = MqttSink(settings, connect_wait=0.3)
    sink.open(model_info())
    for result in results(["cat"] * 50):
        sink.offer(result)
    sink.close()
    report = sink.report()
    assert report["connects"] == 0 and report["connect_failures"] >= 1 and report["results_published"] == 0
    assert "cannot reach the MQTT broker" in (report["last_error"] or "")
    assert sum("cannot reach" in r.getMessage() for r in caplog.records) == 1  # once, not once per attempt


def test_wrong_password_is_reported_and_never_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broker = Broker(tmp_path / "auth", users={"alice": SECRET}).start()
    try:
        caplog.set_level(logging.DEBUG)
        wrong = tmp_path / "wrong"
        wrong.write_text("not-" + SECRET)
        wrong.chmod(0o600)
        settings, _ = parse_mqtt_url(f"mqtt://alice@127.0.0.1:{broker.port}/auth", password_file=wrong, environ={},
                                     reconnect_min=0.1, reconnect_max=0.2)
        sink = MqttSink(settings, connect_wait=1.0)
        sink.open(model_info())
        sink.close()
        report = sink.report()
        assert report["connects"] == 0 and "refused the connection" in report["last_error"] and "authori" in report["last_error"].lower()
        text = json.dumps(report) + "\n".join(r.getMessage() for r in caplog.records)
        assert SECRET not in text and "--mqtt-password-file" in text
        right, _ = parse_mqtt_url(f"mqtt://alice@127.0.0.1:{broker.port}/auth", environ={"EDGECLS_MQTT_PASSWORD": SECRET})
        good = MqttSink(right)
        good.open(model_info())
        good.close()
        assert good.report()["connects"] == 1
    finally:
        broker.stop()


def test_tls_with_a_ca_file(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    pki = tmp_path / "pki"
    pki.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=pki, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=edgecls test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (pki / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "san.ext", "-out", "server.pem")
    broker = Broker(tmp_path / "tls", tls={"ca": pki / "ca.pem", "cert": pki / "server.pem", "key": pki / "server.key"}).start()
    try:
        subscriber = Subscriber(broker, ca=pki / "ca.pem")
        settings, _ = parse_mqtt_url(f"mqtts://127.0.0.1:{broker.port}/tls", environ={}, ca_file=pki / "ca.pem", debounce=1)
        sink = MqttSink(settings)
        sink.open(model_info())
        sink.offer(results(["bird"])[0])
        assert wait_until(lambda: subscriber.on("tls/state"))
        sink.close()
        subscriber.close()
        assert json.loads(subscriber.on("tls/state")[0])["label"] == "bird" and sink.report()["tls"] is True
        untrusted, _ = parse_mqtt_url(f"mqtts://127.0.0.1:{broker.port}/tls", environ={}, reconnect_min=0.1, reconnect_max=0.2)
        refused = MqttSink(untrusted, connect_wait=0.5)  # the system CAs do not know this broker's certificate
        refused.open(model_info())
        refused.close()
        assert refused.report()["connects"] == 0
    finally:
        broker.stop()


# ---------------------------------------------------------------- the real CLI


def test_camera_cli_publishes_to_the_broker(model: Path, clip: Path, broker: Broker, subscriber: Subscriber, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    result = run_cli("camera", "--device", clip, "--model", model, "--report", report, "--json", "--threshold", "0.0",
                     "--mqtt", f"mqtt://127.0.0.1:{broker.port}/cli/cam", "--mqtt-rate", "100", "--mqtt-debounce", "2", "--mqtt-qos", "1",
                     timeout=180)
    assert result.returncode == 0, result.output
    data = json.loads(report.read_text())
    mqtt = data["integrations"]["mqtt"]
    assert mqtt["url"] == f"mqtt://127.0.0.1:{broker.port}/cli/cam" and mqtt["qos"] == 1 and mqtt["connects"] == 1
    assert wait_until(lambda: subscriber.on("cli/cam/availability")[-1:] == ["offline"])
    assert subscriber.on("cli/cam/availability") == ["online", "offline"]
    assert len(subscriber.on("cli/cam/result")) == mqtt["results_published"] >= 1
    states = [json.loads(p)["label"] for p in subscriber.on("cli/cam/state")]
    assert len(states) == mqtt["states_published"] == mqtt["state_changes"] >= 1 and states[-1] == mqtt["state"]
    assert set(states) <= set(data["labels"]) and json.loads(subscriber.on("homeassistant/sensor/cli_cam/label/config")[0])


def test_credentials_stay_out_of_ps_logs_and_report_and_the_last_will_fires_on_sigkill(
        model: Path, fmnist_tree: Path, tmp_path: Path) -> None:
    broker = Broker(tmp_path / "auth", users={"alice": SECRET}).start()
    pictures = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((fmnist_tree / "test").glob("*/*.png"))[:5]]
    try:
        subscriber = Subscriber(broker, "alice", SECRET)
        report = tmp_path / "r.json"
        with mjpeg_camera(pictures) as camera:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from edgecls.cli.app import main; main()", "camera", "--device", camera, "--model", str(model),
                 "--report", str(report), "--mqtt", f"mqtt://alice:{SECRET}@127.0.0.1:{broker.port}/kill/cam", "--mqtt-rate", "5"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            try:
                assert wait_until(lambda: subscriber.on("kill/cam/availability")[-1:] == ["online"], 60), proc.poll()
                assert wait_until(lambda: report.is_file() and json.loads(report.read_text())["frames"] > 0, 30)
                cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
                assert SECRET.encode() not in cmdline and b"alice:" + b"*" * len(SECRET) + b"@" in cmdline  # what ps shows
                proc.kill()  # SIGKILL: no goodbye, the broker publishes the last will
                assert wait_until(lambda: subscriber.on("kill/cam/availability")[-1:] == ["offline"], 30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        text = out.decode() + err.decode() + report.read_text()
        assert SECRET not in text and "alice:***@" in text and "EDGECLS_MQTT_PASSWORD" in err.decode()
        subscriber.close()
    finally:
        broker.stop()


def test_cli_mqtt_mistakes_are_clean_errors(model: Path, clip: Path, tmp_path: Path) -> None:
    assert_clean_error(run_cli("camera", "--device", clip, "--model", model, "--report", tmp_path / "r.json", "--mqtt",
                               f"mqtp://bob:{SECRET}@h/p"), "scheme 'mqtp'", "bob:***@h")
    result = run_cli("camera", "--device", clip, "--model", model, "--report", tmp_path / "r.json", "--mqtt", "mqtt://h/p",
                     "--mqtt-password-file", tmp_path / "missing")
    assert_clean_error(result, "--mqtt-password-file", "does not exist")
    assert SECRET not in result.output and not (tmp_path / "r.json").exists()
