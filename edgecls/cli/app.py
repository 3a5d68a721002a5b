"""The typer application and its entry point.

The entry point turns an EdgeclsError into one clean line, Ctrl-C into exit 130 and SIGTERM into exit 143
(both unwind the stack, so every `finally` clean-up runs: temp files never outlive a signal), and silences
the frameworks' start-up noise unless `--verbose`. `--debug` and `--verbose` are global: accepted anywhere.
"""
from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

import typer

from edgecls import __version__
from edgecls.errors import EdgeclsError, Terminated

GLOBAL_FLAGS = ("--debug", "--verbose")
INTERRUPTED, TERMINATED = 130, 143

app = typer.Typer(
    name="edgecls",
    help="Edge deployment toolkit for image classification: data, train, eval, predict, export, camera, bench.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: "[default: 10]" and "mqtt[s]://" print as written
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
)
_terminated = threading.Event()


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"edgecls {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", help="Show TensorFlow's and LiteRT's own log lines (hidden by default)."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error instead of one line."),
) -> None:
    # --verbose and --debug are taken out of the arguments by main() wherever they stand; declared here for --help.
    del version, verbose, debug


def _register() -> None:
    if app.registered_commands:
        return  # main() may run more than once in one process (tests)
    from edgecls.cli import bench, camera, data, deploy, doctor, evaluate, export, models, predict, serve, train, verify

    app.add_typer(data.app, name="data")
    for module in (train, evaluate, predict, export, deploy, camera, serve, bench, models, doctor, verify):
        module.register(app)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
    if _terminated.is_set():
        # A second SIGTERM never interrupts the clean-up that the first one started; a third one kills at once.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return
    _terminated.set()
    raise Terminated()


def _install_sigterm() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None
    _terminated.clear()
    return signal.signal(signal.SIGTERM, _on_sigterm)


def _stopped(code: int = INTERRUPTED) -> None:
    """Exit after Ctrl-C (130) or SIGTERM (143) with one line; the clean-ups have already run."""
    if _terminated.is_set() or code == TERMINATED:
        print("error: terminated", file=sys.stderr)
        sys.exit(TERMINATED)
    print("error: interrupted", file=sys.stderr)
    sys.exit(INTERRUPTED)


def _empty_argument(args: list[str]) -> str | None:
    """How to name the first empty argument ("--out", "--out=", "the argument after 'export'"), or None: no edgecls value
    may be empty."""
    for index, arg in enumerate(args):
        if arg == "":
            before = args[index - 1] if index else ""
            if before.startswith("--") and "=" not in before:
                return before
            return f"the argument after '{before}'" if before else "the first argument"
        if arg.startswith("--") and arg.endswith("=") and len(arg) > 3:
            return arg[:-1]
    return None


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from edgecls.cli import quiet

    args = sys.argv[1:] if argv is None else list(argv)
    debug, verbose = "--debug" in args, "--verbose" in args
    args = [a for a in args if a not in GLOBAL_FLAGS]
    empty = _empty_argument(args)
    if empty:  # typer turns "" into Path("."): `--out "$UNSET"` would write into the current folder
        print(f"error: {empty} is empty. Give it a value (an unset shell variable?)", file=sys.stderr)
        sys.exit(2)
    for stream in (sys.stdout, sys.stderr):
        # File names need not be valid UTF-8 (nor labels encodable on every console): never crash printing them.
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    restore_stderr = quiet.configure(verbose)
    previous_handler = _install_sigterm()  # until here a SIGTERM simply ends the process: nothing to clean up yet
    ended: list[int | str | None] = []  # the exit code of a command that ended (not of an unexpected exception)
    try:
        _run(args, debug)
        ended.append(0)
    except SystemExit as exc:
        ended.append(exc.code)
        raise
    finally:
        from edgecls.fsutil import remove_live_temps

        remove_live_temps()  # whatever a clean-up missed (a signal between a temp's creation and its `try`)
        restore_stderr()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        if ended and argv is None and "tensorflow" in sys.modules:
            _exit_now(ended[0])


def _exit_now(code: int | str | None) -> None:
    """End the process without the interpreter's finalization: with TensorFlow loaded, its final garbage collection of
    traced graphs takes 2-3 s on a calm machine and 10-22 s under load, after every file edgecls wrote is closed.
    The atexit handlers still run (logging's flush, autograph's removal of its generated files in the temp folder).
    Only for the console script (argv from sys.argv), never for an in-process call."""
    import atexit
    import os

    if isinstance(code, str):
        print(code, file=sys.stderr)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def _run(args: list[str], debug: bool) -> None:
    try:
        _register()
        # Non-standalone typer returns the exit code of Exit (130 for Ctrl-C) instead of exiting.
        code = app(args=args, standalone_mode=False)
        if isinstance(code, int) and code:
            if code in (INTERRUPTED, TERMINATED):
                _stopped(code)
            sys.exit(code)
    except (KeyboardInterrupt, typer.Abort):
        _stopped()
    except EdgeclsError as exc:
        if debug:
            raise
        if _terminated.is_set():
            _stopped()
        from edgecls.cli.common import printable

        print(f"error: {printable(str(exc))}", file=sys.stderr)  # one line, whatever a path in it holds
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        if _terminated.is_set() and not debug:
            _stopped()  # a library turned our Terminated into its own error: still a clean 143
        # click's usage errors (typer vendors click in newer releases): show them as click would
        code = getattr(exc, "exit_code", None)
        if hasattr(exc, "show") and isinstance(code, int):
            exc.show()
            sys.exit(code)
        raise
