"""`edgecls deploy RUN --device pi-ai-camera`: the bundle ships the IMX500 export's packerOut.zip with meta.json and
labels.txt; install.sh installs imx500-firmware / imx500-tools / python3-picamera2, packages rpk/network.rpk on the Pi
and makes the venv with --system-site-packages; the service runs `edgecls camera --device imx500 --model
PREFIX/rpk/network.rpk`. No golden set exists for the IMX500, so install.sh runs no `edgecls verify`.

The run folder is what `edgecls export --target imx500` leaves (the bytes of packerOut.zip are never converted here).
`imx500-package` exists only on Raspberry Pi OS (imx500-tools): the install test puts a test double of it on PATH that
writes OUT/network.rpk as the real one does; everything else (bash -n, a root install into a temporary prefix with
--no-apt --no-venv --no-service, systemd-analyze verify of the unit it writes) is the real thing.
"""
from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from edgecls.deploy import build_bundle
from edgecls.errors import ConfigError
from edgecls.fsutil import make_marker
from edgecls.meta import ModelMeta
from tests.conftest import assert_clean_error, run_cli
from tests.test_deploy_safety import UNIT_PATH, canaries, exec_argv, verify_unit, wheel  # noqa: F401 - fixture

LABELS = ["cat", "dog", "bird"]
FAKE_PACKAGER = """#!/bin/sh
# test double of imx500-tools' imx500-package (Raspberry Pi OS only): -i packerOut.zip -o OUT writes OUT/network.rpk
while [ $# -gt 0 ]; do case "$1" in -i) in="$2"; shift 2 ;; -o) out="$2"; shift 2 ;; *) exit 2 ;; esac; done
[ -f "$in" ] || exit 1
mkdir -p "$out" && cp "$in" "$out/network.rpk"
"""


def make_imx500_run(folder: Path) -> Path:
    """A run folder with RUN/export/imx500-int8/ as `edgecls export --int8 --target imx500` publishes it."""
    export = folder / "export" / "imx500-int8"
    export.mkdir(parents=True)
    ModelMeta(architecture="mobilenet_v2", input_size=(96, 96), labels=LABELS, format="imx500", precision="int8").save(export)
    with zipfile.ZipFile(export / "packerOut.zip", "w") as packed:
        packed.writestr("network.bin", b"converted network")
    (export / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS))
    (export / "memory_report.json").write_text(json.dumps({"usage_percent": 21.0, "fits": True}))
    (export / "mct_quantized.keras").write_bytes(b"PC only")
    (export / "imxconv.log").write_text("converter log\n")
    report = {"artifact": "packerOut.zip", "validation": {"top1_agreement": 0.98, "passed": True}}
    (export / "export_report.json").write_text(json.dumps(report))
    make_marker(export, "export")
    return folder


