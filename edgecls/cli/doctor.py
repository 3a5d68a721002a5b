"""`edgecls doctor`: what this machine offers edgecls, one row per check with ok/warn and the fix."""
from __future__ import annotations

import typer

from edgecls.cli.common import console, print_json

STYLES = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "info": "[dim]info[/dim]"}


def doctor_command(
    device: str | None = typer.Option(None, "--device",
                                      help="Also check against a device profile (pi5, coral-usb-pi, intel-cpu, ... or a .toml path)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when a check warns."),
    no_tf: bool = typer.Option(False, "--no-tf", help="Do not import TensorFlow to list its devices (faster)."),
    rpk: str | None = typer.Option(None, "--rpk", help="The AI Camera's network.rpk to check [default with --device pi-ai-camera: "
                                                        "PREFIX/rpk/network.rpk of this install, else /opt/edgecls/rpk/network.rpk]."),
) -> None:
    """Python, runtimes, Edge TPU library and USB speed, cameras, the AI Camera's firmware and network, CPU governor, throttling
    and GPUs."""
    from edgecls.doctor import diagnose

    report = diagnose(list_devices=not no_tf, profile=device, rpk=rpk)
    if as_json:
        print_json(report)
    else:
        from rich.markup import escape
        from rich.table import Table

        title = "edgecls doctor" + (f" (profile {report['profile']})" if report["profile"] else "")
        table = Table(title=title, title_justify="left")
        for name in ("check", "status", "value", "fix"):
            table.add_column(name, overflow="fold")
        for row in report["checks"]:
            table.add_row(row["check"], STYLES.get(row["status"], row["status"]), escape(row["value"]), escape(row["fix"]))
        console.print(table)
        console.print(f"{report['warnings']} warning(s)" if report["warnings"] else "all checks ok")
    if strict and report["warnings"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)
