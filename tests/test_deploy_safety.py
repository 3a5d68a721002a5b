"""Deployment safety (issue 9): what users run as root on their devices.

- Every value that reaches install.sh or the systemd unit (profile fields, --serve, the camera URL, the install
  prefix, the model file name, labels, folder names) is fuzzed with shell and systemd metacharacters: `bash -n`,
  `install.sh --help`, a real install into a temporary prefix (--no-apt --no-venv --no-service: nothing outside
  it changes, a `touch pwned` payload never runs) and `systemd-analyze verify` of the unit it writes all pass,
  and systemd's own rules read the ExecStart arguments back unchanged. Newlines are refused everywhere.
- `deploy --force` never deletes the run, a folder holding it, or a folder edgecls did not make.
- The live view needs a token: made at deploy time, 0600 in the bundle, root-only once installed, handed to the
  service by systemd (never on a command line), printed once.

The run folders here are what `edgecls export` leaves (meta.json, export_report.json, an artifact file): the model
bytes are never loaded (the install runs with --no-venv), so no training is needed; the edgecls wheel is built once.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import tomllib

from edgecls.camera.access import read_token_file
from edgecls.deploy import build_bundle, build_wheel
from edgecls.deploy.layout import DEFAULT_PREFIX
from edgecls.deploy.live_view import parse_serve
from edgecls.deploy.safe_text import systemd_escape, systemd_word_text
from edgecls.devices import PROFILE_DIR, DeviceProfile, checked_profile, load_profile
from edgecls.errors import ConfigError, EdgeclsError, ModelError
from edgecls.fsutil import OUTPUT_MARKER, make_marker
from edgecls.meta import ModelMeta
from tests.conftest import assert_clean_error, run_cli

CANARY = "pwned"
PAYLOADS = {  # each must come out of every script and unit exactly as it went in, and never run
    "double-quote": f'x"; touch {CANARY}; echo "',
    "single-quote": f"x'; touch {CANARY}; echo '",
    "dollar-paren": f"$(touch {CANARY})",
    "backticks": f"`touch {CANARY}`",
    "specifiers-and-variables": "100% %n %d %% ${HOME} $$ $PATH",
    "amp-hash-semicolon": "a & b # c ; d | e > f",
    "spaces-and-backslashes": 'a  b\\ c\\\\ \\" d \\n',
    "leading-dash": "--help",
}
CONTROL = {"newline": f"x\ntouch {CANARY}", "carriage-return": f"x\rtouch {CANARY}", "tab": "a\tb", "nul": "a\x00b"}
UNSAFE_IN_PROGRAM_PATH = re.compile(r"[\"'\\]")
UNIT_PATH = Path("/etc/systemd/system/edgecls-camera.service")
RTSP = "rtsp://admin:p%40ss%w0rd@192.168.1.20:554/stream1"  # a password with % (URL-encoded @ and a bare %w)
RTSP_SERVICE = "rtsp://admin@192.168.1.20:554/stream1"  # what the unit carries: the password is a credential file


# ----------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """edgecls' wheel, built once for every bundle of this module."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def make_run(folder: Path, artifact: str = "model.tflite", labels: tuple[str, ...] = ("cat", "dog")) -> Path:
    """A run folder with a tflite int8 export, as `edgecls export` leaves it."""
    export = folder / "export" / "tflite-int8"
    export.mkdir(parents=True)
    meta = ModelMeta(architecture="plain_cnn", input_size=(32, 32), labels=list(labels), format="tflite", precision="int8")
    meta.save(export / "meta.json")
    (export / artifact).write_bytes(b"TFL3 never loaded here")
    (export / "export_report.json").write_text(json.dumps({"artifact": artifact, "validation": {"top1_agreement": 1.0, "passed": True}}))
    make_marker(export, "export")
    return folder


def toml_value(value: object) -> str:
    """A TOML value: strings as basic strings holding `value` exactly (JSON's escapes are TOML's), lists of them, numbers."""
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else str(value)


