"""install.sh's --prefix check (users run it as root): it installs only into a new or empty folder, the bundle's own
folder, or an earlier install that carries its marker (.edgecls-install, written first on every install). A folder
of the user's, a symbolic link, a marker that is a link, `/` and top-level folders are refused in one line before
anything is touched. Real runs of a bundle's install.sh (--no-apt --no-venv --no-service: offline, without root).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edgecls.deploy import build_bundle
from edgecls.deploy.install_script import INSTALL_MARKER
from tests.test_deploy_safety import make_run, run_install, snapshot, wheel  # noqa: F401 - fixture

FILES_ONLY = ("--no-apt", "--no-venv", "--no-service")


@pytest.fixture()
def bundle(wheel: Path, tmp_path: Path) -> Path:  # noqa: F811 - the imported fixture
    out = tmp_path / "bundle"
    build_bundle(make_run(tmp_path / "run"), "pi5", out, wheel=wheel)
    syntax = subprocess.run(["bash", "-n", str(out / "install.sh")], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    return out


def install(bundle: Path, prefix: Path | str) -> subprocess.CompletedProcess[str]:
    cwd = bundle.parent / "cwd"
    cwd.mkdir(exist_ok=True)
    return run_install(bundle, cwd, *FILES_ONLY, "--prefix", str(prefix))


def refusal(done: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a refused install (and nothing installed: no '==>' progress line)."""
    assert done.returncode != 0, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("install.sh: error:")]
    assert len(errors) == 1 and "installing to" not in done.stdout, done.stdout + done.stderr
    return errors[0]


def test_fresh_prefix_then_reinstall_replaces_model_and_wheels(bundle: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "opt" / "edgecls"
    first = install(bundle, prefix)
    assert first.returncode == 0, first.stdout + first.stderr
    marker = prefix / INSTALL_MARKER
    assert marker.is_file() and not marker.is_symlink() and (prefix / "model" / "model.tflite").is_file()
    stale = [prefix / "model" / "stale.bin", prefix / "wheels" / "old-0.0.1-py3-none-any.whl"]
    for path in stale:
        path.write_text("from the previous install")

    again = install(bundle, prefix)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not any(path.exists() for path in stale), "model/ and wheels/ were not replaced"
    assert marker.is_file() and (prefix / "model" / "model.tflite").is_file() and (prefix / "edgecls-camera.service").is_file()


def test_empty_folder_and_trailing_slash_install(bundle: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "empty"
    prefix.mkdir()
    done = install(bundle, f"{prefix}/")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (prefix / INSTALL_MARKER).is_file() and (prefix / "model" / "model.tflite").is_file()


def test_a_folder_of_the_user_is_refused_untouched(bundle: Path, tmp_path: Path) -> None:
    """The reviewer's case: PREFIX/model holds the user's file, no marker: nothing deleted, overwritten or added."""
    prefix = tmp_path / "pfx"
    (prefix / "model").mkdir(parents=True)
    (prefix / "model" / "important_user_data.txt").write_text("notes")
    (prefix / "README.md").write_text("mine")
    before = snapshot(prefix, skip=tmp_path / "cwd")
    error = refusal(install(bundle, prefix))
    assert f"--prefix {prefix} is not an edgecls install (no {INSTALL_MARKER})" in error and "choose an empty or new --prefix" in error
    assert snapshot(prefix, skip=tmp_path / "cwd") == before
    assert (prefix / "model" / "important_user_data.txt").read_text() == "notes" and (prefix / "README.md").read_text() == "mine"


def test_links_and_system_folders_are_refused(bundle: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "link"
    link.symlink_to(elsewhere)
    for given in (link, f"{link}/"):
        assert "is a symbolic link" in refusal(install(bundle, given)) and not list(elsewhere.iterdir())

    (elsewhere / INSTALL_MARKER).symlink_to(tmp_path / "target-of-marker")  # a marker that is a link is no marker
    (elsewhere / "data").write_text("kept")
    assert f"holds {INSTALL_MARKER} as a symbolic link" in refusal(install(bundle, elsewhere))
    assert sorted(p.name for p in elsewhere.iterdir()) == sorted([INSTALL_MARKER, "data"])

    file_prefix = tmp_path / "a-file"
    file_prefix.write_text("kept")
    assert "is not a folder" in refusal(install(bundle, file_prefix)) and file_prefix.read_text() == "kept"

    for system in ("/", "/usr", "/etc/", "/home", f"{tmp_path}/new/../" + "../" * len(tmp_path.parts)):
        error = refusal(install(bundle, system))
        assert "the root or a top-level system folder" in error, error


def test_bundle_folder_itself_installs(bundle: Path) -> None:
    """sudo ./install.sh --prefix . in a bundle copied where it should live: nothing copied over itself, the marker written."""
    done = install(bundle, bundle)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (bundle / INSTALL_MARKER).is_file() and (bundle / "model" / "model.tflite").is_file()
