"""LiteRT backend for .tflite files: ai-edge-litert, else tflite-runtime, else TensorFlow Lite.

Runs on the CPU (XNNPACK) or, for `*_edgetpu.tflite` files and device="coral", on a Coral Edge TPU
through the libedgetpu delegate. numpy only at import time; TensorFlow is the last fallback and is
imported inside `interpreter_api` only when neither runtime package is installed.
"""
from __future__ import annotations

import ctypes
import importlib
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, MissingDependencyError, ModelError
from edgecls.meta import ModelMeta, Quantization
from edgecls.postprocess import dequantize, quantize, to_probabilities
from edgecls.runtime.common import BaseBackend, EdgeTPUError

EDGETPU_SUFFIX = "_edgetpu.tflite"
EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
EDGETPU_DOCS = "https://coral.ai/docs/accelerator/get-started"
DEVICES = ("cpu", "coral")
DEVICE_ALIASES = {"edgetpu": "coral", "tpu": "coral"}
OPTIONS = ("edgetpu_device",)
# Ops whose operand dtypes say what precision the arithmetic ran in.
_COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL", "CONV_3D"}
_IO_OPS = {"QUANTIZE", "DEQUANTIZE"}


def interpreter_api() -> tuple[str, Any, Callable[..., Any]]:
    """(backend name, Interpreter class, load_delegate) from the lightest runtime installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate

        return "litert", Interpreter, load_delegate
    except ImportError as exc:
        first_error = exc
    try:
        from tflite_runtime.interpreter import Interpreter, load_delegate

        return "tflite-runtime", Interpreter, load_delegate
    except ImportError:
        pass
    try:  # last resort, and the only TensorFlow import under runtime/ (never reached when ai-edge-litert exists)
        tf = importlib.import_module("tensorflow")
        return "tensorflow-lite", tf.lite.Interpreter, tf.lite.experimental.load_delegate
    except ImportError:
        raise MissingDependencyError("ai_edge_litert", "pi") from first_error




def edgetpu_library() -> str:
    return EDGETPU_LIBRARY.get(platform.system(), "libedgetpu.so.1")


def _load_edgetpu(load_delegate: Callable[..., Any], device: str | None) -> Any:
    library = edgetpu_library()
    try:
        # Probe first: a failed load_delegate() also prints a stray traceback from Delegate.__del__.
        ctypes.CDLL(library)
    except OSError as exc:
        raise EdgeTPUError(
            f"the Edge TPU runtime library '{library}' cannot be loaded ({exc})",
            f"Install it (see {EDGETPU_DOCS}): sudo apt-get install libedgetpu1-std, then replug the Coral device",
        ) from exc
    try:
        return load_delegate(library, {"device": device} if device else {})
    except (ValueError, OSError, RuntimeError) as exc:
        where = f" at '{device}'" if device else ""
        raise EdgeTPUError(
            f"'{library}' is installed but no Edge TPU answered{where} ({str(exc).strip().splitlines()[-1]})",
            "Plug the Coral in (lsusb should list 18d1:9302 or 1a6e:089a), add your user to the plugdev group, "
            "or pass edgetpu_device='usb:0' / 'pci:0'",
        ) from exc


def _quantization(detail: dict[str, Any]) -> Quantization | None:
    """The affine params of an integer tensor; None for float tensors."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind not in "iu":
        return None
    scale, zero_point = detail["quantization"]
    if scale == 0:  # integer tensor without quantization params: raw values
        return Quantization(1.0, 0, dtype.name)
    return Quantization(float(scale), int(zero_point), dtype.name)


def _describe_precision(interpreter: Any, input_dtype: np.dtype, output_dtype: np.dtype) -> str:
    """What the arithmetic ran in, read from the tensors the compute ops consume."""
    dtypes = {d["index"]: np.dtype(d["dtype"]) for d in interpreter.get_tensor_details()}
    ops: list[dict[str, Any]] = getattr(interpreter, "_get_ops_details", lambda: [])()
    io = input_dtype.name if input_dtype == output_dtype else f"{input_dtype.name} in, {output_dtype.name} out"
    on_tpu = {op["index"] for op in ops if "edgetpu" in str(op["op_name"]).lower()}
    if on_tpu:
        on_cpu = [op for op in ops if op["index"] not in on_tpu and op["op_name"] not in _IO_OPS]
        cpu = f", {len(on_cpu)} ops on the CPU" if on_cpu else ""
        return f"int8 (Edge TPU{cpu}; {io} I/O)"
    compute = [op for op in ops if op["op_name"] in _COMPUTE_OPS]
    if not compute:  # this runtime exposes no op details: say only what the tensor dtypes show
        if input_dtype.kind in "iu":
            return f"int8 ({io} I/O)"
        return "int8 tensors (float I/O)" if np.dtype(np.int8) in dtypes.values() else "fp32"
    activations = {dtypes[op["inputs"][0]] for op in compute if op["inputs"][0] >= 0}
    weights = {dtypes[op["inputs"][1]] for op in compute if len(op["inputs"]) > 1 and op["inputs"][1] >= 0}
    if np.dtype(np.int16) in activations:
        return f"int16x8 ({io} I/O)"
    if activations and all(d.kind in "iu" for d in activations):
        return "int8" if io == "int8" else f"int8 ({io} I/O)"
    float_compute = [op for op in compute if op["inputs"][0] >= 0 and dtypes[op["inputs"][0]].kind == "f"]
    if float_compute and any(d.kind in "iu" for d in activations):  # int8 compute with float layers kept (an INT8 fallback)
        return f"int8+float ({len(float_compute)} of {len(compute)} compute ops float; {io} I/O)"
    if np.dtype(np.float16) in dtypes.values():
        return "fp16 weights (fp32 compute)"
    if np.dtype(np.int8) in weights:
        return "fp32 (int8 weights, dynamic range)"
    return "fp32"