def write_profile(path: Path, fields: dict[str, object] | None = None, camera_source: str | None = None) -> Path:
    """pi5's profile with some fields (and the camera source) replaced, written as TOML."""
    data = tomllib.loads((PROFILE_DIR / "pi5.toml").read_text())
    data.update(fields or {})
    camera = data.pop("camera")
    if camera_source is not None:
        camera["source"] = camera_source
    lines = [f"{key} = {toml_value(value)}" for key, value in data.items()]
    lines += ["", "[camera]", *(f"{key} = {toml_value(value)}" for key, value in camera.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int, int]]:
    """(mode, size, mtime) of every entry under root except `skip` and what lies inside it."""
    out = {}
    for path in [root, *root.rglob("*")]:
        if path == skip or skip in path.parents:
            continue
        info = path.lstat()
        out[str(path)] = (info.st_mode, info.st_size if not stat.S_ISDIR(info.st_mode) else 0, info.st_mtime_ns)
    return out


def exec_argv(unit: str, credentials: str) -> list[str]:
    """ExecStart's argv as systemd reads it (systemd.unit(5) specifiers, systemd.service(5) command lines): `%%`
    and `%d` expanded, words split on unquoted spaces, quotes removed, C escapes undone, then `$$` -> `$` in the
    arguments (not in the program path, which systemd runs as written)."""
    line = next(row for row in unit.splitlines() if row.startswith("ExecStart="))[len("ExecStart="):]
    line = re.sub(r"%(.)", lambda m: {"%": "%", "d": credentials}[m.group(1)], line)
    words: list[str] = []
    word, quoted, started, i = "", False, False, 0
    while i < len(line):
        ch = line[i]
        if ch == "\\":
            word += {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}[line[i + 1]]
            started, i = True, i + 2
            continue
        if ch == '"':
            quoted, started = not quoted, True
        elif ch == " " and not quoted:
            if started:
                words.append(word)
            word, started = "", False
        else:
            word, started = word + ch, True
        i += 1
    assert not quoted, line
    if started:
        words.append(word)
    return words[:1] + [w.replace("$$", "$") for w in words[1:]]  # no $VAR expansion in the program path


def verify_unit(unit_file: Path, prefix: Path, tmp_path: Path) -> str:
    """`systemd-analyze verify` on a copy of the unit (its folder may hold any character), with the ExecStart binary
    made real in the prefix; the unit's text."""
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: apt-get install systemd (scripts/setup.sh does)"
    binary = prefix / "venv" / "bin" / "edgecls"
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    clean = tmp_path / "unit-check"
    clean.mkdir(exist_ok=True)
    shutil.copy(unit_file, clean / unit_file.name)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(clean / unit_file.name)], capture_output=True, text=True,
                          timeout=60)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if "edgecls-camera" in line]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr
    return unit_file.read_text()


def _without_groups(unit: str) -> str:
    return "\n".join(line for line in unit.splitlines() if not line.startswith("SupplementaryGroups="))


def run_install(bundle: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(bundle / "install.sh"), *args], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHON": "/nonexistent-python"})


def canaries(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob(f"*{CANARY}*") if p.name == CANARY]


# ----------------------------------------------------------------------------------------------- fuzzing


