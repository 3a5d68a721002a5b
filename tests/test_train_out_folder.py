"""`edgecls train --out`: a new path, an empty folder or a folder edgecls made; a folder holding the user's own files
is refused in one line before any work, its files untouched."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.errors import ConfigError
from edgecls.fsutil import OUTPUT_MARKER, TEMP_PREFIX, has_marker, make_marker
from edgecls.training.run_setup import default_run_dir, new_run_folder
from tests.conftest import assert_clean_error, dead_pid, run_cli

TRAIN = ("--model", "plain_cnn", "--img-size", "16", "--epochs", "1", "--fine-tune-epochs", "0")


def two_class_tree(root: Path) -> Path:
    """2 classes x 6 random 32x32 PNGs (also the 2-class run of test_metrics_json.py)."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def _users_folder(tmp_path: Path) -> Path:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"my":"precious"}\n')
    (mine / "history.csv").write_text("user\n")
    return mine


def test_users_folder_is_refused_before_any_work(tmp_path: Path) -> None:
    data, mine = two_class_tree(tmp_path / "data"), _users_folder(tmp_path)
    before = _files(mine)
    result = run_cli("train", "--data", data, *TRAIN, "--out", "mine", cwd=tmp_path)
    assert_clean_error(result, "--out 'mine' already exists and holds files edgecls did not make",
                       "Pass a new --out, or remove it yourself")
    assert _files(mine) == before  # untouched, and no marker written


def test_users_folder_is_refused_by_the_library_too(tmp_path: Path) -> None:
    data, mine = two_class_tree(tmp_path / "data"), _users_folder(tmp_path)
    before = _files(mine)
    with pytest.raises(ConfigError, match="holds files edgecls did not make"), new_run_folder(mine, str(data)):
        pytest.fail("a user's folder was opened as a run folder")
    assert _files(mine) == before


def test_new_path_is_created_marked_and_removed_when_training_fails_before_it_began(tmp_path: Path) -> None:
    data, run = two_class_tree(tmp_path / "data"), tmp_path / "runs" / "new"
    with new_run_folder(run, str(data)) as opened:
        assert opened == run and has_marker(run)
    with pytest.raises(RuntimeError), new_run_folder(tmp_path / "runs" / "other", str(data)):
        raise RuntimeError("failed before state.json")
    assert not (tmp_path / "runs" / "other").exists()


def test_empty_folder_is_used_and_given_back_empty_when_training_fails_before_it_began(tmp_path: Path) -> None:
    data, empty = two_class_tree(tmp_path / "data"), tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError), new_run_folder(empty, str(data)):
        assert has_marker(empty)
        raise RuntimeError("failed before state.json")
    assert empty.is_dir() and list(empty.iterdir()) == []


def test_folder_edgecls_made_is_reused(tmp_path: Path) -> None:
    """A run folder whose start was killed (marker, splits.json, no state.json): a second start reuses it."""
    data, run = two_class_tree(tmp_path / "data"), tmp_path / "run"
    run.mkdir()
    make_marker(run, "train")
    (run / "splits.json").write_text("{}")
    with new_run_folder(run, str(data)):
        pass
    assert has_marker(run) and (run / "splits.json").read_text() == "{}"


def test_folder_holding_only_a_killed_starts_temp_counts_as_empty(tmp_path: Path) -> None:
    data, run = two_class_tree(tmp_path / "data"), tmp_path / "run"
    run.mkdir()
    stale = run / f"{TEMP_PREFIX}{dead_pid()}-0123abcd.tmp"  # SIGKILL while the marker was being written
    stale.write_text("{")
    with new_run_folder(run, str(data)):
        assert has_marker(run) and not stale.exists()


def test_default_run_folder_is_a_new_path_under_models() -> None:
    run = default_run_dir("plain_cnn")
    assert run.parent == Path("models") and run.name.startswith("plain_cnn-")


@pytest.mark.slow
def test_train_into_an_empty_folder_then_again_into_the_finished_run(tmp_path: Path) -> None:
    data, out = two_class_tree(tmp_path / "data"), tmp_path / "empty"
    out.mkdir()
    result = run_cli("train", "--data", data, *TRAIN, "--out", out)
    assert result.returncode == 0, result.output
    assert (out / OUTPUT_MARKER).is_file() and (out / "model.keras").is_file()
    assert json.loads((out / "state.json").read_text())["phase"] == "done"
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = run_cli("train", "--data", data, *TRAIN, "--out", out)
    assert_clean_error(again, f"run folder '{out}' already holds a trained model")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