class LiteRTBackend(BaseBackend):
    """A .tflite interpreter that maps raw RGB pixels to probabilities."""

    def __init__(
        self, path: Path, meta: ModelMeta, device: str = "cpu", threads: int | None = None, edgetpu_device: str | None = None
    ) -> None:
        device = DEVICE_ALIASES.get(device.lower(), device.lower())
        if device not in DEVICES:
            raise ConfigError(f"device '{device}' is not one the .tflite runtime supports", f"Use one of: {', '.join(DEVICES)}")
        self.path = Path(path)
        self.meta = meta
        self.threads = threads
        self.name, interpreter_cls, load_delegate = interpreter_api()
        self.device = "coral" if device == "coral" or self.path.name.endswith(EDGETPU_SUFFIX) else "cpu"
        self._delegates = [_load_edgetpu(load_delegate, edgetpu_device)] if self.device == "coral" else []
        try:
            self._interpreter = interpreter_cls(
                model_path=str(self.path), num_threads=threads, experimental_delegates=self._delegates or None
            )
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"'{self.path}' is not a loadable .tflite model ({detail})",
                "The file may be truncated or not a TFLite flatbuffer: export it again",
            ) from exc
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"'{self.path}' has {len(inputs)} inputs and {len(outputs)} outputs; a classifier has 1 and 1",
                "Export a single-input, single-output classifier",
            )
        self._input, self._output = inputs[0], outputs[0]
        self.input_quantization = _quantization(self._input)
        self.output_quantization = _quantization(self._output)
        # uint8 pixels can go in unconverted when the input is uint8 with scale 1 and zero point 0 (Coral default)
        quant = self.input_quantization
        self._keep_uint8 = quant is not None and quant.dtype == "uint8" and quant.scale == 1.0 and quant.zero_point == 0
        shape = [int(d) for d in self._input["shape"]]
        signature = [int(d) for d in self._input.get("shape_signature", shape)]
        if len(shape) != 4:
            raise ModelError(f"'{self.path}' takes a {len(shape)}-D input {shape}", "A classifier takes (N, height, width, 3)")
        self.input_hw = (None if signature[1] == -1 else shape[1], None if signature[2] == -1 else shape[2])
        self.num_classes = int(self._output["shape"][-1])
        # A static batch (1 for the Edge TPU) runs in chunks; a dynamic one in a single call.
        self._static_batch = None if signature[0] == -1 else max(shape[0], 1)
        self._resizable = -1 in signature
        self._allocated = tuple(shape)
        self.precision_ran = _describe_precision(
            self._interpreter, np.dtype(self._input["dtype"]), np.dtype(self._output["dtype"])
        )

    def _invoke(self, chunk: np.ndarray) -> np.ndarray:
        if self._resizable and chunk.shape != self._allocated:
            self._interpreter.resize_tensor_input(self._input["index"], list(chunk.shape))
            self._interpreter.allocate_tensors()
            self._allocated = chunk.shape
        if chunk.dtype == np.uint8:
            pass  # raw pixels straight into a uint8 input with scale 1, zero point 0: nothing to convert
        elif self.input_quantization is not None:
            chunk = quantize(chunk, self.input_quantization)
        else:
            chunk = chunk.astype(self._input["dtype"], copy=False)
        self._interpreter.set_tensor(self._input["index"], chunk)
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._output["index"]).reshape(len(chunk), -1)
        return to_probabilities(dequantize(raw, self.output_quantization), self.meta.output).astype(np.float32, copy=False)

    def _release(self) -> None:
        self._interpreter = None  # the interpreter must go before its delegates
        self._delegates = []
