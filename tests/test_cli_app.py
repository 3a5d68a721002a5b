"""The entry point: --version, -h everywhere, quiet frameworks unless --verbose, SIGTERM -> a clean exit 143."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib

import edgecls
from edgecls.cli import app as app_module
from edgecls.errors import Terminated
from tests.conftest import CLI_OUTPUT, REPO, CliResult, assert_clean_error, read_output, run_cli

NOISE = re.compile(r"XNNPACK|absl::InitializeLog|oneDNN|cpu_feature_guard|rebuild TensorFlow|^[IWE]\d{4} \d\d:\d\d", re.MULTILINE)


def _edgecls(*args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The real CLI with the user's environment: no TF_CPP_MIN_LOG_LEVEL from the test harness."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "GLOG_minloglevel")}
    return subprocess.run([sys.executable, "-c", "from edgecls.cli.app import main; main()", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout, env={**env, "COLUMNS": "200"})


def test_version_matches_the_package() -> None:
    result = run_cli("--version")
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert result.returncode == 0, result.output
    assert result.stdout.strip() == f"edgecls {edgecls.__version__}" == f"edgecls {version}"


def test_h_is_help_on_every_command() -> None:
    """-h prints the same help as --help for the app, every command and every `data` subcommand."""
    from typer.main import get_command
    from typer.testing import CliRunner

    app_module._register()
    group = get_command(app_module.app)
    paths: list[list[str]] = [[]]
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        paths.append([name])
        paths.extend([name, sub] for sub in getattr(command, "commands", {}))
    assert len(paths) >= 14, paths
    runner = CliRunner()
    for path in paths:
        short, long = runner.invoke(app_module.app, [*path, "-h"]), runner.invoke(app_module.app, [*path, "--help"])
        assert short.exit_code == 0, (path, short.output)
        assert short.output == long.output and "Usage:" in short.output, path


def test_global_flags_are_taken_out_wherever_they_stand() -> None:
    result = run_cli("models", "--json", "--verbose", "--debug")
    assert result.returncode == 0, result.output
    assert result.stdout.lstrip().startswith("[")


def test_frameworks_are_quiet_unless_verbose(plain_train_output: CliResult, plain_fp32_exports: Path, fmnist_tree: Path,
                                             tmp_path: Path) -> None:
    """train, export and predict print no TensorFlow/absl/LiteRT start-up lines; --verbose brings them back. train and export:
    the session's shared plain run and its `export --target all` (tflite, onnx, openvino), both run in the user's environment
    (no TF_CPP_MIN_LOG_LEVEL from the harness) and their output kept (conftest CLI_OUTPUT)."""
    export = read_output(plain_fp32_exports / CLI_OUTPUT)
    assert "run folder:" in plain_train_output.stdout and json.loads(export.stdout)
    model = plain_fp32_exports / "tflite-fp32" / "model.tflite"
    image = sorted((fmnist_tree / "test").rglob("*.png"))[0]
    predict = _edgecls("predict", model, image, cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr
    for name, stderr in (("train", plain_train_output.stderr), ("export", export.stderr), ("predict", predict.stderr)):
        assert not NOISE.search(stderr), f"{name}: {stderr}"
    verbose = _edgecls("predict", model, image, "--verbose", cwd=tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    assert "Created TensorFlow Lite XNNPACK delegate" in verbose.stderr  # the line exists: quiet mode really removes it
    assert verbose.stdout == predict.stdout


def test_sigterm_handler_raises_once_then_lets_the_clean_up_finish() -> None:
    previous = signal.signal(signal.SIGTERM, app_module._on_sigterm)
    app_module._terminated.clear()
    try:
        with pytest.raises(Terminated):
            app_module._on_sigterm(signal.SIGTERM, None)
        app_module._on_sigterm(signal.SIGTERM, None)  # a second SIGTERM: no exception in the middle of clean-ups
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a third one would end the process at once
    finally:
        app_module._terminated.clear()
        signal.signal(signal.SIGTERM, previous)
    assert issubclass(Terminated, KeyboardInterrupt)  # every `except KeyboardInterrupt` / `finally` clean-up applies


def test_sigterm_while_writing_exits_143_and_leaves_no_temp(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    out = parent / "fmnist"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from edgecls.cli.app import main; main()", "data", "fashion-mnist", str(out), "--per-class", "6000",
         "--no-download"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200"},
    )
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and not any(t.rglob("*.png") for t in parent.glob(".edgecls-tmp-*")):
            time.sleep(0.02)  # wait until images are being written into the temp folder
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stdout + stderr
    assert "Traceback" not in stderr, stderr
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == ["error: terminated"], stderr
    left = {str(p.relative_to(parent)) for p in parent.rglob("*")}
    assert not left, sorted(left)[:20]  # no temp folder, no partial output


TEARDOWN_PROBE = """
import atexit, sys
import tensorflow
class Finalized:  # printed while the interpreter finalizes its modules: skipped by os._exit
    def __del__(self):
        print("INTERPRETER-FINALIZED", file=sys.stderr, flush=True)
