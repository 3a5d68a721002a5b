"""`edgecls deploy` bundles and `edgecls doctor` rows, through the real CLI on a run trained through the CLI.

The Pi itself is proven by scripts/pi_emulation_test.sh (arm64 userland under QEMU); here: the bundle's
contents, its wheel running without TensorFlow, install.sh on this machine, errors, the aarch64 wheels
resolving on the package index, and doctor's checks on a faked /sys and /dev.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from edgecls.fsutil import OUTPUT_MARKER
from edgecls.metadata import GOLDEN_FILE, load_golden, save_golden
from tests.conftest import REPO, assert_clean_error, run_cli
from tests.test_deploy_safety import exec_argv
from tests.test_tf_free import BLOCKER

pytestmark = pytest.mark.slow
INDEX_TIMEOUT_S = 20


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def run_copy(plain_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's plain_cnn run without its exports (other tests export into it)."""
    run = tmp_path_factory.mktemp("deploy") / "run"
    shutil.copytree(plain_run, run, ignore=shutil.ignore_patterns("export"))
    return run


@pytest.fixture(scope="module")
def exported(run_copy: Path, plain_int8_exports: Path) -> Path:
    """RUN/export/tflite-int8 as `edgecls export RUN --int8 --target tflite` leaves it: the session's INT8 export of the
    same run (gate off: plain_run is a near-chance tiny CNN; the deploy tests judge the bundle, not the INT8 gate), copied."""
    for name in ("tflite-int8", "calibration"):
        shutil.copytree(plain_int8_exports / name, run_copy / "export" / name)
    assert (run_copy / "export" / "tflite-int8" / GOLDEN_FILE).is_file()  # export stores the golden set the bundle carries
    return run_copy


@pytest.fixture(scope="module")
def bundle(exported: Path) -> Path:
    out = exported.parent / "bundle-pi5"
    result = run_cli("deploy", exported, "--device", "pi5", "--out", out)
    assert result.returncode == 0, result.output
    return out


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "bundle.json").read_text())


# ----------------------------------------------------------------------------------------------- bundle contents


def test_bundle_layout(bundle: Path, exported: Path) -> None:
    manifest = _manifest(bundle)
    export = exported / "export" / "tflite-int8"
    assert manifest["target"] == "tflite" and manifest["precision"] == "int8" and manifest["backend_device"] == "cpu"
    assert manifest["artifact"] == "model/model.tflite"
    assert (bundle / "model" / "model.tflite").read_bytes() == (export / "model.tflite").read_bytes()
    meta = json.loads((bundle / "model" / "meta.json").read_text())
    assert meta == json.loads((export / "meta.json").read_text())
    assert (bundle / "model" / "labels.txt").read_text().splitlines() == meta["labels"]
    wheels = sorted(p.name for p in (bundle / "wheels").iterdir())
    assert wheels == ["edgecls-0.1.0-py3-none-any.whl"], wheels
    # every file is listed with its checksum, and nothing half-written is left beside the bundle
    listed = manifest["files"]
    on_disk = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*")
                     if p.is_file() and p.name not in ("bundle.json", OUTPUT_MARKER))
    assert sorted(listed) == on_disk
    for name, entry in listed.items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == entry["sha256"], name
    assert not [p.name for p in bundle.parent.iterdir() if p.name.startswith(".")]
    assert "path" not in manifest["device"]  # no host paths of the profile file


def test_bundle_carries_the_golden_set_and_install_sh_runs_verify_last(bundle: Path, exported: Path) -> None:
    export = exported / "export" / "tflite-int8"
    assert _manifest(bundle)["golden"] == "model/golden.npz"
    assert (bundle / "model" / GOLDEN_FILE).read_bytes() == (export / GOLDEN_FILE).read_bytes()
    install = (bundle / "install.sh").read_text()
    steps = [line for line in install.splitlines() if line.startswith("# ")]
    assert steps[-1].startswith("# 5. Self-test, last"), steps
    assert '"$PREFIX/venv/bin/python" -m edgecls verify "$PREFIX/$ARTIFACT" --backend-device "$VERIFY_DEVICE"' in install
    readme = (bundle / "README.md").read_text()
    assert "`model/golden.npz` | the golden set" in readme and "runs `edgecls verify`" in readme
    assert "/opt/edgecls/venv/bin/edgecls verify /opt/edgecls/model/model.tflite --backend-device cpu" in readme


