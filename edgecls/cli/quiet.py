"""Silence the frameworks' start-up noise unless `--verbose`: logging only, never numerics.

TensorFlow, absl and glog are quietened through their environment variables and Python loggers. LiteRT's
"INFO: Created TensorFlow Lite XNNPACK delegate for CPU." has no such switch (TFLite's minimal logger writes
straight to file descriptor 2), so native writes to descriptor 2 pass through a filter thread that drops the
known noise lines and forwards everything else. Python's own `sys.stderr` (rich, typer, warnings,
tracebacks, our `error:` lines) keeps writing to the real stderr, so terminals still get colours and
progress bars. TF_ENABLE_ONEDNN_OPTS is left alone: turning oneDNN off would change the numbers.
"""
from __future__ import annotations

import importlib.util
import io
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable

QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "2"}  # a value the user exported wins
VERBOSE_ENV = {"TF_CPP_MIN_LOG_LEVEL": "0", "GLOG_minloglevel": "0"}  # --verbose wins over the environment
PYTHON_LOGGERS = ("tensorflow", "keras", "h5py", "tf2onnx")
NOISE = re.compile(
    rb"^(INFO: Created TensorFlow Lite XNNPACK delegate"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [\w.-]+:\d+\] "  # absl/glog INFO and WARNING lines
    rb"|.*oneDNN custom operations are on"
    rb"|.*This TensorFlow binary is optimized to use available CPU instructions"
    rb"|To enable the following instructions: .*rebuild TensorFlow)"
)
_DRAIN_SECONDS = 2.0


def configure(verbose: bool) -> Callable[[], None]:
    """Set up logging for one CLI run; returns the function that undoes the stderr redirection."""
    if verbose:
        os.environ.update(VERBOSE_ENV)
        return lambda: None
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in PYTHON_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # matplotlib, when long class names leave a plot no room: the PNG is still written, only less tidy
    warnings.filterwarnings("ignore", message="Tight layout not applied", category=UserWarning)
    if importlib.util.find_spec("absl") is not None:  # TensorFlow's dependency: absent on a TF-free device
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    return filter_native_stderr()


def filter_native_stderr() -> Callable[[], None]:
    """Route file descriptor 2 through a thread that drops NOISE lines; returns the function that restores it."""
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError, AttributeError):
        return lambda: None  # no usable stderr (a daemon with fd 2 closed): nothing to filter
    read_end, write_end = os.pipe()
    python_stderr = sys.stderr
    try:
        sys.stderr = io.TextIOWrapper(
            io.FileIO(os.dup(real), "w"), encoding=getattr(python_stderr, "encoding", None) or "utf-8",
            errors="backslashreplace", line_buffering=True, write_through=True,
        )
        os.dup2(write_end, 2)
    finally:
        os.close(write_end)
    thread = threading.Thread(target=_forward, args=(read_end, real), name="edgecls-stderr-filter", daemon=True)
    thread.start()

    def restore() -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        ours, sys.stderr = sys.stderr, python_stderr
        os.dup2(real, 2)  # closes our write end: the thread sees end-of-file once child processes let go too
        thread.join(_DRAIN_SECONDS)
        ours.close()
        if not thread.is_alive():
            os.close(real)

    return restore


def _forward(read_end: int, real: int) -> None:
    pending = b""
    with open(read_end, "rb", buffering=0, closefd=True) as pipe:
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            _write(real, b"".join(line + b"\n" for line in lines if not NOISE.match(line)))
    if pending and not NOISE.match(pending):
        _write(real, pending)


def _write(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data):]
        except OSError:
            return  # the reader went away: nothing to forward to
