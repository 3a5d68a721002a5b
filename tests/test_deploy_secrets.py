"""A camera stream's password (`rtsp://user:PASS@cam/...`, from the profile or `deploy --camera`) never lands in the
bundle's world-readable files (the unit, install.sh, README.md, bundle.json) or on the service's command line: it is a
0600 file handed over by systemd (LoadCredential=), and `edgecls camera`'s own parser rebuilds the full URL from the
unit's arguments and that file. Mistakes are one `error:` line, the password redacted, nothing written."""
from __future__ import annotations

import json
import stat
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest

from edgecls.camera.sources import CameraError, source_with_password
from edgecls.deploy import build_bundle
from edgecls.deploy.camera_secret import camera_setting
from edgecls.errors import ConfigError
from edgecls.integrations.credentials import USERINFO_SAFE
from tests.conftest import assert_clean_error, run_cli
from tests.test_deploy_mqtt import camera_options
from tests.test_deploy_safety import (  # noqa: F401 - wheel is a fixture
    canaries,
    exec_argv,
    make_run,
    run_install,
    snapshot,
    verify_unit,
    wheel,
    write_profile,
)

SECRET = "p@ss w0rd$HOME%'\"!"  # @, space, quotes, $ and %: it must come back byte for byte
SPELLED = quote(SECRET, safe=USERINFO_SAFE)  # as the URL carries it
URL_PATH = "192.168.1.20:554/Streaming/Channels/101?transport=tcp"
TEXT_FILES = ("edgecls-camera.service", "install.sh", "bundle.json", "README.md", "requirements.txt")


def assert_secret_free(out: Path, names: tuple[str, ...] = TEXT_FILES) -> None:
    for name in names:
        text = (out / name).read_text()
        assert SECRET not in text and SPELLED not in text and "w0rd" not in text, name