probe = Finalized()
atexit.register(lambda: print("ATEXIT-RAN", file=sys.stderr, flush=True))  # e.g. autograph removing its temp files
from edgecls.cli.app import main
{call}
"""


@pytest.mark.parametrize(("call", "code", "finalized"), [
    ("main()", 0, False),  # the console script with TensorFlow loaded: output flushed, finalization skipped
    ("sys.argv[1:] = ['models', '--nope']; main()", 2, False),  # a usage error keeps its exit code
    ("main(sys.argv[1:])", 0, True),  # an in-process call never ends the caller's process
])
def test_the_console_script_skips_tensorflows_teardown_and_keeps_output_and_exit_code(call: str, code: int, finalized: bool) -> None:
    proc = subprocess.run([sys.executable, "-c", TEARDOWN_PROBE.format(call=call), "models", "--json"], capture_output=True,
                          text=True, cwd=REPO, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == code, proc.stderr
    assert ("INTERPRETER-FINALIZED" in proc.stderr) is finalized
    assert proc.stderr.count("ATEXIT-RAN") == 1  # atexit clean-ups run either way, once
    if code == 0:
        assert '"efficientnet_lite0"' in proc.stdout and proc.stdout.rstrip().endswith(("]", "}"))
    else:
        assert "--nope" in proc.stderr


def test_help_prints_square_brackets_as_written() -> None:
    """Help texts are plain, not Rich markup: '[default: 10]' and 'mqtt[s]://' were swallowed as markup tags."""
    shown = " ".join(run_cli("camera", "--help").stdout.split())
    assert "[default: 10]." in shown and "mqtt[s]://[USER@]HOST[:PORT]/PREFIX" in shown


def test_an_empty_value_is_refused_before_it_becomes_the_current_folder(tmp_path: Path) -> None:
    """typer turns "" into Path("."): `export RUN --out "$UNSET"` exported into the current folder."""
    cases = [(("export", tmp_path / "run", "--out", ""), "--out is empty"), (("train", "--data="), "--data is empty"),
             (("predict", ""), "the argument after 'predict' is empty")]
    for args, message in cases:
        assert_clean_error(run_cli(*args, cwd=tmp_path), message, "unset shell variable")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("verbose", [False, True])
def test_matplotlibs_layout_warning_is_noise_unless_verbose(verbose: bool, tmp_path: Path) -> None:
    """Long class names leave a confusion matrix no room: matplotlib warns, the PNG is still written."""
    png = str(tmp_path / "cm.png")
    code = (f"from edgecls.cli import quiet; restore = quiet.configure({verbose}); import numpy as np; from pathlib import Path; "
            "from edgecls.training.report import plot_confusion; "
            f"plot_confusion(np.eye(3, dtype=int), [c * 400 for c in 'abc'], Path({png!r})); restore()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0 and (tmp_path / "cm.png").is_file(), result.stderr
    assert ("Tight layout not applied" in result.stderr) == verbose, result.stderr
