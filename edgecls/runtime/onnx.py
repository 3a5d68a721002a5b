"""onnxruntime backend for .onnx files (float32 NHWC pixels in, one score tensor out). numpy + onnxruntime only."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, MissingDependencyError, ModelError
from edgecls.meta import ModelMeta
from edgecls.postprocess import dequantize, to_probabilities
from edgecls.runtime.common import BaseBackend, ort_detail

CPU = "CPUExecutionProvider"
# device -> providers to try, best first; CPU is always appended as the fallback for unsupported ops.
DEVICE_PROVIDERS = {
    "cpu": [],
    "cuda": ["CUDAExecutionProvider"],
    "gpu": ["CUDAExecutionProvider", "ROCMExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
    "openvino": ["OpenVINOExecutionProvider"],
    "coreml": ["CoreMLExecutionProvider"],
    "auto": None,  # every available provider, in onnxruntime's priority order
}
OPTIONS = ("providers",)
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}
# onnxruntime's load errors: pybind classes that share no base class but Exception.
_ORT_ERRORS = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoModel", "NoSuchFile", "NotFound",
               "NotImplemented", "RuntimeException", "EngineError", "EPFail", "ModelRequiresCompilation")


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        error = MissingDependencyError("onnxruntime", "export")
        error.hint = "Install it with: pip install onnxruntime (or pip install 'edgecls[export]')"
        raise error from exc
    return onnxruntime


def _load_errors(ort: Any) -> tuple[type[BaseException], ...]:
    state = getattr(getattr(ort, "capi", None), "onnxruntime_pybind11_state", None)
    found = tuple(getattr(state, name) for name in _ORT_ERRORS if isinstance(getattr(state, name, None), type))
    return (*found, RuntimeError, ValueError, OSError)


def _op_types(path: Path) -> set[str] | None:
    """Op types in the graph, with the `onnx` package when installed (None without it)."""
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(path), load_external_data=False)
    types = {node.op_type for node in model.graph.node}
    for function in model.functions:
        types.update(node.op_type for node in function.node)
    return types


def onnx_precision(path: Path, input_type: str) -> str:
    """'int8 (QDQ)', 'int8 (QOperator)', 'fp16' or 'fp32', from the graph's ops.

    Without `onnx` (a Pi), scan the file's bytes: op types are stored as plain strings in the protobuf.
    """
    ops = _op_types(path)
    if ops is None:
        data = path.read_bytes()
        ops = {name for name in (*_QDQ_OPS, *_QOPERATOR_OPS) if name.encode() in data}
    if ops.intersection(_QDQ_OPS):
        return "int8 (QDQ)"
    if ops.intersection(_QOPERATOR_OPS):
        return "int8 (QOperator)"
    return "fp16" if input_type == "tensor(float16)" else "fp32"


def _choose_providers(ort: Any, device: str, providers: list[str] | None) -> list[str]:
    available = ort.get_available_providers()
    if providers is not None:
        wanted = list(providers)
    elif device.lower() not in DEVICE_PROVIDERS:
        raise ConfigError(f"device '{device}' is not one onnxruntime supports here", f"Use one of: {', '.join(DEVICE_PROVIDERS)}")
    elif DEVICE_PROVIDERS[device.lower()] is None:
        return [p for p in available if p != "AzureExecutionProvider"]  # Azure runs remote endpoints, not local graphs
    else:
        candidates = DEVICE_PROVIDERS[device.lower()]
        wanted = [p for p in candidates if p in available][:1] if candidates else []
        if candidates and not wanted:
            raise ConfigError(
                f"device '{device}' needs one of {candidates}, but this onnxruntime offers {available}",
                "Install the matching onnxruntime build (e.g. onnxruntime-gpu) or use device='cpu'",
            )
    missing = [p for p in wanted if p not in available]
    if missing:
        raise ConfigError(f"onnxruntime provider(s) {missing} are not available (available: {available})", "Pick from the available ones")
    return wanted + ([CPU] if CPU not in wanted and CPU in available else [])


class OnnxBackend(BaseBackend):
    """An onnxruntime session that maps raw RGB pixels to probabilities."""

    name = "onnxruntime"

    def __init__(
        self, path: Path, meta: ModelMeta, device: str = "cpu", threads: int | None = None, providers: list[str] | None = None
    ) -> None:
        ort = _import_onnxruntime()
        self.path = Path(path)
        self.meta = meta
        self.threads = threads
        self.device = device
        wanted = _choose_providers(ort, device, providers)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default (one per physical core)
        options.log_severity_level = 4  # fatal only: a failing node is reported once, by BackendRunError, not logged too
        self._run_errors = _load_errors(ort)
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=wanted)
        except _load_errors(ort) as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise ModelError(
                f"'{self.path}' is not a loadable ONNX model ({lines[0] if lines else type(exc).__name__})",
                "The file may be truncated or use ops this onnxruntime lacks: export it again",
            ) from exc
        self.providers: list[str] = self._session.get_providers()
        if wanted and wanted[0] not in self.providers:
            raise ConfigError(
                f"onnxruntime could not start {wanted[0]} (it runs {self.providers})",
                "Check the provider's libraries (CUDA/cuDNN, OpenVINO) or use device='cpu'",
            )
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"'{self.path}' has {len(inputs)} inputs and {len(outputs)} outputs; a classifier has 1 and 1",
                "Export a single-input, single-output classifier",
            )
        self._input, self._output = inputs[0], outputs[0]
        if self._input.type not in _NUMPY_TYPES or len(self._input.shape) != 4:
            raise ModelError(
                f"'{self.path}' takes {self._input.type} {self._input.shape}",
                "edgecls feeds float (N, height, width, 3) pixels: export with an NHWC float input",
            )
        self._input_dtype = _NUMPY_TYPES[self._input.type]
        dims = [d if isinstance(d, int) and d > 0 else None for d in self._input.shape]
        self.input_hw = (dims[1], dims[2])
        self._static_batch = dims[0]
        last = self._output.shape[-1] if self._output.shape else None
        self.num_classes = last if isinstance(last, int) and last > 0 else None
        self._output_integer = self._output.type in ("tensor(uint8)", "tensor(int8)")
        if self._output_integer and meta.output_quantization is None:
            raise ModelError(f"'{self.path}' outputs {self._output.type} but meta.json has no output_quantization", "Export it again")
        self.output_quantization = meta.output_quantization if self._output_integer else None
        self.precision_ran = onnx_precision(self.path, self._input.type)

    def _invoke(self, chunk: np.ndarray) -> np.ndarray:
        if self._input_dtype == np.uint8:
            chunk = np.clip(np.round(chunk), 0, 255)
        (raw,) = self._session.run([self._output.name], {self._input.name: chunk.astype(self._input_dtype, copy=False)})
        raw = raw.reshape(len(chunk), -1)
        return to_probabilities(dequantize(raw, self.output_quantization), self.meta.output).astype(np.float32, copy=False)

    def _describe_error(self, exc: BaseException) -> str:
        return ort_detail(exc)

    def _release(self) -> None:
        self._session = None
