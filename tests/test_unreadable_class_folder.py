"""A class folder that cannot be listed is named as such (not "has no usable images: add images to it")."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_data import make_tree


def _as_unprivileged(args: list[str]) -> list[str]:
    """root reads any folder: drop the capabilities that let it (setpriv), or skip where that is not possible."""
    if os.geteuid() != 0:
        return args
    setpriv = shutil.which("setpriv")
    drop = [setpriv, "--bounding-set=-dac_override,-dac_read_search"] if setpriv else []
    if not drop or subprocess.run([*drop, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root without setpriv: every folder is readable")
    return [*drop, *args]


def test_a_class_folder_that_cannot_be_listed_is_named_with_the_reason(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "data", {"a": 4, "b": 4})
    (tree / "b").chmod(0)
    try:
        command = _as_unprivileged([sys.executable, "-c", "from edgecls.cli.app import main; main()", "data", "check", str(tree)])
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    finally:
        (tree / "b").chmod(0o755)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert f"error: class folder '{tree / 'b'}' cannot be listed (Permission denied)" in result.stderr, result.stderr
