"""The typer application and the entry point that turns EdgeclsError into one clean line."""
from __future__ import annotations

import os
import sys

import typer

from edgecls.errors import EdgeclsError

app = typer.Typer(
    name="edgecls",
    help="Edge deployment toolkit for image classification: data, train, eval, predict, export, camera, bench.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from edgecls.cli import bench, camera, data, deploy, doctor, evaluate, export, models, predict, train

    app.add_typer(data.app, name="data")
    for module in (train, evaluate, predict, export, deploy, camera, bench, models, doctor):
        module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for stream in (sys.stdout, sys.stderr):
        # File names need not be valid UTF-8 (nor labels encodable on every console): never crash printing them.
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    _register()
    try:
        # Non-standalone typer returns the exit code of Exit (130 for Ctrl-C) instead of exiting.
        code = app(args=args, standalone_mode=False)
        if isinstance(code, int) and code:
            if code == 130:
                print("error: interrupted", file=sys.stderr)
            sys.exit(code)
    except EdgeclsError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Abort:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        # click's usage errors (typer vendors click in newer releases): show them as click would
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise
