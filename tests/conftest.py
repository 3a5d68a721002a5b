"""Shared fixtures: the real CLI in a subprocess, and small real datasets and runs built once per session."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str | Path, cwd: Path | None = None, timeout: float = 600, env: dict[str, str] | None = None) -> CliResult:
    """Run `edgecls ARGS...` exactly as a user would (console-script entry point) in a subprocess."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", "from edgecls.cli.app import main; main()", *map(str, args)],
        capture_output=True, text=True, cwd=cwd or REPO, timeout=timeout, env=full_env,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_clean_error(result: CliResult, *fragments: str) -> None:
    """A user mistake: exit != 0, one 'error:' line naming the problem, no traceback."""
    assert result.returncode != 0, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="session")
def fmnist_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real Fashion-MNIST images (Debian's IDX files) as an ImageFolder tree, 8 per class."""
    out = tmp_path_factory.mktemp("fmnist") / "tree"
    result = run_cli("data", "fashion-mnist", out, "--per-class", "8", "--no-download")
    assert result.returncode == 0, result.output
    return out


@pytest.fixture(scope="session")
def plain_run(fmnist_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny plain_cnn run at 32 px, trained through the real CLI."""
    run = tmp_path_factory.mktemp("runs") / "plain"
    result = run_cli(
        "train", "--data", fmnist_tree, "--model", "plain_cnn", "--img-size", "32", "--epochs", "3",
        "--fine-tune-epochs", "1", "--batch", "16", "--out", run, "--seed", "1",
    )
    assert result.returncode == 0, result.output
    return run
