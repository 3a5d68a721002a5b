"""The one table of export formats and their options: the plan, argument checks, writers, validation,
bench and docs read it. No TensorFlow, no writer imports (`Format.load_writer` imports one on demand).

A format lists the precisions it exports and the format-specific options it takes; `check_options`
is the only place that decides whether a requested option applies (like Ultralytics' export_formats()
and its argument validation), and `check_request` the only place a writer checks what it was given.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgecls.errors import ConfigError, suggest

if TYPE_CHECKING:
    from edgecls.export.base import ExportRequest

PRECISIONS = ("fp32", "fp16", "dynamic", "int8")
QUANTIZED = ("int8", "dynamic")  # precisions judged by the accuracy gate (agreement, accuracy drop) rather than a tolerance
IO_TYPES = ("uint8", "int8", "float")
DYNAMIC_BATCH = 0  # --batch 0: the OpenVINO IR keeps a dynamic batch


@dataclass(frozen=True)
class ExportDefaults:
    """Defaults of the options every export takes (the CLI and the API both read these)."""

    target: str = "tflite"
    calib_size: int = 300  # calibration images, at most
    holdout_size: int = 1000  # held-out images that judge each artifact (and, separately, tune the fallback), at most
    seed: int = 0
    # The accuracy gate of every quantized export, on held-out images that played no part in calibration or tuning.
    max_drop: float | None = 0.01  # accuracy points as a fraction (0.01 = 1 point); None: no accuracy-drop check
    min_agreement: float | None = 0.90  # top-1 agreement with the Keras model; None: no floor (the gate of unlabelled images)
    # INT8 fallback when the gate fails: the most sensitive layers stay float, added until the tuning split passes.
    fallback_layers: int = 8  # layers kept float, at most (0: no fallback)
    fallback_tries: int = 6  # re-quantized candidates, at most
    fallback_seconds: float = 600.0  # time for the whole search, at most
    sensitivity_images: int = 16  # calibration images the per-layer sensitivity report runs
    latency_runs: int = 20  # timed batch-1 runs of a fallback artifact (after warm-up)


DEFAULTS = ExportDefaults()


@dataclass(frozen=True)
class ExportOption:
    """A format-specific export option: API keyword / ExportRequest field `name`, CLI `flag`, its one default."""

    name: str
    flag: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    precisions: tuple[str, ...] = PRECISIONS  # the precisions it means something for
    example: str = ""  # a valid value for hints

    def check_value(self, value: Any) -> None:
        """ConfigError naming the flag and the value when `value` is not allowed (None: the default, always allowed)."""
        if value is None:
            return
        if self.choices and value not in self.choices:
            raise ConfigError(f"{self.flag} '{value}' is not one of {', '.join(self.choices)}.{suggest(str(value), self.choices)}",
                              f"Use {self.flag} {self.example or self.choices[0]}")
        if self.minimum is not None or self.maximum is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{self.flag} {value!r} is not a whole number", f"Use e.g. {self.flag} {self.example}")
            low = self.minimum if self.minimum is not None else value
            high = self.maximum if self.maximum is not None else value
            if not low <= value <= high:
                span = f"{self.minimum}..{self.maximum}" if self.maximum is not None else f"at least {self.minimum}"
                raise ConfigError(f"{self.flag} {value} is outside {span}", f"Use e.g. {self.flag} {self.example}")


OPTIONS: dict[str, ExportOption] = {
    "io_type": ExportOption(
        "io_type", "--io", "uint8", "Input/output type of a full-integer TFLite model: uint8 | int8 | float.",
        choices=IO_TYPES, precisions=("int8",), example="uint8",
    ),
    "opset": ExportOption("opset", "--opset", 17, "ONNX opset, 13..18 (13: per-channel QDQ; 18: newest tf2onnx emits).",
                          minimum=13, maximum=18, example="17"),
    # Batch 1 by default: benchmark_app, OpenVINO Model API and NPUs take the IR as is (no -shape); 0 keeps a dynamic batch.
    "batch": ExportOption("batch", "--batch", 1, "Static batch size of the OpenVINO IR (default 1; 0: a dynamic batch).",
                          minimum=0, example="1"),
    "allow_cpu_ops": ExportOption(
        "allow_cpu_ops", "--allow-cpu-ops", False,
        "Publish an Edge TPU model even when an unsupported op cuts the graph before most of its compute (the rest runs on the "
        "host CPU; the report lists those ops).", choices=(), precisions=("int8",), example="",
    ),
}


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str  # of the main artifact file
    precisions: tuple[str, ...]
    options: tuple[str, ...]  # keys of OPTIONS this format takes
    writer: str  # "module:function" taking an ExportRequest, returning an Artifact
    runtime: str  # what runs it
    extra: str  # pip extra that installs the exporter
    description: str
    fallback: str | None = None  # how an INT8 export keeps its most sensitive layers float; None: it cannot (full-integer only)
    in_all: bool = True  # part of --target all (False: only when named, e.g. imx500 needs its own 2.3 GB toolchain venv)

    @property
    def default_precision(self) -> str:
        return "fp32" if "fp32" in self.precisions else self.precisions[0]

    def takes(self, option: str, precision: str) -> bool:
        return option in self.options and precision in OPTIONS[option].precisions

    def load_writer(self) -> Callable:
        module, function = self.writer.split(":")
        return getattr(importlib.import_module(module), function)


FORMATS: dict[str, Format] = {
    "tflite": Format("tflite", ".tflite", ("fp32", "fp16", "dynamic", "int8"), ("io_type",), "edgecls.export.tflite:export_tflite",
                     "LiteRT (ai-edge-litert), XNNPACK", "train", "LiteRT flatbuffer; full-integer INT8 with uint8/int8/float I/O",
                     "denylisted nodes of the TFLite MLIR quantizer, as the QuantizationDebugger keeps layers float"),
    "edgetpu": Format("edgetpu", ".tflite", ("int8",), ("allow_cpu_ops",), "edgecls.export.edgetpu:export_edgetpu",
                      "LiteRT + libedgetpu delegate", "train", "full-integer, batch 1, uint8 I/O, Coral op-compatibility report"),
    "onnx": Format("onnx", ".onnx", ("fp32", "int8"), ("opset",), "edgecls.export.onnx:export_onnx",
                   "ONNX Runtime", "export", "tf2onnx, dynamic batch; INT8 as QDQ with per-channel weights",
                   "onnxruntime quantize_static(nodes_to_exclude=...)"),
    "openvino": Format("openvino", ".xml", ("fp32", "fp16", "int8"), ("batch",), "edgecls.export.openvino:export_openvino",
                       "OpenVINO", "export",
                       "OpenVINO IR (static batch 1; --batch N, or 0 for dynamic); INT8 through NNCF post-training quantization",
                       "nncf.quantize(ignored_scope=...) from the sensitivity ranking"),
    # Raspberry Pi AI Camera: Sony's toolchain in its own pinned venv (export/imx500_toolchain.py); validated on MCT's simulation.
    "imx500": Format("imx500", ".zip", ("int8",), (), "edgecls.export.imx500:export_imx500",
                     "the IMX500 sensor (Raspberry Pi AI Camera); validated here on MCT's simulation of its arithmetic", "train",
                     "packerOut.zip from MCT post-training quantization + imxconv-tf (Java 17), memory report; imx500-package on "
                     "the Pi makes network.rpk", in_all=False),
}

Plan = list[tuple[Format, str]]  # (format, precision) pairs, in FORMATS order


def resolve_targets(target: str) -> list[Format]:
    if target == "all":
        return [fmt for fmt in FORMATS.values() if fmt.in_all]
    if target not in FORMATS:
        raise ConfigError(f"unknown target '{target}'.{suggest(target, [*FORMATS, 'all'])}", f"Use one of {', '.join(FORMATS)} or all")
    return [FORMATS[target]]


def check_precision(fmt: Format, precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'.{suggest(precision, PRECISIONS)}", f"Use one of {', '.join(PRECISIONS)}")
    if precision not in fmt.precisions:
        raise ConfigError(f"target {fmt.name} cannot export precision {precision}", f"{fmt.name} takes {', '.join(fmt.precisions)}")


def plan_exports(target: str, precision: str | None) -> Plan:
    """(format, precision) pairs. `all` skips what a format cannot take (without a precision: fp32, so
    no edgetpu); a named target refuses it, so `--fp16 --target edgetpu` is an error, not an INT8 export."""
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'.{suggest(precision, PRECISIONS)}", f"Use one of {', '.join(PRECISIONS)}")
    plan = []
    for fmt in resolve_targets(target):
        if target == "all":
            chosen = precision or "fp32"
            if chosen not in fmt.precisions:
                continue
        else:
            chosen = precision or fmt.default_precision
            check_precision(fmt, chosen)
        plan.append((fmt, chosen))
    return plan


def check_options(plan: Sequence[tuple[Format, str]], given: Mapping[str, Any]) -> None:
    """Refuse an option no export of the plan takes, or a value the option does not allow (None = not given)."""
    for name, value in given.items():
        if value is None:
            continue
        option = OPTIONS.get(name)
        if option is None:
            raise ConfigError(f"unknown export option '{name}'.{suggest(name, OPTIONS)}", f"Options: {', '.join(OPTIONS)}")
        option.check_value(value)
        if any(fmt.takes(name, precision) for fmt, precision in plan):
            continue
        takers = [fmt.name for fmt in FORMATS.values() if name in fmt.options]
        scope = "" if option.precisions == PRECISIONS else f" {'/'.join(option.precisions)}"
        planned = ", ".join(f"{fmt.name} {precision}" for fmt, precision in plan)
        flag = "" if option.precisions == PRECISIONS else f" --precision {option.precisions[0]}"
        shown = option.flag if isinstance(value, bool) else f"{option.flag} {value}"
        raise ConfigError(f"{shown} only applies to {' and '.join(takers)}{scope} exports, not {planned}",
                          f"Drop {option.flag}, or export --target {takers[0]}{flag}")


def check_request(fmt: Format, request: ExportRequest) -> None:
    """What a writer checks first: the precision is one `fmt` exports, every option value is allowed, and layers
    are kept float only where the format can (never for edgetpu: a mixed model is no Edge TPU model)."""
    check_precision(fmt, request.precision)
    for name in fmt.options:
        OPTIONS[name].check_value(getattr(request, name))
    if request.float_nodes and (fmt.fallback is None or request.precision != "int8"):
        raise ConfigError(f"{fmt.name} {request.precision} cannot keep layers in float ({len(request.float_nodes)} requested)",
                          "Only int8 tflite, onnx and openvino exports fall back to float layers")


def check_gate(max_drop: float | None, min_agreement: float | None) -> None:
    """The accuracy gate's thresholds: fractions in [0, 1) and [0, 1] (None: that check is off)."""
    if max_drop is not None and not 0 <= max_drop < 1:
        raise ConfigError(f"--max-drop {max_drop} is outside [0, 1)", "Give a fraction: --max-drop 0.01 is one accuracy point, "
                                                                      "--max-drop none turns the check off")
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise ConfigError(f"--min-agreement {min_agreement} is outside [0, 1]",
                          "Give a fraction: --min-agreement 0.9 means 90% of top-1 predictions agree with Keras")


def check_fallback_budget(layers: int, tries: int, seconds: float) -> None:
    """The fallback search's budget: whole numbers of layers and tries, seconds; 0 turns the fallback off."""
    for flag, value, example in (("--fallback-layers", layers, DEFAULTS.fallback_layers),
                                 ("--fallback-tries", tries, DEFAULTS.fallback_tries),
                                 ("--fallback-seconds", seconds, int(DEFAULTS.fallback_seconds))):
        whole = flag != "--fallback-seconds"
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or not 0 <= value < math.inf:
            raise ConfigError(f"{flag} {value!r} must be a finite {'whole ' if whole else ''}number of at least 0",
                              f"Use e.g. {flag} {example} (0 turns the fallback off)")