def test_install_sh_self_test_passes_fails_or_is_skipped(bundle: Path, tmp_path: Path) -> None:
    """install.sh's last step on this machine, offline: a venv that sees this environment's packages (so pip installs
    only the bundle's edgecls wheel), then `edgecls verify` on the installed model: it passes with the bundle's golden
    set, fails the install with the diagnosis for a golden set of reordered labels, and is skipped without one."""
    env = {**os.environ, "PYTHON": sys.executable, "PIP_NO_INDEX": "1"}

    def install(which: Path, *flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(which / "install.sh"), "--no-apt", "--no-service", "--no-picamera2", *flags, "--prefix",
                               str(tmp_path / "prefix")], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)

    files_only = install(bundle, "--no-venv")  # the prefix, made by install.sh (its marker), then a venv in it
    assert files_only.returncode == 0, files_only.stdout[-3000:] + files_only.stderr[-3000:]
    venv = tmp_path / "prefix" / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site_packages = next((venv / "lib").glob("python3*/site-packages"))
    (site_packages / "host-packages.pth").write_text("\n".join(_host_site_packages()) + "\n")

    passed = install(bundle)
    assert passed.returncode == 0, passed.stdout[-3000:] + passed.stderr[-3000:]
    lines = passed.stdout.splitlines()
    assert "self-test: edgecls verify" in passed.stdout and "verify passed: 8 golden images" in passed.stdout, passed.stdout[-2000:]
    assert lines[-3].startswith("verify passed") and lines[-1].startswith("==> done"), lines[-4:]  # the last step before the goodbye
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import edgecls; print(edgecls.__file__)"], capture_output=True,
                           text=True, timeout=60, cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout  # the bundle's wheel, not this checkout

    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    golden = load_golden(broken / "model")
    golden.labels = [golden.labels[1], golden.labels[0], *golden.labels[2:]]
    save_golden(golden, broken / "model")
    failed = install(broken)
    assert failed.returncode == 1, failed.stdout[-2000:] + failed.stderr[-2000:]
    assert "error: verify failed for" in failed.stderr and "wrong labels: the same names in another order" in failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith("install.sh: error: the model failed its self-test on this device")
    assert "Traceback" not in failed.stderr

    (broken / "model" / GOLDEN_FILE).unlink()
    skipped = install(broken)
    assert skipped.returncode == 0, skipped.stdout[-2000:] + skipped.stderr[-2000:]
    assert "self-test skipped: this bundle has no golden set" in skipped.stdout