def test_a_profile_password_becomes_a_root_only_credential(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    profile = write_profile(tmp_path / "cam.toml", camera_source=f"rtsp://admin:{SPELLED}@{URL_PATH}")
    out = tmp_path / "bundle"
    result = run_cli("deploy", run, "--device", profile, "--out", out)
    assert result.returncode == 0, result.output
    assert "w0rd" not in result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "camera-password" in warnings[0] and str(profile) in warnings[0], result.stderr
    service_url = f"rtsp://admin@{URL_PATH}"

    password_file = out / "camera-password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600 and password_file.read_text() == SECRET + "\n"
    assert_secret_free(out)
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["camera"] == {"source": service_url, "password_file": "camera-password"}
    assert manifest["device"]["camera"]["source"] == service_url
    assert manifest["files"]["camera-password"]["sha256"] is None  # bundle.json is world-readable: no guessable hash

    unit = (out / "edgecls-camera.service").read_text()
    assert "\nLoadCredential=camera-password:/opt/edgecls/camera-password\n" in unit
    argv = exec_argv(unit, "/run/credentials/x")
    assert f"--device={service_url}" in argv and "--device-password-file=/run/credentials/x/camera-password" in argv

    cwd, prefix = tmp_path / "cwd", tmp_path / "prefix"
    cwd.mkdir()
    done = run_install(out, cwd, "--no-apt", "--no-venv", "--no-service", "--prefix", str(prefix))
    assert done.returncode == 0 and "w0rd" not in done.stdout + done.stderr, done.stdout + done.stderr
    installed_secret = prefix / "camera-password"
    assert stat.S_IMODE(installed_secret.stat().st_mode) == 0o600 and installed_secret.read_text() == SECRET + "\n"
    assert_secret_free(prefix, tuple(name for name in TEXT_FILES if name != "install.sh"))  # what install.sh copied
    installed = verify_unit(prefix / "edgecls-camera.service", prefix, tmp_path)
    assert f"LoadCredential=camera-password:{prefix}/camera-password" in installed

    # what the service runs: `edgecls camera`'s own parser, then the URL it opens, rebuilt in memory
    params = camera_options(exec_argv(installed, str(prefix)))  # as if systemd's credentials folder were the prefix
    assert params["source"] == service_url and params["device_password_file"] == prefix / "camera-password"
    full = source_with_password(str(params["source"]), params["device_password_file"])  # type: ignore[arg-type]
    assert full == f"rtsp://admin:{SPELLED}@{URL_PATH}" and unquote(urlsplit(full).password or "") == SECRET


def test_password_file_or_no_password(wheel: Path, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    run = make_run(tmp_path / "run")
    secret = tmp_path / "pw"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    setting = camera_setting("picamera2", "rtsp://viewer@cam.lan/h264", secret)
    with_file = build_bundle(run, "pi5", tmp_path / "a", wheel=wheel, camera=setting)
    out = Path(with_file["out"])
    assert (out / "camera-password").read_text() == SECRET + "\n" and with_file["picamera2"] is False  # --camera wins over the profile
    assert_secret_free(out)
    argv = exec_argv((out / "edgecls-camera.service").read_text(), "/c")
    assert source_with_password(argv[3].split("=", 1)[1], secret) == f"rtsp://viewer:{SPELLED}@cam.lan/h264"

    spelled = camera_setting("picamera2", f"rtsps://cam:{SPELLED}@10.0.0.9/live")  # deploy --camera URL-with-password
    assert (spelled.source, spelled.password, spelled.password_in_url, spelled.from_profile) == (
        "rtsps://cam@10.0.0.9/live", SECRET, SPELLED, False)
    out = Path(build_bundle(run, "pi5", tmp_path / "c", wheel=wheel, camera=spelled)["out"])
    assert (out / "camera-password").read_text() == SECRET + "\n"
    assert_secret_free(out)
    argv = exec_argv((out / "edgecls-camera.service").read_text(), "/c")
    assert "--device=rtsps://cam@10.0.0.9/live" in argv and "--device-password-file=/c/camera-password" in argv

    plain = build_bundle(run, "pi5", tmp_path / "b", wheel=wheel, camera=camera_setting("picamera2", "rtsp://cam.lan/h264"))
    out = Path(plain["out"])
    unit = (out / "edgecls-camera.service").read_text()
    assert not (out / "camera-password").exists() and "camera-password" not in unit and "--device=rtsp://cam.lan/h264" in unit
    assert plain["camera"] == {"source": "rtsp://cam.lan/h264", "password_file": None}


def test_camera_password_mistakes_are_clean_errors_before_any_work(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    secret = tmp_path / "pw"
    secret.write_text("pw\n")
    before = snapshot(tmp_path, skip=tmp_path / "none")
    cli_cases: list[tuple[list[str | Path], list[str]]] = [  # through the CLI: one line, no traceback, nothing written
        (["--camera", f"rtsp://cam:{SPELLED}@host/x", "--camera-password-file", secret], ["given twice", "cam:***@host"]),
        (["--camera", f"rtsp://cam:{SPELLED}@host/x\nExecStartPre=/bin/touch /tmp/pwned"], ["newline or control character"]),
        (["--camera", f"rtsp://cam:{SPELLED}@host/x", "--out", run, "--force"], ["would overwrite the input RUN"]),
    ]
    for args, fragments in cli_cases:
        result = run_cli("deploy", run, "--device", "pi5", "--out", tmp_path / "b", *args)
        assert_clean_error(result, *fragments)
        assert "w0rd" not in result.output, args
    assert "shell history" in result.stderr  # the last case: a password moved from the command line is warned about once
    assert snapshot(tmp_path, skip=tmp_path / "none") == before and not canaries(tmp_path)
    api_cases: list[tuple[tuple[str | None, str | None, Path | None], str]] = [  # the same checks, without a process each
        (("0", None, secret), "not a stream URL"),
        ((None, "/dev/video0", secret), "not a stream URL"),
        ((None, None, secret), "no stream URL"),
        ((None, "rtsp://host/x", secret), "names no user"),
        ((None, f"rtsp://:{SPELLED}@host/x", None), "names no user"),
        ((None, "rtsp://cam@host/x", tmp_path / "missing"), "does not exist"),
        ((None, "rtsp://cam:a%0Ab@host/x", None), "control character"),
        ((None, " ", None), "is empty"),
    ]
    for (profile_source, source, password_file), fragment in api_cases:
        with pytest.raises(ConfigError, match=fragment) as caught:
            camera_setting(profile_source, source, password_file)
        assert "w0rd" not in str(caught.value) and "\n" not in str(caught.value), source


def test_camera_device_password_file_mistakes(tmp_path: Path) -> None:
    """`edgecls camera --device-password-file`: refused before the model is even looked at, the password redacted."""
    secret = tmp_path / "pw"
    secret.write_text(SECRET + "\n")
    twice = run_cli("camera", "--device", f"rtsp://cam:{SPELLED}@127.0.0.1/x", "--device-password-file", secret,
                    "--model", tmp_path / "no.tflite")
    assert_clean_error(twice, "given twice", "cam:***@127.0.0.1")
    assert "w0rd" not in twice.output
    for source, fragment in [("0", "not a stream URL"), ("http://127.0.0.1/x", "names no user")]:
        with pytest.raises(CameraError, match=fragment):
            source_with_password(source, secret)
    with pytest.raises(ConfigError, match="does not exist"):
        source_with_password("rtsp://cam@127.0.0.1/x", tmp_path / "missing")
    assert not (tmp_path / "no.tflite").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["pw"]


def test_a_bad_profile_camera_url_is_refused_without_showing_its_password(tmp_path: Path) -> None:
    from edgecls.devices import PROFILE_DIR, load_profile

    profile = tmp_path / "cam.toml"
    text = (PROFILE_DIR / "pi5.toml").read_text()
    assert 'source = "picamera2"' in text
    profile.write_text(text.replace('source = "picamera2"', 'source = "rtsp://admin:hunter2secret@cam/stream\\u0007"'))
    with pytest.raises(ConfigError) as caught:
        load_profile(profile)
    assert "hunter2secret" not in str(caught.value) and "admin:***@cam" in str(caught.value), caught.value
