"""`edgecls doctor`: what this machine offers edgecls (Python, runtimes, devices)."""
from __future__ import annotations

import typer

from edgecls.cli.common import print_json, print_table


def doctor_command(as_json: bool = typer.Option(False, "--json", help="Print JSON only.")) -> None:
    """Python, installed frameworks and runtimes, and the devices TensorFlow sees."""
    from edgecls.doctor import diagnose

    report = diagnose()
    if as_json:
        print_json(report)
        return
    print_table("edgecls doctor", ["check", "result"], [(k, v) for k, v in report.items()])


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)