@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_hostile_values_stay_data(payload: str, wheel: Path, tmp_path: Path) -> None:
    """One bundle with the payload in the profile title, camera source and notes, the model file name, a label, the
    run and bundle folder names; installed into a prefix holding it too."""
    artifact = f"m {payload}.tflite"
    run = make_run(tmp_path / f"run {payload}", artifact=artifact, labels=("cat", payload))
    profile = write_profile(tmp_path / "hostile.toml", {"title": payload, "setup_notes": [payload]}, camera_source=payload)
    bundle = tmp_path / f"bundle {payload}"
    build_bundle(run, profile, bundle, wheel=wheel, picamera2=True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    system_unit_before = UNIT_PATH.exists()

    syntax = subprocess.run(["bash", "-n", str(bundle / "install.sh")], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    shown = run_install(bundle, cwd, "--help")
    assert shown.returncode == 0 and payload in shown.stdout and "--no-venv" in shown.stdout, shown.stdout + shown.stderr

    target = tmp_path / "target"
    target.mkdir()
    if UNSAFE_IN_PROGRAM_PATH.search(payload):  # systemd refuses quotes and backslashes in a program path: refused cleanly
        refused = run_install(bundle, cwd, "--no-apt", "--no-venv", "--no-service", "--prefix", str(target / f"p {payload}"))
        errors = [line for line in refused.stderr.splitlines() if line.startswith("install.sh: error:")]
        assert refused.returncode != 0 and len(errors) == 1 and "quote or backslash" in errors[0], refused.stderr
        assert not list(target.iterdir())
    prefix = target / ("p " + UNSAFE_IN_PROGRAM_PATH.sub("", payload)) / "opt"
    before = snapshot(tmp_path, skip=target)
    done = run_install(bundle, cwd, "--no-apt", "--no-venv", "--no-service", "--prefix", str(prefix))
    assert done.returncode == 0, done.stdout + done.stderr
    assert snapshot(tmp_path, skip=target) == before, "install.sh changed something outside its prefix"
    assert [p.name for p in target.iterdir()] == [prefix.parent.name] and [p.name for p in prefix.parent.iterdir()] == ["opt"]
    assert not canaries(tmp_path) and not list(cwd.iterdir()), "a payload ran"
    assert UNIT_PATH.exists() == system_unit_before

    assert (prefix / "model" / artifact).read_bytes() == (run / "export" / "tflite-int8" / artifact).read_bytes()
    assert (prefix / "model" / "labels.txt").read_text().splitlines() == ["cat", payload]
    token = prefix / "live-token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text() == (bundle / "live-token").read_text()
    if os.geteuid() == 0:
        assert token.stat().st_uid == 0

    unit = verify_unit(prefix / "edgecls-camera.service", prefix, tmp_path)
    argv = exec_argv(unit, "/run/credentials/edgecls-camera.service")
    assert argv[:4] == [f"{prefix}/venv/bin/edgecls", "camera", f"--model={prefix}/model/{artifact}", f"--device={payload}"], argv
    assert "--token-file=/run/credentials/edgecls-camera.service/live-token" in argv
    assert f"LoadCredential=live-token:{str(prefix).replace('%', '%%')}/live-token\n" in unit
    # the bundle's copy (rendered in Python for /opt/edgecls) is the same template as what bash wrote for the prefix
    bundled = (bundle / "edgecls-camera.service").read_text()
    as_default = unit.replace(systemd_word_text(str(prefix)), DEFAULT_PREFIX).replace(systemd_escape(str(prefix)), DEFAULT_PREFIX)
    assert _without_groups(as_default) == _without_groups(bundled)
    readme = (bundle / "README.md").read_text()
    assert "\r" not in readme and payload.replace("\n", "") in readme


@pytest.mark.parametrize("field", ["name", "arch", "python", "backend_device", "qemu_cpu", "preferred_target", "precision",
                                   "pip_platforms", "threads"])
@pytest.mark.parametrize("payload", [*PAYLOADS.values(), *CONTROL.values()], ids=[*PAYLOADS, *CONTROL])
def test_allowlisted_profile_fields_refuse_metacharacters(field: str, payload: str, tmp_path: Path) -> None:
    value: object = [payload] if field == "pip_platforms" else payload
    path = write_profile(tmp_path / "p.toml", {field: value})
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert "\n" not in message and f"field '{field}'" in message and repr(payload)[1:-1][:40] in message, message


@pytest.mark.parametrize("where", ["title", "setup_notes", "camera"])
@pytest.mark.parametrize("payload", list(CONTROL.values()), ids=list(CONTROL))
def test_free_text_profile_fields_refuse_control_characters(where: str, payload: str, tmp_path: Path) -> None:
    if where == "camera":
        path = write_profile(tmp_path / "p.toml", camera_source=payload)
    else:
        path = write_profile(tmp_path / "p.toml", {where: [payload] if where == "setup_notes" else payload})
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message and ("camera.source" if where == "camera" else f"'{where}'") in message, message


def test_profile_made_in_python_is_checked_too(wheel: Path, tmp_path: Path) -> None:
    good = load_profile("pi5")
    assert checked_profile(good) == good
    bad = DeviceProfile(**{**{k: getattr(good, k) for k in ("title", "arch", "preferred_target", "precision", "backend_device",
                                                             "threads", "python", "camera")}, "name": 'pi5"; touch pwned; "'})
    with pytest.raises(ConfigError, match="field 'name'"):
        build_bundle(make_run(tmp_path / "run"), bad, tmp_path / "b", wheel=wheel)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("payload", list(CONTROL.values()), ids=list(CONTROL))
def test_control_characters_in_model_name_label_or_prefix_are_refused(payload: str, wheel: Path, tmp_path: Path) -> None:
    if "\x00" not in payload:  # no file name can hold a NUL
        run = make_run(tmp_path / "run-a", artifact=f"m{payload}.tflite")
        with pytest.raises(ModelError, match="not a plain file name"):
            build_bundle(run, "pi5", tmp_path / "a", wheel=wheel)
    run = make_run(tmp_path / "run-l")  # edgecls never writes such a label: a tampered meta.json
    meta = run / "export" / "tflite-int8" / "meta.json"
    meta.write_text(meta.read_text().replace('"dog"', json.dumps(f"dog{payload}")))
    with pytest.raises(EdgeclsError) as caught:
        build_bundle(run, "pi5", tmp_path / "l", wheel=wheel)
    assert "\n" not in str(caught.value) and "label" in str(caught.value)
    assert not (tmp_path / "a").exists() and not (tmp_path / "l").exists()
    if "\x00" in payload:  # no argv can hold a NUL either
        return
    bundle = build_bundle(make_run(tmp_path / "run"), "pi5", tmp_path / "b", wheel=wheel)["out"]
    prefix = tmp_path / f"pre{payload}fix"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = run_install(Path(bundle), cwd, "--no-apt", "--no-venv", "--no-service", "--prefix", str(prefix))
    assert done.returncode != 0 and "control character" in done.stderr, done.stdout + done.stderr
    assert not prefix.exists() and not canaries(tmp_path)


SERVE_BAD = ["not-an-address", "0.0.0.0", ":8080", "8080", "host:0", "host:65536", "host:80a", "host:", "a_b:80", "-host:80",
             "host-:80", "300.1.1.1:80", "1.2.3:80", "[::1]:80", "::1:80", "0.0.0.0:8080;touch pwned", "0.0.0.0:8080\n",
             "h%n:80", "h o:80", "$(touch pwned):80", "", "x" * 64 + ".local:80"]
SERVE_GOOD = ["0.0.0.0:8080", "127.0.0.1:1", "raspberrypi.local:65535", "cam-1:80", "192.168.1.20:8080", "localhost:8080", "a.b.c.:80"]


def test_serve_is_host_and_port() -> None:
    for text in SERVE_BAD:
        with pytest.raises(ConfigError) as caught:
            parse_serve(text)
        assert "\n" not in str(caught.value) and "HOST:PORT" in str(caught.value), text
    for text in SERVE_GOOD:
        host, port = parse_serve(text)
        assert f"{host}:{port}" == text


# ----------------------------------------------------------------------------------------------- through the CLI


def test_deploy_cli_refusals_before_any_work(tmp_path: Path) -> None:
    run = make_run(tmp_path / "parent" / "run")
    sibling = tmp_path / "parent" / "notes.txt"
    sibling.write_text("keep me")
    own = tmp_path / "mine"
    own.mkdir()
    (own / "photo.jpg").write_text("keep me too")
    evil = write_profile(tmp_path / "evil.toml", {"name": f'pi5"; touch {CANARY}; echo "'})
    before = snapshot(tmp_path, skip=tmp_path / "none")

    cases: list[tuple[list[str | Path], list[str]]] = [
        (["--out", run, "--force"], ["--out", "would overwrite the input RUN"]),
        (["--out", tmp_path / "parent", "--force"], ["--out", "contains the input RUN"]),
        (["--out", run / "export" / "bundle", "--force"], ["lies inside the input RUN"]),
        (["--out", own, "--force"], ["was not made by edgecls", OUTPUT_MARKER]),
        (["--out", tmp_path / "b", "--serve", "not-an-address"], ["--serve 'not-an-address'", "HOST:PORT"]),
    ]
    for args, fragments in cases:
        result = run_cli("deploy", run, "--device", "pi5", *args)
        assert_clean_error(result, *fragments)
    result = run_cli("deploy", run, "--device", evil, "--out", tmp_path / "b")
    assert_clean_error(result, "field 'name'", "touch pwned")
    assert snapshot(tmp_path, skip=tmp_path / "none") == before and not canaries(tmp_path)


def test_bundle_ships_the_exports_own_files_never_links_or_additions(wheel: Path, tmp_path: Path) -> None:
    """model/ gets what the export published (its report's list, the artifact, meta.json, the report): not a link that
    points elsewhere on this machine, not files put in the folder since."""
    run = make_run(tmp_path / "run")
    folder = run / "export" / "tflite-int8"
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "id_rsa").write_text("secret")
    (folder / "keys").symlink_to(tmp_path / "private")
    (folder / "notes.txt").write_text("mine")
    bundle = Path(build_bundle(run, "pi5", tmp_path / "b", wheel=wheel)["out"])
    assert sorted(p.name for p in (bundle / "model").iterdir()) == ["export_report.json", "labels.txt", "meta.json", "model.tflite"]
    report = json.loads((folder / "export_report.json").read_text())
    (folder / "export_report.json").write_text(json.dumps({**report, "files": ["model.tflite", "keys"]}))
    with pytest.raises(ModelError, match="is not a plain file in its folder"):
        build_bundle(run, "pi5", tmp_path / "c", wheel=wheel)
    assert not (tmp_path / "c").exists()


def test_deploy_ships_only_a_published_export_that_passed(tmp_path: Path) -> None:
    """An export whose report says it failed validation, or a folder without export's marker (not published by it), is
    never bundled as if it had passed."""
    for name, spoil in (("failed", "report"), ("unmarked", "marker")):
        run = make_run(tmp_path / name)
        folder = run / "export" / "tflite-int8"
        if spoil == "report":
            (folder / "export_report.json").write_text(json.dumps({"artifact": "model.tflite", "validation": {"passed": False}}))
        else:
            (folder / OUTPUT_MARKER).unlink()
        result = run_cli("deploy", run, "--device", "pi5", "--out", tmp_path / f"bundle-{name}")
        assert_clean_error(result, "is not a published export that passed validation", "Re-export")
        assert not (tmp_path / f"bundle-{name}").exists()


def test_deploy_cli_token_and_rtsp_url(wheel: Path, tmp_path: Path) -> None:
    """A profile with an RTSP password holding `%`: the unit verifies and passes the URL without it; the token is made,
    kept 0600, handed over by systemd, printed once, and never written into a command line, the unit or bundle.json."""
    run = make_run(tmp_path / "run")
    profile = write_profile(tmp_path / "cam.toml", camera_source=RTSP)
    out = tmp_path / "bundle"
    result = run_cli("deploy", run, "--device", profile, "--out", out, "--serve", "0.0.0.0:8443")
    assert result.returncode == 0, result.output
    token_file = out / "live-token"
    token = token_file.read_text()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and len(token) >= 32
    assert read_token_file(token_file) == token  # what `edgecls camera --token-file` accepts
    assert f"http://<device>:8443/?token={token}" in result.stdout and str(token_file) in result.stdout
    for name in ("edgecls-camera.service", "install.sh", "bundle.json", "README.md"):
        assert token not in (out / name).read_text(), name
    unit = (out / "edgecls-camera.service").read_text()
    for line in ("LimitNOFILE=4096", "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=strict", "ProtectHome=yes",
                 "LoadCredential=live-token:/opt/edgecls/live-token", "DynamicUser=yes", "StateDirectory=edgecls"):
        assert f"\n{line}\n" in unit, line
    argv = exec_argv(unit, "/run/credentials/x")
    assert f"--device={RTSP_SERVICE}" in argv and "--serve=0.0.0.0:8443" in argv and "--token-file=/run/credentials/x/live-token" in argv
    assert "--device-password-file=/run/credentials/x/camera-password" in argv and "p%40ss" not in unit  # tests/test_deploy_secrets.py

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    prefix = tmp_path / "prefix"
    done = run_install(out, cwd, "--no-apt", "--no-venv", "--no-service", "--prefix", str(prefix))
    assert done.returncode == 0 and token not in done.stdout + done.stderr, done.stdout + done.stderr
    installed = verify_unit(prefix / "edgecls-camera.service", prefix, tmp_path)
    assert f"--device={RTSP_SERVICE}" in exec_argv(installed, "/c")

    assert (out / OUTPUT_MARKER).is_file()  # so --force may replace it: with a new token
    again = build_bundle(run, profile, out, overwrite=True, wheel=wheel)
    assert again["live_view_url"].endswith("?token=" + (out / "live-token").read_text()) and (out / "live-token").read_text() != token
