"""The one table of export formats: argument checks, export, validation, bench and docs read it."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from edgecls.errors import ConfigError, suggest


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str  # of the main artifact file
    precisions: tuple[str, ...]
    writer: str  # "module:function" taking an ExportRequest, returning an Artifact
    runtime: str  # what runs it
    extra: str  # pip extra that installs the exporter
    description: str

    def load_writer(self) -> Callable:
        module, function = self.writer.split(":")
        return getattr(importlib.import_module(module), function)


FORMATS: dict[str, Format] = {
    "tflite": Format("tflite", ".tflite", ("fp32", "fp16", "dynamic", "int8"), "edgecls.export.tflite:export_tflite",
                     "LiteRT (ai-edge-litert), XNNPACK", "train", "LiteRT flatbuffer; full-integer INT8 with uint8/int8/float I/O"),
    "edgetpu": Format("edgetpu", ".tflite", ("int8",), "edgecls.export.edgetpu:export_edgetpu",
                      "LiteRT + libedgetpu delegate", "train", "full-integer, batch 1, Coral op-compatibility report"),
    "onnx": Format("onnx", ".onnx", ("fp32", "int8"), "edgecls.export.onnx:export_onnx",
                   "ONNX Runtime", "export", "tf2onnx, dynamic batch; INT8 as QDQ with per-channel weights"),
    "openvino": Format("openvino", ".xml", ("fp32", "fp16", "int8"), "edgecls.export.openvino:export_openvino",
                       "OpenVINO", "export", "OpenVINO IR; INT8 through NNCF post-training quantization"),
}
QUANTIZED = ("int8", "dynamic")  # precisions validated by agreement and accuracy drop rather than tolerance


def resolve_targets(target: str) -> list[Format]:
    if target == "all":
        return list(FORMATS.values())
    if target not in FORMATS:
        raise ConfigError(f"unknown target '{target}'.{suggest(target, [*FORMATS, 'all'])}", f"Use one of {', '.join(FORMATS)} or all")
    return [FORMATS[target]]


def check_precision(fmt: Format, precision: str) -> None:
    if precision not in fmt.precisions:
        raise ConfigError(
            f"target {fmt.name} cannot export precision {precision}",
            f"{fmt.name} takes {', '.join(fmt.precisions)}",
        )
