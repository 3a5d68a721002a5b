"""`edgecls train --strategy multi-worker`: two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy, TF_CONFIG).

The chief (worker 0) writes the run folder; worker 1 trains in a temp folder of its own (under its TMPDIR here)
and removes it. A job whose workers are killed and started again with the same command resumes the run.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgecls.errors import ConfigError
from edgecls.training.multi_worker import read_tf_config
from tests.conftest import REPO, assert_clean_error, run_cli

# --dropout 0: with dropout each worker draws the mask of its half of the batch from the same seed, not the rows of
# the single process's mask, so the two runs would differ by chance; without it they compute the same steps.
_ARGS = ("--model", "plain_cnn", "--img-size", "32", "--batch", "16", "--seed", "3", "--dropout", "0", "--patience", "0")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]}, "task": {"type": "worker", "index": index}})


def _start_workers(args: list[str], scratch: Path) -> list[subprocess.Popen[str]]:
    """Both workers of a two-worker job; each gets its own TMPDIR (scratch/w0, scratch/w1) to check what it leaves."""
    ports, procs = _free_ports(2), []
    for index in range(2):
        tmp = scratch / f"w{index}"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200", "TMPDIR": str(tmp), "TF_CONFIG": _tf_config(ports, index)}
        procs.append(subprocess.Popen([sys.executable, "-c", "from edgecls.cli.app import main; main()", *args], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 300) -> list[str]:
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, out + err
        outputs.append(out + err)
    return outputs


@pytest.mark.slow
def test_two_workers_match_one_process(fmnist_tree: Path, tmp_path: Path) -> None:
    args = ["train", "--data", str(fmnist_tree), *_ARGS, "--epochs", "1", "--fine-tune-epochs", "1"]
    procs = _start_workers([*args, "--strategy", "multi-worker", "--out", str(tmp_path / "two")], tmp_path / "tmp")
    single = run_cli(*args, "--strategy", "default", "--out", tmp_path / "one")
    outputs = _finish(procs)
    assert single.returncode == 0, single.output
    two, one = tmp_path / "two", tmp_path / "one"
    for name in ("model.keras", "meta.json", "metrics.json", "history.csv", "splits.json", "confusion_matrix.csv", "curves.png"):
        assert (two / name).is_file(), name
    assert not (two / "checkpoint.npz").exists() and json.loads((two / "state.json").read_text())["phase"] == "done"
    assert json.loads((two / "meta.json").read_text())["training"]["replicas"] == 2
    assert list((tmp_path / "tmp" / "w1").iterdir()) == [], "worker 1 left files behind"
    assert not (tmp_path / "tmp" / "w1" / "two").exists() and "run folder: " in outputs[1]
    accuracy = {run.name: json.loads((run / "metrics.json").read_text())["accuracy"] for run in (one, two)}
    # Measured: identical test accuracy (weights differ by float summation order only, ~1e-3 at most).
    assert abs(accuracy["two"] - accuracy["one"]) <= 0.005, accuracy
    one_rows, two_rows = (json.loads((run / "state.json").read_text())["rows"] for run in (one, two))
    assert [row["val_accuracy"] for row in two_rows] == pytest.approx([row["val_accuracy"] for row in one_rows], abs=0.005)


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}', "task type 'chief'"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}', "task index 1"),
    ('{"cluster": {"worker": ["127.0.0.1:99999"]}, "task": {"type": "worker", "index": 0}}', "'127.0.0.1:99999'"),
    ('{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}', "'127.0.0.1'"),
    ('{"cluster": {"ps": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}', "job 'ps'"),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}', "'a:1' more than once"),
    ('{"cluster": {"worker": ["a:1"]}}', 'no "task"'),
])
def test_tf_config_errors_name_the_value(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_tf_config(text)
    assert fragment in str(caught.value) and str(caught.value).count("\n") == 0


def test_tf_config_chief_convention() -> None:
    two = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}
    assert read_tf_config(json.dumps(two)).is_chief
    assert not read_tf_config(json.dumps({**two, "task": {"type": "worker", "index": 1}})).is_chief
    with_chief = {"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}
    assert read_tf_config(json.dumps(with_chief)).is_chief
    assert not read_tf_config(json.dumps({**with_chief, "task": {"type": "worker", "index": 0}})).is_chief


def test_cli_errors_write_nothing(fmnist_tree: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ("train", "--data", fmnist_tree, *_ARGS, "--strategy", "multi-worker", "--out", run)
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    missing = subprocess.run([sys.executable, "-c", "from edgecls.cli.app import main; main()", *map(str, args)], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "TF_CONFIG environment variable" in missing.stderr and "Traceback" not in missing.stderr
    assert_clean_error(run_cli(*args, env={"TF_CONFIG": '{"cluster": '}), "TF_CONFIG is not valid JSON")
    no_out = run_cli("train", "--data", fmnist_tree, "--strategy", "multi-worker", env={"TF_CONFIG": _tf_config([1, 2], 0)})
    assert_clean_error(no_out, "needs --out")
    budget = run_cli(*args, "--time-budget", "3m", env={"TF_CONFIG": _tf_config([1, 2], 0)})
    assert_clean_error(budget, "--time-budget 3m does not work with --strategy multi-worker")
    assert not run.exists()


@pytest.mark.slow
def test_killed_job_restarted_with_same_command_resumes(fmnist_tree: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # Head phase only: the kill and the resume are the point here; both phases under multi-worker: the test above.
    args = ["train", "--data", str(fmnist_tree), *_ARGS, "--epochs", "300", "--fine-tune-epochs", "0", "--no-feature-cache",
            "--strategy", "multi-worker", "--out", str(run)]
    procs = _start_workers(args, tmp_path / "tmp")
    deadline = time.time() + 240
    while time.time() < deadline and all(proc.poll() is None for proc in procs):
        state = run / "state.json"
        if state.is_file() and json.loads(state.read_text()).get("epochs_done", 0) >= 1:
            break
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)  # a worker dies after an epoch's checkpoint ...
    procs[1].wait(timeout=60)
    procs[0].send_signal(signal.SIGKILL)  # ... and the job is restarted as a whole (TFJob: every worker starts again)
    procs[0].communicate(timeout=60)
    state = json.loads((run / "state.json").read_text())
    assert state["phase"] == "head" and state["epochs_done"] >= 1 and (run / "checkpoint.npz").is_file()
    state["config"]["epochs"] = state["epochs_done"] + 1  # shorten the rest of the run for the test
    (run / "state.json").write_text(json.dumps(state))
    # What the SIGKILLed worker 1 could not remove: its temp folder (and TensorFlow's autograph files, not ours).
    assert len(list((tmp_path / "tmp" / "w1").glob("edgecls-*"))) == 1
    outputs = _finish(_start_workers(args, tmp_path / "tmp"))
    assert f"resuming run '{run}' after {state['epochs_done']} completed head epoch(s)" in " ".join(outputs[0].split())
    rows = json.loads((run / "state.json").read_text())["rows"]
    assert [row["epoch"] for row in rows if row["phase"] == "head"] == list(range(1, state["epochs_done"] + 2))
    assert (run / "model.keras").is_file() and not (run / "checkpoint.npz").exists()
    assert list((tmp_path / "tmp" / "w1").glob("edgecls-*")) == []  # the restarted worker 1 removed it, and its own
