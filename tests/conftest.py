"""Shared fixtures: the real CLI in a subprocess, and small real datasets, runs and exports built once per test run
(once for all pytest-xdist workers)."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgecls.fsutil import TEMP_PREFIX

# A test run started in the background (`cmd &`, nohup, some CI runners) inherits SIGINT ignored, and so would every
# CLI it starts: the Ctrl-C tests need the disposition a terminal gives (exec resets a handled signal to the default).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
# Tests import openvino and nncf directly too: with their telemetry declined, as edgecls/openvino_import.py does for
# edgecls itself (the telemetry tests set CI=false for the CLI they start, to check that edgecls declines on its own).
os.environ.setdefault("CI", "true")


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


FRAMEWORK_LOG_ENV = ("TF_CPP_MIN_LOG_LEVEL", "GLOG_minloglevel")  # what quiets TensorFlow / LiteRT when exported


def run_cli(*args: str | Path, cwd: Path | None = None, timeout: float = 600, env: dict[str, str] | None = None,
            user_env: bool = False) -> CliResult:
    """Run `edgecls ARGS...` exactly as a user would (console-script entry point) in a subprocess. The harness sets
    TF_CPP_MIN_LOG_LEVEL=3 unless `user_env`: then neither it nor GLOG_minloglevel is set (what the CLI does on its own)."""
    if user_env:
        harness = {k: v for k, v in os.environ.items() if k not in FRAMEWORK_LOG_ENV}
    else:
        harness = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    full_env = {**harness, "COLUMNS": "200", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", "from edgecls.cli.app import main; main()", *map(str, args)],
        capture_output=True, text=True, cwd=cwd or REPO, timeout=timeout, env=full_env,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


# `python -c BLOCK_TENSORFLOW ARGS...`: the CLI with TensorFlow and Keras unimportable; proves a command (or an early check) needs neither.
BLOCK_TENSORFLOW = """
import importlib.abc, sys
class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise ImportError(f"{name} is blocked in this test", name=name)
sys.meta_path.insert(0, NoTensorFlow())
from edgecls.cli.app import main
main()
"""


def run_cli_without_tensorflow(*args: str | Path, cwd: Path | None = None, timeout: float = 300) -> CliResult:
    """`edgecls ARGS...` in a subprocess that cannot import TensorFlow or Keras."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-c", BLOCK_TENSORFLOW, *map(str, args)], capture_output=True, text=True, cwd=cwd or REPO,
                          timeout=timeout, env=full_env)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_clean_error(result: CliResult, *fragments: str) -> None:
    """A user mistake: exit != 0, one 'error:' line naming the problem, no traceback."""
    assert result.returncode != 0, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


# ----------------------------------------------------------------------------- built once for all xdist workers
# Under `pytest -n N` every worker is its own session: a session fixture would be built N times. What is expensive
# is built once in a folder all workers share (the pytest-xdist pattern: a lock file beside the workers' base
# temps), and every user that writes copies it first.
NO_GATE = ("--max-drop", "none", "--min-agreement", "none")  # plain_run is near chance: tests of artifacts, not of the gate


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"
    root.mkdir(exist_ok=True)
    return root


