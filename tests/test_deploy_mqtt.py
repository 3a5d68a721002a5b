"""`edgecls deploy --mqtt`: the bundle's service publishes to a broker; the password is a 0600 file handed over by
systemd (LoadCredential=), never in the unit, install.sh, README.md or bundle.json; the unit passes `systemd-analyze
verify`, and what the service would run reads back the same URL and password through `edgecls camera`'s own parser."""
from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from edgecls.deploy import build_bundle
from edgecls.deploy.mqtt import mqtt_setting
from edgecls.errors import ConfigError
from edgecls.integrations.mqtt_config import parse_mqtt_url
from tests.conftest import assert_clean_error, run_cli
from tests.test_deploy_safety import canaries, exec_argv, make_run, run_install, snapshot, verify_unit, wheel  # noqa: F401 - fixture

SECRET = "s3cr%t$HOME'\"pw"  # quotes, $ and %: it must come out of the credential file byte for byte
URL_PREFIX = "kitchen-%41$HOME"  # % and $ in the prefix: systemd must pass them through unexpanded
TEXT_FILES = ("edgecls-camera.service", "install.sh", "bundle.json", "README.md", "requirements.txt")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "broker-ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nnot parsed at deploy time\n-----END CERTIFICATE-----\n")
    return path


def test_a_password_in_the_url_becomes_a_root_only_credential(ca: Path, tmp_path: Path) -> None:
    from urllib.parse import quote

    run = make_run(tmp_path / "run")
    out = tmp_path / "bundle"
    url = f"mqtts://cam:{quote(SECRET, safe='')}@broker.lan:8883/{URL_PREFIX}"
    result = run_cli("deploy", run, "--device", "pi5", "--out", out, "--mqtt", url, "--mqtt-ca", ca)
    assert result.returncode == 0, result.output
    assert SECRET not in result.output and quote(SECRET, safe="") not in result.output
    assert "shell history" in result.stderr and "mqtt-password" in result.stdout  # the warning, and where it went
    service_url = f"mqtts://cam@broker.lan:8883/{URL_PREFIX}"

    password_file = out / "mqtt-password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600 and password_file.read_text() == SECRET + "\n"
    for name in TEXT_FILES:
        text = (out / name).read_text()
        assert SECRET not in text and quote(SECRET, safe="") not in text, name
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["mqtt"] == {"url": service_url, "password_file": "mqtt-password", "ca_file": "mqtt-ca.pem"}
    assert manifest["files"]["mqtt-password"]["sha256"] is None  # bundle.json is world-readable: no guessable hash
    assert (out / "mqtt-ca.pem").read_bytes() == ca.read_bytes()

    unit = (out / "edgecls-camera.service").read_text()
    assert "\nLoadCredential=mqtt-password:/opt/edgecls/mqtt-password\n" in unit
    argv = exec_argv(unit, "/run/credentials/x")
    assert f"--mqtt={service_url}" in argv
    assert "--mqtt-password-file=/run/credentials/x/mqtt-password" in argv and "--mqtt-ca=/opt/edgecls/mqtt-ca.pem" in argv

    cwd, prefix = tmp_path / "cwd", tmp_path / "prefix"
    cwd.mkdir()
    done = run_install(out, cwd, "--no-apt", "--no-venv", "--no-service", "--prefix", str(prefix))
    assert done.returncode == 0 and SECRET not in done.stdout + done.stderr, done.stdout + done.stderr
    installed_secret = prefix / "mqtt-password"
    assert stat.S_IMODE(installed_secret.stat().st_mode) == 0o600 and (prefix / "mqtt-ca.pem").is_file()
    installed = verify_unit(prefix / "edgecls-camera.service", prefix, tmp_path)
    argv = exec_argv(installed, str(prefix))  # as if systemd's credentials folder were the prefix (the same file names)
    assert f"LoadCredential=mqtt-password:{prefix}/mqtt-password" in installed and SECRET not in installed

    # what the service runs: `edgecls camera`'s own parser reads the same broker, user and password back
    options = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--mqtt"))
    settings, in_url = parse_mqtt_url(options["mqtt"], password_file=options["mqtt-password-file"], environ={},
                                      ca_file=options["mqtt-ca"])
    assert (settings.host, settings.port, settings.tls, settings.username, settings.password, in_url) == (
        "broker.lan", 8883, True, "cam", SECRET, None)
    assert settings.prefix == "kitchen-A$HOME" and settings.ca_file == prefix / "mqtt-ca.pem"


def camera_options(argv: list[str]) -> dict[str, object]:
    """The options `edgecls camera` parses from the unit's ExecStart (argv[0] the program, argv[1] 'camera'), not run."""
    import typer

    from edgecls.cli.camera import camera_command

    app = typer.Typer()
    app.command("camera")(camera_command)
    app.command("other")(camera_command)  # two commands: a group, so "camera" is looked up by name
    command = typer.main.get_command(app).commands["camera"]  # type: ignore[attr-defined]
    with command.make_context("camera", list(argv[2:])) as context:
        return dict(context.params)


