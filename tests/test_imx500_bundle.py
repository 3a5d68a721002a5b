"""The pi-ai-camera bundle where the Raspberry Pi OS parts are missing (fast; the emulated-Pi run of the same bundle, with a
real IMX500 export and the Pi's Python, is scripts/pi_emulation_imx500.sh in CI).

- install.sh's apt step on a Debian without Raspberry Pi OS' repository (imx500-firmware / imx500-tools unknown to apt):
  one line naming the packages and the command it would run, before it installs or writes anything;
- the service's own command line (the unit's ExecStart) before and after the network is packaged: one `error:` line
  naming imx500-package, then one naming picamera2 (neither is installable here).

The export is the layout `edgecls export --target imx500` publishes (tests/test_deploy_imx500.py's make_imx500_run);
`imx500-package` is a stand-in (Raspberry Pi OS only), as there.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from edgecls.deploy import build_bundle
from tests.conftest import REPO, assert_clean_error, run_cli
from tests.test_deploy_imx500 import FAKE_PACKAGER, LABELS, install, make_imx500_run
from tests.test_deploy_safety import UNIT_PATH, exec_argv, wheel  # noqa: F401 - fixture

TRIPWIRE = """#!/bin/sh
# apt-get / sudo must not run in this test: leave a mark and fail
echo "$0 $*" >> "{mark}"
exit 1
"""


@pytest.fixture()
def bundle(wheel: Path, tmp_path: Path) -> Path:  # noqa: F811 - the fixture imported above
    out = tmp_path / "bundle"
    build_bundle(make_imx500_run(tmp_path / "run"), "pi-ai-camera", out, wheel=wheel)
    return out


def raspberry_pi_apt() -> bool:
    """Whether this machine's apt has Raspberry Pi OS' repository (then install.sh would go on to install from it)."""
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    return any(re.search(r"(?m)^[^#]*archive[.]raspberrypi[.]", path.read_text(errors="replace")) for path in sources if path.is_file())


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh's apt step runs as root (else it asks for sudo first)")
@pytest.mark.skipif(shutil.which("apt-cache") is None, reason="no apt here: not a Debian")
def test_apt_step_without_the_raspberry_pi_repository_is_one_line_and_installs_nothing(bundle: Path, tmp_path: Path) -> None:
    if raspberry_pi_apt():
        pytest.skip("this machine's apt has the Raspberry Pi repository: install.sh would install from it")
    tools, mark = tmp_path / "tripwires", tmp_path / "ran"
    tools.mkdir()
    for name in ("apt-get", "sudo", "systemctl"):
        (tools / name).write_text(TRIPWIRE.format(mark=mark))
        (tools / name).chmod(0o755)
    cwd, prefix = tmp_path / "cwd", tmp_path / "prefix"
    cwd.mkdir()
    unit_before = UNIT_PATH.exists()
    done = install(bundle, cwd, "--prefix", str(prefix), tools=tools)
    errors = [line for line in done.stderr.splitlines() if line.startswith("install.sh: error:")]
    assert done.returncode != 0 and len(errors) == 1, done.stdout + done.stderr
    assert "apt knows no imx500-firmware imx500-tools python3-picamera2" in errors[0]
    assert "archive.raspberrypi.com" in errors[0] and "run install.sh --no-apt" in errors[0]
    assert "This step would run: apt-get update; apt-get install -y python3 python3-venv python3-pip python3-picamera2" in errors[0]
    assert not mark.exists() and not prefix.exists() and UNIT_PATH.exists() == unit_before and not list(cwd.iterdir())


def test_the_service_command_line_names_what_is_missing_in_one_line(bundle: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = install(bundle, cwd, "--no-apt", "--no-venv", "--no-service", "--prefix", str(prefix))
    assert done.returncode == 0, done.stdout + done.stderr
    argv = exec_argv((prefix / "edgecls-camera.service").read_text(), str(prefix))
    assert argv[:2] == [f"{prefix}/venv/bin/edgecls", "camera"] and "--device=imx500" in argv
    report = tmp_path / "report.json"  # the unit's report is under /var/lib; its live view listens on 0.0.0.0
    args = [f"--report={report}" if a.startswith("--report=") else "--serve=127.0.0.1:18080" if a.startswith("--serve=") else a
            for a in argv[1:]]

    assert_clean_error(run_cli(*args), f"'{prefix}/rpk/network.rpk' does not exist")  # imx500-package has not run yet

    tools = tmp_path / "tools"  # the packager's stand-in: install.sh packages the network and puts its labels beside it
    tools.mkdir()
    (tools / "imx500-package").write_text(FAKE_PACKAGER)
    (tools / "imx500-package").chmod(0o755)
    again = install(bundle, cwd, "--no-apt", "--no-venv", "--no-service", "--prefix", str(prefix), tools=tools)
    assert again.returncode == 0 and (prefix / "rpk" / "labels.txt").read_text().split() == LABELS, again.stdout + again.stderr
    if importlib.util.find_spec("picamera2") is None:  # apt's python3-picamera2 exists only on Raspberry Pi OS
        assert_clean_error(run_cli(*args), "picamera2 with IMX500 support is not installed", "sudo apt install python3-picamera2")
    assert not report.exists()


def test_doctor_in_the_bundles_venv_checks_that_prefix(bundle: Path, tmp_path: Path) -> None:
    """Run from PREFIX/venv (as the bundle's README says), doctor checks PREFIX/rpk/network.rpk, not /opt/edgecls's, and its
    fix names that prefix."""
    prefix = tmp_path / "prefix"
    done = install(bundle, tmp_path, "--no-apt", "--no-venv", "--no-service", "--prefix", str(prefix))
    assert done.returncode == 0, done.stdout + done.stderr
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix / "venv")], check=True, timeout=120)
    paths = os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]])  # this checkout and its packages, in the bundle's venv
    result = subprocess.run([str(prefix / "venv" / "bin" / "python"), "-m", "edgecls", "doctor", "--device", "pi-ai-camera", "--no-tf",
                             "--json"], capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": paths})
    rows = {row["check"]: row for row in json.loads(result.stdout)["checks"]}
    network = rows["imx500 network"]
    assert (network["status"], network["value"]) == ("warn", f"{prefix}/rpk/network.rpk not found"), network
    assert f"imx500-package -i {prefix}/model/packerOut.zip -o {prefix}/rpk/" in network["fix"]
