"""`edgecls export --out` is checked against what the export reads: never into the data the run was trained on, never
the run folder itself or a folder holding it (a folder inside the run, like the default RUN/export, is fine). Refused
before the model (and TensorFlow) loads, with one line, and nothing written. Real CLI on a copy of the tiny plain run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import NO_GATE, assert_clean_error, copy_run, run_cli, run_cli_without_tensorflow

pytestmark = pytest.mark.slow


def _tree_files(tree: Path) -> list[Path]:
    return sorted(p.relative_to(tree) for p in tree.rglob("*"))


@pytest.fixture
def private_run(plain_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(run, tree): a copy of the plain run whose splits.json and meta.json name a private copy of its data tree, so a
    refusal that fails writes into this test's tree, not the shared one."""
    run = copy_run(plain_run, tmp_path / "run")
    shutil.rmtree(run / "export", ignore_errors=True)
    shared_tree = Path(json.loads((run / "splits.json").read_text())["root"])
    tree = tmp_path / "tree"
    shutil.copytree(shared_tree, tree)
    for name in ("splits.json", "meta.json"):
        file = run / name
        file.write_text(file.read_text().replace(json.dumps(str(shared_tree)), json.dumps(str(tree))))
    assert json.loads((run / "meta.json").read_text())["dataset"]["root"] == str(tree)
    return run, tree


@pytest.mark.parametrize("where", ["tree", "class folder", "split folder"])
@pytest.mark.parametrize("precision", [[], ["--int8"]])
def test_out_into_the_training_data_is_refused(private_run: tuple[Path, Path], tmp_path: Path, where: str,
                                               precision: list[str]) -> None:
    run, tree = private_run
    class_folder = next(p for p in sorted(tree.glob("*/*")) if p.is_dir())
    out = {"tree": tree, "class folder": class_folder, "split folder": class_folder.parent}[where]
    before = _tree_files(tree)
    result = run_cli_without_tensorflow("export", run, "--target", "tflite", *precision, "--out", out, cwd=tmp_path)
    assert_clean_error(result, f"'{out / ('tflite-int8' if precision else 'tflite-fp32')}' lies inside the input MODEL's training data "
                               f"'{tree}'", "Choose an output path outside")
    assert _tree_files(tree) == before  # no tflite-*/ and no calibration/ in the data
    assert not (run / "export").exists()


def test_the_data_root_comes_from_meta_json_when_splits_json_is_gone(private_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, tree = private_run
    (run / "splits.json").unlink()
    before = _tree_files(tree)
    assert_clean_error(run_cli_without_tensorflow("export", run, "--out", tree / "exports", cwd=tmp_path),
                       "lies inside the input MODEL's training data")
    assert _tree_files(tree) == before


def test_out_that_is_or_holds_the_run_folder_is_refused(private_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = private_run
    before = _tree_files(run)
    assert_clean_error(run_cli_without_tensorflow("export", run, "--out", run, cwd=tmp_path),
                       f"--out '{run}' is the run folder '{run}'", "Leave --out out (RUN/export)")
    assert_clean_error(run_cli_without_tensorflow("export", run, "--int8", "--out", ".", cwd=run),
                       f"--out '.' is the run folder '{run}'")
    assert_clean_error(run_cli_without_tensorflow("export", "run", "--out", ".", cwd=tmp_path),
                       "--out '.' holds the run folder 'run'")
    assert_clean_error(run_cli_without_tensorflow("export", run, "--out", tmp_path, cwd=tmp_path),
                       f"--out '{tmp_path}' holds the run folder '{run}'")
    assert _tree_files(run) == before and not list(tmp_path.glob("tflite-*"))


def test_out_inside_the_run_still_exports(private_run: tuple[Path, Path], tmp_path: Path) -> None:
    """The data root and the run folder are inputs now; a folder inside the run (not the data) is still an export folder."""
    run, tree = private_run
    before = _tree_files(tree)
    result = run_cli("export", run, "--target", "tflite", *NO_GATE, "--out", run / "exports", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert (run / "exports" / "tflite-fp32" / "model.tflite").is_file() and (run / "exports" / "tflite-fp32" / "golden.npz").is_file()
    assert _tree_files(tree) == before
