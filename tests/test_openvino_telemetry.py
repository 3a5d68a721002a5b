"""OpenVINO and NNCF run without their telemetry: nothing written to the user's home, no usage events sent
(edgecls/openvino_import.py). The export path (converter + NNCF) is covered in tests/test_export_cli.py."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENDORS = ("openvino", "nncf")


def test_importing_openvino_writes_nothing_to_home_and_restores_ci(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    code = ("import os; from edgecls.openvino_import import import_openvino; ov = import_openvino('intel'); "
            "ov.Core().available_devices; print(os.environ.get('CI'))")
    env = {**os.environ, "HOME": str(tmp_path), "CI": "false"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "false"  # the switch is scoped to the import
    assert not (tmp_path / "intel").exists(), sorted(str(p) for p in (tmp_path / "intel").rglob("*"))


def _vendor_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require" and node.args:
            first = node.args[0]
            names = [first.value] if isinstance(first, ast.Constant) and isinstance(first.value, str) else []
        found += [f"{path.relative_to(REPO)}:{node.lineno} {name}" for name in names if name.split(".")[0] in VENDORS]
    return found


def test_every_openvino_and_nncf_import_goes_through_openvino_import() -> None:
    sources = [p for p in (REPO / "edgecls").rglob("*.py") if p.name != "openvino_import.py"]
    assert [hit for path in sources for hit in _vendor_imports(path)] == []
