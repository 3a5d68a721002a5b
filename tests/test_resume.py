"""Faithful resume: a run killed with SIGKILL (in the head phase, then again in the fine-tune phase) and resumed
with `edgecls train --resume RUN` ends with exactly the weights of the same run left uninterrupted.

A tiny real run: plain_cnn at 16 px on 80 Fashion-MNIST images. (A randomly initialised backbone, trained
whole with augmentation in the head phase, resumes just as exactly; test_train_cli.py::test_interrupt_then_resume
covers its Ctrl-C path.)
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgecls.fsutil import TEMP_PREFIX
from tests.conftest import REPO, resume_args, run_cli

pytestmark = pytest.mark.slow


def _state(run: Path) -> dict:
    try:
        return json.loads((run / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def _kill_when(args: list[str], run: Path, phase: str, epochs_done: int) -> int:
    """Start `edgecls ARGS`, SIGKILL it as soon as state.json says `phase` has `epochs_done` epochs checkpointed."""
    proc = subprocess.Popen([sys.executable, "-c", "from edgecls.cli.app import main; main()", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        state = _state(run)
        if state.get("phase") == phase and state.get("epochs_done", 0) >= epochs_done:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"finished before the kill (rc {proc.returncode}): {err[-2000:]}"
    assert not (run / "model.keras").exists() and (run / "checkpoint.npz").is_file()
    return proc.pid


def _weights(run: Path) -> dict[str, np.ndarray]:
    """Every array in model.keras' weights file, by its HDF5 path (read with h5py: no TensorFlow needed)."""
    import h5py

    found: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(run / "model.keras") as archive, archive.open("model.weights.h5") as handle:
        with h5py.File(handle, "r") as weights:
            weights.visititems(lambda name, item: found.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return found


def _leave_a_stale_temp(run: Path, dead_pid: int) -> None:
    """What a SIGKILL in the middle of writing a checkpoint leaves behind: the resume must sweep it."""
    (run / f"{TEMP_PREFIX}{dead_pid}-0badc0de.tmp.npz").write_bytes(b"half a checkpoint")


def _resume(run: Path, dead_pid: int) -> None:
    _leave_a_stale_temp(run, dead_pid)
    result = run_cli("train", "--resume", run)
    assert result.returncode == 0, result.output


def _assert_same_run(resumed: Path, uninterrupted: Path) -> None:
    assert (resumed / "history.csv").read_text() == (uninterrupted / "history.csv").read_text()
    expected, got = _weights(uninterrupted), _weights(resumed)
    # model.keras also holds the optimizer of every sub-model compiled in that process: the head's (cached-feature
    # phase) exists only when the head phase ran there. Weights must match one for one, optimizer state where both have it.
    weights = sorted(name for name in expected if "optimizer" not in name)
    assert weights == sorted(name for name in got if "optimizer" not in name) and len(weights) > 10
    different = [name for name in set(expected) & set(got) if not np.array_equal(got[name], expected[name])]
    assert not different, different
    accuracy = [json.loads((folder / "metrics.json").read_text())["accuracy"] for folder in (resumed, uninterrupted)]
    assert accuracy[0] == accuracy[1]
    assert not [p.name for p in resumed.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert not (resumed / "checkpoint.npz").exists() and _state(resumed)["phase"] == "done"


def test_sigkill_in_each_phase_then_resume_gives_the_same_weights(fmnist_tree: Path, resume_baseline: Path, tmp_path: Path) -> None:
    """Killed after head epoch 2, resumed, killed again after fine-tune epoch 1, resumed: the uninterrupted run's weights.

    The backbone is "pretrained" (plain_cnn weights from a file), so the head trains on cached features and the
    fine-tune phase trains the whole model on augmented images: the two paths of every real run. The uninterrupted run
    (conftest's resume_baseline) is made once per test run and shared with test_train_streaming.py.
    """
    args = resume_args(fmnist_tree, resume_baseline / "backbone.weights.h5")
    run = tmp_path / "killed"
    pid = _kill_when([*args, "--out", str(run)], run, "head", 2)
    _leave_a_stale_temp(run, pid)
    pid = _kill_when(["train", "--resume", str(run)], run, "fine_tune", 1)  # the resumed run, killed again
    assert not [p.name for p in run.iterdir() if p.name.startswith(TEMP_PREFIX) and str(pid) not in p.name]
    _resume(run, pid)
    _assert_same_run(run, resume_baseline / "uninterrupted")