def test_password_file_or_no_password(wheel: Path, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    run = make_run(tmp_path / "run")
    secret = tmp_path / "pw"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    with_file = build_bundle(run, "pi5", tmp_path / "a", wheel=wheel, mqtt=mqtt_setting("mqtt://cam@10.0.0.2/cam1", secret))
    out = Path(with_file["out"])
    assert (out / "mqtt-password").read_text() == SECRET + "\n" and stat.S_IMODE((out / "mqtt-password").stat().st_mode) == 0o600
    assert "LoadCredential=mqtt-password:" in (out / "edgecls-camera.service").read_text()
    assert all(SECRET not in (out / name).read_text() for name in TEXT_FILES)

    anonymous = build_bundle(run, "pi5", tmp_path / "b", wheel=wheel, mqtt=mqtt_setting("mqtt://10.0.0.2"))
    out = Path(anonymous["out"])
    unit = (out / "edgecls-camera.service").read_text()
    assert not (out / "mqtt-password").exists() and "mqtt-password" not in unit
    assert [a for a in exec_argv(unit, "/c") if a.startswith("--mqtt")] == ["--mqtt=mqtt://10.0.0.2"]
    assert anonymous["mqtt"] == {"url": "mqtt://10.0.0.2", "password_file": None, "ca_file": None}

    tuned = build_bundle(run, "pi5", tmp_path / "d", wheel=wheel,
                         mqtt=mqtt_setting("mqtt://10.0.0.2/cam", qos=1, rate=0.5, debounce=5, retain=False, discovery=True))
    assert tuned["mqtt"] == {"url": "mqtt://10.0.0.2/cam", "password_file": None, "ca_file": None, "qos": 1, "rate": 0.5, "debounce": 5,
                             "retain": False}  # discovery=True is the camera's default: not repeated
    argv = exec_argv((Path(tuned["out"]) / "edgecls-camera.service").read_text(), "/c")
    assert [a for a in argv if a.startswith("--mqtt")] == ["--mqtt=mqtt://10.0.0.2/cam", "--mqtt-qos=1", "--mqtt-rate=0.5",
                                                             "--mqtt-debounce=5", "--mqtt-no-retain"]
    params = camera_options(argv)  # what `edgecls camera` makes of the service's command line
    assert (params["mqtt"], params["mqtt_qos"], params["mqtt_rate"], params["mqtt_debounce"], params["mqtt_retain"]) == (
        "mqtt://10.0.0.2/cam", 1, 0.5, 5, False)

    plain = build_bundle(run, "pi5", tmp_path / "c", wheel=wheel)
    assert plain["mqtt"] is None and "--mqtt" not in (Path(plain["out"]) / "edgecls-camera.service").read_text()


def test_mqtt_mistakes_are_clean_errors_before_any_work(ca: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    secret = tmp_path / "pw"
    secret.write_text("pw\n")
    before = snapshot(tmp_path, skip=tmp_path / "none")
    cli_cases: list[tuple[list[str | Path], list[str]]] = [  # through the CLI: one line, no traceback, nothing written
        (["--mqtt", f"http://cam:{SECRET}@host/x"], ["scheme 'http'", "mqtt://"]),
        (["--mqtt-ca", ca], ["--mqtt-ca was given without --mqtt"]),
        (["--mqtt", f"mqtt://cam:{SECRET}@host/x\nExecStartPre=/bin/touch /tmp/pwned"], ["newline or control character"]),
    ]
    for args, fragments in cli_cases:
        result = run_cli("deploy", run, "--device", "pi5", "--out", tmp_path / "b", *args)
        assert_clean_error(result, *fragments)
        assert SECRET not in result.output, args
    assert snapshot(tmp_path, skip=tmp_path / "none") == before and not canaries(tmp_path)
    api_cases: list[tuple[tuple[str | None, Path | None, Path | None], str]] = [  # the same checks, without a process each
        (("mqtt://host/a#b", None, None), "query or fragment"),
        (("mqtt://host/x", None, ca), "is not TLS"),
        ((None, secret, None), "--mqtt-password-file was given without --mqtt"),
        (("mqtt://host/x", secret, None), "no user name"),
        ((f"mqtt://cam:{SECRET}@host/x", secret, None), "given twice"),
        (("mqtt://cam@host/x", tmp_path / "missing", None), "does not exist"),
        ((f"mqtt://cam:{SECRET}@/x", None, None), "no broker host"),
    ]
    for (url, password_file, ca_file), fragment in api_cases:
        with pytest.raises(ConfigError, match=fragment) as caught:
            mqtt_setting(url, password_file, ca_file)
        assert SECRET not in str(caught.value), url
    for options, fragment in [({"qos": 3}, "not an MQTT QoS"), ({"rate": 500.0}, "outside 0..100"), ({"debounce": 0}, "outside 1..1000")]:
        with pytest.raises(ConfigError, match=fragment):
            mqtt_setting(f"mqtt://cam:{SECRET}@host/x", **options)
    with pytest.raises(ConfigError, match="--mqtt-rate was given without --mqtt"):
        mqtt_setting(None, rate=2.0)