def build_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """ROOT/name, made by `build(folder)` once per test run whatever the number of workers (others wait on the lock).
    A build that failed half way is removed and retried by the next worker that asks. Read it; copy it to write."""
    root = _shared_root(tmp_path_factory)
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not done.exists():
                if folder.exists():
                    shutil.rmtree(folder)
                build(folder)
                done.write_text("built\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return folder


def copy_run(source: Path, dest: Path) -> Path:
    """A private copy of a run folder, as if trained there: meta.json and state.json name the copy as --out."""
    shutil.copytree(source, dest, symlinks=True)
    for name in ("meta.json", "state.json"):
        file = dest / name
        if file.is_file():
            file.write_text(file.read_text().replace(json.dumps(str(source)), json.dumps(str(dest))))
    return dest


def _check(result: CliResult) -> None:
    assert result.returncode == 0, result.output


@pytest.fixture(scope="session")
def fmnist_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real Fashion-MNIST images (Debian's IDX files) as an ImageFolder tree, 8 per class. Shared by every worker:
    read it (or copy it), never write into it."""
    folder = build_once(tmp_path_factory, "fmnist", lambda out: _check(run_cli("data", "fashion-mnist", out / "tree", "--per-class", "8",
                                                                                 "--no-download")))
    return folder / "tree"


CLI_OUTPUT = "cli_output.json"  # beside what a shared build made: the command's stdout and stderr (run with user_env)


def _keep_output(result: CliResult, file: Path) -> None:
    _check(result)
    file.write_text(json.dumps({"stdout": result.stdout, "stderr": result.stderr, "user_env": True}))


def read_output(file: Path) -> CliResult:
    """The output a shared build kept (CLI_OUTPUT): its command ran in the user's environment (run_cli user_env)."""
    kept = json.loads(file.read_text())
    assert kept["user_env"], file
    return CliResult(0, kept["stdout"], kept["stderr"])


def plain_train_args(tree: Path, out: Path) -> list[str | Path]:
    """The command that makes the shared plain run (test_train_cli.py runs it again: same seed, same split and history)."""
    return ["train", "--data", tree, "--model", "plain_cnn", "--img-size", "32", "--epochs", "3", "--fine-tune-epochs", "1",
            "--batch", "16", "--out", out, "--seed", "1"]


def _shared_plain_run(tmp_path_factory: pytest.TempPathFactory, tree: Path) -> Path:
    """The tiny plain_cnn run, trained once for all workers (read-only: copy it to write); RUN/../CLI_OUTPUT keeps what
    `edgecls train` printed (test_cli_app.py checks it for framework noise)."""
    def build(out: Path) -> None:
        out.mkdir()
        _keep_output(run_cli(*plain_train_args(tree, out / "plain"), user_env=True), out / CLI_OUTPUT)

    return build_once(tmp_path_factory, "plain-run", build) / "plain"


@pytest.fixture(scope="session")
def plain_run(fmnist_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny plain_cnn run at 32 px, trained through the real CLI (once per test run), copied for this worker:
    tests export into it (PLAIN_RUN/export)."""
    return copy_run(_shared_plain_run(tmp_path_factory, fmnist_tree), tmp_path_factory.mktemp("runs") / "plain")


@pytest.fixture(scope="session")
def plain_train_output(fmnist_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> CliResult:
    """What `edgecls train` printed when it made the shared plain run (in the user's environment)."""
    return read_output(_shared_plain_run(tmp_path_factory, fmnist_tree).parent / CLI_OUTPUT)


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(proc.stdout)


INT8_CWD, INT8_STALE = "cwd", "stale_temp.txt"  # beside the plain-int8 run: the export's current folder; the stale temp's path


@pytest.fixture(scope="session")
def plain_int8_exports(fmnist_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN/export of `edgecls export RUN --int8 --target all --json` (gate off: the tiny run is near chance) on a copy of the plain
    run, once per test run: RUN/export/{tflite,edgetpu,onnx,openvino}-int8 and calibration/. Read-only: copy it to write beside the
    models. test_export_cli.py::test_int8_every_target checks the command itself: RUN/../CLI_OUTPUT keeps its output, it ran in an
    empty folder RUN/../INT8_CWD, and RUN/export held a SIGKILLed export's temp folder (its path in RUN/../INT8_STALE) before."""
    shared = _shared_plain_run(tmp_path_factory, fmnist_tree)

    def build(out: Path) -> None:
        run = copy_run(shared, out / "plain")
        stale = run / "export" / f"{TEMP_PREFIX}{dead_pid()}-0badc0de.tmp"  # what a SIGKILLed export leaves
        stale.mkdir(parents=True)
        (stale / "model.tflite").write_bytes(b"half written")
        (out / INT8_STALE).write_text(str(stale))
        (out / INT8_CWD).mkdir()
        _keep_output(run_cli("export", run, "--int8", "--target", "all", *NO_GATE, "--json", cwd=out / INT8_CWD, user_env=True),
                     out / CLI_OUTPUT)

    return build_once(tmp_path_factory, "plain-int8", build) / "plain" / "export"


FP32_EXPORT_STDOUT = "export_stdout.json"


@pytest.fixture(scope="session")
def plain_fp32_exports(fmnist_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`edgecls export PLAIN_RUN --target all --json` (fp32 tflite, onnx, openvino), once per test run, its stdout kept in
    EXPORTS/export_stdout.json (stdout and stderr in EXPORTS/CLI_OUTPUT); read-only: copy it to write."""
    run = _shared_plain_run(tmp_path_factory, fmnist_tree)

    def build(out: Path) -> None:
        result = run_cli("export", run, "--target", "all", "--out", out, "--json", cwd=out.parent, user_env=True)
        _keep_output(result, out / CLI_OUTPUT)
        (out / FP32_EXPORT_STDOUT).write_text(result.stdout)

    return build_once(tmp_path_factory, "plain-fp32", build)


def resume_args(tree: Path, weights: Path, *extra: str | Path) -> list[str]:
    """The run test_resume.py and test_train_streaming.py kill and resume: plain_cnn at 16 px from a "pretrained" backbone
    file (the head trains on cached features, the fine-tune phase on augmented images: the two paths of every real run)."""
    return ["train", "--data", str(tree), "--model", "plain_cnn", "--img-size", "16", "--batch", "16", "--seed", "5",
            "--patience", "0", "--weights", str(weights), "--epochs", "5", "--fine-tune-epochs", "4", "--lr", "0.01", *map(str, extra)]


@pytest.fixture(scope="session")
def resume_baseline(fmnist_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FOLDER/backbone.weights.h5 (plain_cnn, seed 1) and FOLDER/uninterrupted: `resume_args` run through to the end, in
    memory, never killed; what every killed-and-resumed run must end as. Built once per test run; read-only."""

    def build(folder: Path) -> None:
        folder.mkdir()
        weights = folder / "backbone.weights.h5"
        script = ("import keras; from edgecls.zoo.keras_apps import plain_cnn; keras.utils.set_random_seed(1); "
                  f"plain_cnn((16, 16)).save_weights({str(weights)!r})")
        subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, capture_output=True, timeout=300)
        _check(run_cli(*resume_args(fmnist_tree, weights, "--stream", "off", "--out", folder / "uninterrupted")))

    return build_once(tmp_path_factory, "resume-baseline", build)


@pytest.fixture(autouse=True)
def _unfreeze_gc_after_budgeted_runs() -> Iterator[None]:
    """A budgeted run freezes the process's objects at its end (training/budget.py cyclic_gc_paused): later tests in
    this worker get a collector that can free them again."""
    yield
    import gc

    gc.unfreeze()