def install(bundle: Path, cwd: Path, *args: str, tools: Path | None = None) -> subprocess.CompletedProcess[str]:
    path = f"{tools}{os.pathsep}{os.environ['PATH']}" if tools else os.environ["PATH"]
    return subprocess.run(["bash", str(bundle / "install.sh"), *args], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHON": "/nonexistent-python", "PATH": path})


@pytest.fixture()
def bundle(wheel: Path, tmp_path: Path) -> Path:  # noqa: F811 - the fixture imported above
    out = tmp_path / "bundle"
    build_bundle(make_imx500_run(tmp_path / "run"), "pi-ai-camera", out, wheel=wheel)
    return out


def test_the_bundle_ships_the_packer_and_its_labels_and_no_self_test(bundle: Path) -> None:
    model = bundle / "model"
    assert sorted(p.name for p in model.iterdir()) == ["export_report.json", "labels.txt", "memory_report.json", "meta.json",
                                                         "packerOut.zip"]  # no mct_quantized.keras: that is a PC file
    assert (model / "labels.txt").read_text().split() == LABELS
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["target"] == "imx500" and manifest["artifact"] == "model/packerOut.zip"
    assert manifest["service_model"] == "rpk/network.rpk" and manifest["golden"] is None and manifest["picamera2"] is True
    assert not any("tensorflow" in r.lower() for r in manifest["requirements"])

    argv = exec_argv((bundle / "edgecls-camera.service").read_text(), "/run/credentials/x")
    assert argv[:4] == ["/opt/edgecls/venv/bin/edgecls", "camera", "--model=/opt/edgecls/rpk/network.rpk", "--device=imx500"]
    assert "--width=640" in argv and "--height=480" in argv
    readme = (bundle / "README.md").read_text()
    assert "No golden set exists for the IMX500" in readme and "imx500-package -i model/packerOut.zip -o rpk/" in readme
    assert "edgecls verify" not in readme.split("## Check and watch")[1].split("##")[0]  # no verify line to copy
    script = (bundle / "install.sh").read_text()
    assert subprocess.run(["bash", "-n", str(bundle / "install.sh")], capture_output=True).returncode == 0
    assert "imx500-firmware imx500-tools python3-picamera2" in script and "--system-site-packages" in script


def test_install_packages_the_rpk_beside_its_labels(bundle: Path, tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "imx500-package").write_text(FAKE_PACKAGER)
    (tools / "imx500-package").chmod(0o755)
    cwd, prefix = tmp_path / "cwd", tmp_path / "prefix"
    cwd.mkdir()
    unit_before = UNIT_PATH.exists()
    done = install(bundle, cwd, "--no-apt", "--no-venv", "--no-service", "--prefix", str(prefix), tools=tools)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    rpk = prefix / "rpk"
    assert (rpk / "network.rpk").read_bytes() == (bundle / "model" / "packerOut.zip").read_bytes()
    assert (rpk / "labels.txt").read_text().split() == LABELS and (rpk / "meta.json").is_file()
    assert "self-test skipped: no golden set exists for the IMX500" in output and "edgecls verify" not in output
    unit = verify_unit(prefix / "edgecls-camera.service", prefix, tmp_path)
    argv = exec_argv(unit, str(prefix))
    assert f"--model={prefix}/rpk/network.rpk" in argv and "--device=imx500" in argv
    assert UNIT_PATH.exists() == unit_before and not canaries(cwd, prefix)

    from edgecls.camera.imx500 import SensorBackend  # what the service reads beside the rpk: the export's labels

    assert SensorBackend(rpk / "network.rpk").meta.labels == LABELS


def test_without_imx500_package_the_install_says_what_to_do(bundle: Path, tmp_path: Path) -> None:
    cwd, prefix = tmp_path / "cwd", tmp_path / "prefix"
    cwd.mkdir()
    empty = tmp_path / "no-tools"
    empty.mkdir()
    if any((Path(d) / "imx500-package").exists() for d in os.environ["PATH"].split(os.pathsep)):
        pytest.skip("imx500-package is installed here")
    files_only = install(bundle, cwd, "--no-apt", "--no-venv", "--no-service", "--prefix", str(prefix))
    assert files_only.returncode == 0 and "imx500-package not found (apt-get install imx500-tools)" in files_only.stderr
    unit_before = UNIT_PATH.exists()
    service = install(bundle, cwd, "--no-apt", "--no-venv", "--prefix", str(tmp_path / "p2"))
    assert service.returncode != 0 and "install.sh: error: imx500-package not found" in service.stderr
    assert UNIT_PATH.exists() == unit_before  # it stopped before the service
    refused = install(bundle, cwd, "--no-apt", "--no-venv", "--no-service", "--no-picamera2", "--prefix", str(tmp_path / "p3"))
    assert refused.returncode != 0 and "read through picamera2" in refused.stderr


def test_another_camera_for_the_sensors_network_is_refused(tmp_path: Path) -> None:
    run = make_imx500_run(tmp_path / "run")
    out = tmp_path / "bundle"
    assert_clean_error(run_cli("deploy", run, "--device", "pi-ai-camera", "--out", out, "--camera", "0"),
                       "runs the network on the AI Camera's sensor", "--camera")
    with pytest.raises(ConfigError, match="AI Camera's sensor"):
        build_bundle(run, "pi-ai-camera", out, picamera2=False)
    assert not out.exists()


def test_doctor_checks_the_sensor_firmware_and_the_rpk(tmp_path: Path) -> None:
    from edgecls.doctor import IMX500_FIRMWARE, IMX500_NETWORK, run_checks

    def rows(**options: object) -> dict[str, tuple[str, str, str]]:
        checks = run_checks(list_devices=False, profile="pi-ai-camera", root=tmp_path, **options)  # type: ignore[arg-type]
        return {row.check: (row.status, row.value, row.fix) for row in checks if row.check.startswith("imx500")}

    missing = rows()
    assert missing["imx500 firmware"][0] == "warn" and "apt install imx500-firmware" in missing["imx500 firmware"][2]
    assert missing["imx500 network"][0] == "warn" and "imx500-package -i" in missing["imx500 network"][2]
    firmware = tmp_path / IMX500_FIRMWARE.lstrip("/")
    firmware.parent.mkdir(parents=True)
    firmware.write_bytes(b"fpk")
    network = tmp_path / IMX500_NETWORK.lstrip("/")
    network.parent.mkdir(parents=True)
    network.write_bytes(b"rpk")
    unlabelled = rows()
    assert unlabelled["imx500 firmware"][0] == "ok"
    assert unlabelled["imx500 network"][0] == "warn" and "meta.json and labels.txt" in unlabelled["imx500 network"][2]
    (network.parent / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS))
    assert rows()["imx500 network"][:2] == ("ok", f"{network} (3 classes)")
    assert rows(rpk=tmp_path / "elsewhere.rpk")["imx500 network"][0] == "warn"
    assert not [row for row in run_checks(list_devices=False, profile="pi5", root=tmp_path / "bare") if row.check.startswith("imx500")]

    result = run_cli("doctor", "--device", "pi-ai-camera", "--no-tf", "--json", "--rpk", network)
    report = json.loads(result.stdout)
    assert report["imx500 network"] == f"{network} (3 classes)" and "imx500 firmware" in report
