"""`edgecls bench --out` never lands in an artifact's folder (its golden set, export report, output marker and meta.json
are what `edgecls verify` and a re-export read), except in its bench/ sub-folder where the report of a lone artifact
goes by default; and the chart (REPORT.png) is never the report itself. Real CLI on a copy of a real fp32 export."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgecls.verify import verify
from tests.conftest import assert_clean_error, run_cli

pytestmark = pytest.mark.slow

BENCH_FAST = ("--runs", "2", "--warmup", "1")


@pytest.fixture
def artifact(plain_fp32_exports: Path, tmp_path: Path) -> Path:
    """A private copy of the session's published tflite-fp32 export (model, meta.json, golden.npz, report, marker)."""
    folder = shutil.copytree(plain_fp32_exports / "tflite-fp32", tmp_path / "exp" / "tflite-fp32")
    return folder / "model.tflite"


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("name", ["golden.npz", "export_report.json", ".edgecls-output", "meta.json", "notes.json",
                                  "sub/report.json", "."])
def test_out_in_the_artifact_folder_is_refused_before_any_work(artifact: Path, tmp_path: Path, name: str) -> None:
    folder = artifact.parent
    out = folder / name
    before = _contents(folder)
    result = run_cli("bench", artifact, *BENCH_FAST, "--out", out, cwd=tmp_path)
    assert_clean_error(result, "--out", str(out), "the input", "Choose an output path outside")
    assert "measured" not in result.stderr  # refused before any measurement
    assert _contents(folder) == before and not (folder / "sub").exists()
    assert verify(folder).ok


@pytest.mark.parametrize("name", ["report.png", "report.PNG"])
def test_out_that_is_the_chart_path_is_refused(artifact: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    result = run_cli("bench", artifact, *BENCH_FAST, "--out", out, cwd=tmp_path)
    assert_clean_error(result, f"--out '{out}' is where the chart goes", "--out bench_report.json")
    assert "measured" not in result.stderr and not out.exists()


def test_the_default_report_and_the_bench_folder_of_a_lone_artifact_still_work(artifact: Path, tmp_path: Path) -> None:
    """A lone artifact's report goes to ITS_FOLDER/bench/ by default: still written, and the export still verifies."""
    folder = artifact.parent
    before = _contents(folder)
    result = run_cli("bench", artifact, *BENCH_FAST, cwd=tmp_path)
    assert result.returncode == 0, result.output
    default = folder / "bench" / "bench_report.json"
    outputs = json.loads(default.read_text())["outputs"]
    assert outputs["json"] == str(default) and outputs["chart"] in (None, str(default.with_suffix(".png")))
    chosen = folder / "bench" / "again.json"
    result = run_cli("bench", artifact, *BENCH_FAST, "--out", chosen, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert json.loads(chosen.read_text())["outputs"]["json"] == str(chosen)
    assert _contents(folder) == before and verify(folder).ok