def test_requirements_are_runtime_only(bundle: Path) -> None:
    lines = [line for line in (bundle / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    names = {line.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower() for line in lines}
    assert {"numpy", "pillow", "ai-edge-litert", "opencv-python-headless"} <= names, names
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "tf-keras", "torch", "onnx", "tf2onnx", "nncf"}, names
    constraints = (bundle / "constraints-picamera2.txt").read_text()
    assert "numpy<2" in constraints


def test_install_script_and_unit(bundle: Path) -> None:
    install = bundle / "install.sh"
    assert os.access(install, os.X_OK)
    syntax = subprocess.run(["bash", "-n", str(install)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    text = install.read_text()
    for fragment in ("python3-venv", "python3-picamera2", "--system-site-packages", "constraints-picamera2.txt",
                     "--no-index --no-deps", "WHEEL=edgecls-0.1.0-py3-none-any.whl", '"$PREFIX/wheels/$WHEEL"',
                     'systemctl enable --now "$SERVICE_NAME.service"', "SERVICE_NAME=edgecls-camera"):
        assert fragment in text, fragment
    assert "CORAL=0" in text and "PICAMERA2=1" in text
    help_text = subprocess.run(["bash", str(install), "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "--no-service" in help_text.stdout and "Raspberry Pi 5" in help_text.stdout
    unit = (bundle / "edgecls-camera.service").read_text()
    argv = exec_argv(unit, "/run/credentials/edgecls-camera.service")
    assert argv == ["/opt/edgecls/venv/bin/edgecls", "camera", "--model=/opt/edgecls/model/model.tflite", "--device=picamera2",
                    "--backend-device=cpu", "--serve=0.0.0.0:8080", "--headless", "--report=/var/lib/edgecls/camera_report.json",
                    "--token-file=/run/credentials/edgecls-camera.service/live-token", "--threads=4", "--width=640", "--height=480"]
    assert _manifest(bundle)["service"]["exec"][2:] == argv[2:8] + ["--token-file=%d/live-token"] + argv[9:]
    assert "WantedBy=multi-user.target" in unit and "Restart=on-failure" in unit and "LimitNOFILE=4096" in unit
    readme = (bundle / "README.md").read_text()
    assert "sudo ./install.sh" in readme and "edgecls doctor --device pi5" in readme and "journalctl -u edgecls-camera" in readme


def test_wheel_holds_the_whole_package(bundle: Path) -> None:
    with zipfile.ZipFile(bundle / "wheels" / "edgecls-0.1.0-py3-none-any.whl") as whl:
        names = set(whl.namelist())
        metadata = whl.read("edgecls-0.1.0.dist-info/METADATA").decode()
    source = {p.relative_to(REPO).as_posix() for p in (REPO / "edgecls").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".toml")}
    assert source <= names, sorted(source - names)
    assert "edgecls/__main__.py" in names and "edgecls/profiles/pi5.toml" in names
    core = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not [line for line in core if "tensorflow" in line or "keras" in line], core


def _host_site_packages() -> list[str]:
    import site

    return [p for p in site.getsitepackages() if Path(p).is_dir()]


def _install_wheel(bundle: Path, target: Path) -> None:
    wheel = bundle / "wheels" / "edgecls-0.1.0-py3-none-any.whl"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
                           "-q", "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_bundled_wheel_predicts_without_tensorflow(bundle: Path, fmnist_tree: Path, tmp_path: Path) -> None:
    """The wheel alone (not this checkout) runs `edgecls predict` with TensorFlow blocked; same answer as the host."""
    target = tmp_path / "site"
    _install_wheel(bundle, target)
    image = sorted((fmnist_tree / "test").rglob("*.png"))[0]
    model = bundle / "model" / "model.tflite"
    code = BLOCKER + textwrap.dedent(
        f"""
        import sys
        import edgecls
        assert edgecls.__file__.startswith({str(target)!r}), edgecls.__file__
        from edgecls.cli.app import main
        sys.argv = ["edgecls", "predict", {str(model)!r}, {str(image)!r}, "--json", "--top-k", "3"]
        try:
            main()
        finally:
            heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
            assert not heavy, heavy
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *_host_site_packages()]), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    isolated = json.loads(proc.stdout)
    host = run_cli("predict", model, image, "--json", "--top-k", "3")
    assert host.returncode == 0, host.output
    assert [c["label"] for c in isolated[0]["top"]] == [c["label"] for c in json.loads(host.stdout)[0]["top"]]


def test_wheel_repacked_from_an_installed_edgecls(bundle: Path, tmp_path: Path) -> None:
    """Without a source tree (pip install edgecls, not -e), deploy repacks the installed files into the same wheel."""
    target = tmp_path / "site"
    _install_wheel(bundle, target)
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import edgecls.deploy as deploy
        assert deploy.source_tree() is None, deploy.source_tree()
        print(deploy.build_wheel(Path({str(tmp_path / 'out')!r})))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *_host_site_packages()])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    repacked = Path(proc.stdout.strip().splitlines()[-1])
    with zipfile.ZipFile(repacked) as new, zipfile.ZipFile(bundle / "wheels" / repacked.name) as old:
        assert set(new.namelist()) == set(old.namelist())
        assert all(new.read(n) == old.read(n) for n in old.namelist() if n.startswith("edgecls/"))


def _index_reachable() -> bool:
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "ai-edge-litert", "--timeout", "10",
                               "--disable-pip-version-check"], capture_output=True, text=True, timeout=INDEX_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


@pytest.mark.parametrize("picamera2", [False, True], ids=["plain", "picamera2-constraints"])
def test_requirements_resolve_as_aarch64_cp311_wheels(bundle: Path, tmp_path: Path, picamera2: bool) -> None:
    """What `pip download --platform ... -r requirements.txt` would fetch for the Pi: resolved (metadata only)."""
    if not _index_reachable():
        pytest.skip("the package index cannot be reached from here")
    manifest = _manifest(bundle)
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--disable-pip-version-check", "-q",
               "--report", str(tmp_path / "report.json"), "--target", str(tmp_path / "t"), *manifest["pip_target_flags"],
               "-r", str(bundle / "requirements.txt")]
    if picamera2:
        command += ["-c", str(bundle / "constraints-picamera2.txt")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    installs = json.loads((tmp_path / "report.json").read_text())["install"]
    resolved = {item["metadata"]["name"].lower().replace("_", "-"): item for item in installs}
    assert {"numpy", "pillow", "ai-edge-litert", "opencv-python-headless"} <= set(resolved)
    assert not {"tensorflow", "tensorflow-cpu", "keras"} & set(resolved)
    for name in ("numpy", "pillow", "ai-edge-litert", "opencv-python-headless"):
        wheel = resolved[name]["download_info"]["url"].rsplit("/", 1)[-1]
        assert wheel.endswith(".whl") and "aarch64" in wheel and ("cp311" in wheel or "abi3" in wheel), wheel
    if picamera2:
        assert resolved["numpy"]["metadata"]["version"].startswith("1."), resolved["numpy"]["metadata"]["version"]


def test_install_sh_installs_into_a_prefix(bundle: Path, tmp_path: Path) -> None:
    """install.sh on this Debian machine without apt and systemd: venv, requirements, the wheel, the model check."""
    if not _index_reachable():
        pytest.skip("the package index cannot be reached from here")
    prefix = tmp_path / "prefix"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(bundle / "install.sh"), "--no-apt", "--no-service", "--no-picamera2", "--prefix", str(prefix)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "model ok: litert int8" in proc.stdout, proc.stdout[-2000:]
    assert "(TensorFlow imported!)" not in proc.stdout
    python = prefix / "venv" / "bin" / "python"
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, timeout=120)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"edgecls", "ai-edge-litert", "opencv-python-headless", "numpy"} <= names and "tensorflow" not in names
    doctor = subprocess.run([str(prefix / "venv" / "bin" / "edgecls"), "doctor", "--json", "--device", "pi5"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stderr
    rows = {row["check"]: row for row in json.loads(doctor.stdout)["checks"]}
    assert rows["ai-edge-litert"]["status"] == "ok" and rows["tensorflow"]["value"].startswith("not installed")


# ----------------------------------------------------------------------------------------------- errors and other profiles


def test_missing_export_names_the_export_command(run_copy: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(run_copy, bare, ignore=shutil.ignore_patterns("export"))
    out = tmp_path / "bundle"
    result = run_cli("deploy", bare, "--device", "pi5", "--out", out)
    assert_clean_error(result, "no validated tflite int8 export", f"edgecls export {bare} --int8 --target tflite")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_unknown_profile_lists_the_profiles(exported: Path, tmp_path: Path) -> None:
    result = run_cli("deploy", exported, "--device", "pi9", "--out", tmp_path / "b")
    assert_clean_error(result, "unknown device profile 'pi9'", "pi5", "coral-usb-pi", "intel-cpu")


def test_existing_out_needs_force(bundle: Path, exported: Path) -> None:
    result = run_cli("deploy", exported, "--device", "pi5", "--out", bundle)
    assert_clean_error(result, "already exists", "--force")
    again = run_cli("deploy", exported, "--device", "pi4", "--out", bundle, "--force", "--no-picamera2", "--json")
    assert again.returncode == 0, again.output
    try:
        manifest = _manifest(bundle)
        assert manifest["device"]["name"] == "pi4" and manifest["picamera2"] is False
        unit = (bundle / "edgecls-camera.service").read_text()
        assert " --device=0 " in unit and "PICAMERA2=0" in (bundle / "install.sh").read_text()
    finally:  # leave the module's pi5 bundle as the other tests expect it
        restored = run_cli("deploy", exported, "--device", "pi5", "--out", bundle, "--force")
        assert restored.returncode == 0, restored.output


def test_coral_bundle_needs_a_compiled_model(exported: Path, plain_int8_exports: Path, tmp_path: Path) -> None:
    # `edgecls export RUN --int8 --target edgetpu` without edgetpu_compiler: the session's export of the same run, copied
    shutil.copytree(plain_int8_exports / "edgetpu-int8", exported / "export" / "edgetpu-int8")
    out = tmp_path / "coral"
    uncompiled = run_cli("deploy", exported, "--device", "coral-usb-pi", "--out", out)
    assert_clean_error(uncompiled, "edgetpu_compiler did not run", f"edgecls export {exported} --int8 --target edgetpu")
    # stand in for edgetpu_compiler (x86-64 Debian only, from Coral's apt repository): its output file name
    folder = exported / "export" / "edgetpu-int8"
    shutil.copy2(folder / "model.tflite", folder / "model_edgetpu.tflite")
    try:
        made = run_cli("deploy", exported, "--device", "coral-usb-pi", "--out", out)
        assert made.returncode == 0, made.output
        assert _manifest(out)["artifact"] == "model/model_edgetpu.tflite"
        install = (out / "install.sh").read_text()
        assert "CORAL=1" in install and "libedgetpu1-std" in install
        unit = (out / "edgecls-camera.service").read_text()
        assert "--backend-device=coral" in unit and '"--model=/opt/edgecls/model/model_edgetpu.tflite"' in unit
        old_python = run_cli("deploy", exported, "--device", "coral-devboard", "--out", tmp_path / "devboard")
        assert_clean_error(old_python, "edgecls needs Python >=3.10", "coral-devboard' has Python 3.7")
    finally:
        (folder / "model_edgetpu.tflite").unlink()


# ----------------------------------------------------------------------------------------------- doctor


def test_doctor_json_rows() -> None:
    result = run_cli("doctor", "--json", "--no-tf", "--device", "pi5")
    assert result.returncode == 0, result.output
    report = json.loads(result.stdout)
    rows = {row["check"]: row for row in report["checks"]}
    for name in ("python", "platform", "ai-edge-litert", "opencv", "tensorflow", "GPU", "edgetpu library", "cameras",
                 "picamera2", "cpu governor"):
        assert name in rows, name
    assert all(row["status"] in ("ok", "warn", "info") for row in rows.values())
    assert all(row["fix"] for row in rows.values() if row["status"] == "warn")
    assert report["profile"] == "pi5" and report["warnings"] == sum(r["status"] == "warn" for r in rows.values())
    assert rows["python"]["value"] == report["python"]  # name -> value kept for scripts
    strict = run_cli("doctor", "--no-tf", "--device", "pi5", "--strict")
    assert strict.returncode == (1 if report["warnings"] else 0), strict.output


def test_doctor_without_tensorflow() -> None:
    """--no-tf never imports TensorFlow; without it, a TensorFlow that cannot be imported is a warn row, not a crash."""
    for args, expect_row in ((["--no-tf"], False), ([], True)):
        code = BLOCKER + textwrap.dedent(
            f"""
            import sys
            from edgecls.cli.app import main
            sys.argv = ["edgecls", "doctor", "--json", *{args!r}]
            try:
                main()
            finally:
                assert "tensorflow" not in sys.modules
            """
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert proc.returncode == 0, proc.stderr
        rows = {row["check"]: row for row in json.loads(proc.stdout)["checks"]}
        assert ("tensorflow devices" in rows) == expect_row, rows.get("tensorflow devices")
        if expect_row:
            assert rows["tensorflow devices"]["status"] == "warn" and "blocked" in rows["tensorflow devices"]["value"]


def _fake_machine(root: Path, speed: str, governor: str) -> None:
    usb = root / "sys/bus/usb/devices/2-1"
    usb.mkdir(parents=True)
    for name, value in (("idVendor", "18d1"), ("idProduct", "9302"), ("speed", speed)):
        (usb / name).write_text(value + "\n")
    for cpu in range(4):
        folder = root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        folder.mkdir(parents=True)
        (folder / "scaling_governor").write_text(governor + "\n")
    (root / "dev").mkdir()
    (root / "dev/video0").write_text("")
    (root / "sys/class/video4linux/video0").mkdir(parents=True)
    (root / "sys/class/video4linux/video0/name").write_text("USB Camera\n")
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_text("Raspberry Pi 5 Model B Rev 1.0\x00")


def test_doctor_reads_coral_usb_speed_governor_and_camera(tmp_path: Path) -> None:
    from edgecls.doctor import diagnose

    slow, fast = tmp_path / "usb2", tmp_path / "usb3"
    _fake_machine(slow, "480", "ondemand")
    _fake_machine(fast, "5000", "performance")
    (fast / "usr/lib/aarch64-linux-gnu").mkdir(parents=True)
    (fast / "usr/lib/aarch64-linux-gnu/libedgetpu.so.1").write_text("")

    rows = {row["check"]: row for row in diagnose(list_devices=False, profile="coral-usb-pi", root=slow)["checks"]}
    assert rows["coral usb"]["status"] == "warn" and "480 Mb/s" in rows["coral usb"]["value"] and "USB 3" in rows["coral usb"]["fix"]
    assert rows["cpu governor"]["status"] == "warn" and "performance" in rows["cpu governor"]["fix"]
    assert rows["edgetpu library"]["status"] == "warn" and "libedgetpu1-std" in rows["edgetpu library"]["fix"]
    assert rows["cameras"]["status"] == "ok" and "USB Camera" in rows["cameras"]["value"]
    assert "Raspberry Pi 5" in rows["platform"]["value"]

    rows = {row["check"]: row for row in diagnose(list_devices=False, profile="coral-usb-pi", root=fast)["checks"]}
    assert rows["coral usb"]["status"] == "ok" and "USB 3" in rows["coral usb"]["value"]
    assert rows["cpu governor"]["status"] == "ok"
    assert rows["edgetpu library"]["status"] == "ok"

    empty = tmp_path / "empty"
    empty.mkdir()
    rows = {row["check"]: row for row in diagnose(list_devices=False, profile="coral-usb-pi", root=empty)["checks"]}
    assert rows["coral"]["status"] == "warn" and rows["cpu governor"]["status"] == "info"
