"""OpenVINO backend for IR files (.xml with its .bin) on CPU, GPU, NPU or AUTO. numpy + openvino only.

On CPUs with AMX or AVX512-BF16 the CPU plugin runs bf16 unless told otherwise, so an "fp32" artifact
gets INFERENCE_PRECISION_HINT=f32 by default; `precision_ran` reads back what was compiled.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, ModelError
from edgecls.meta import ModelMeta
from edgecls.postprocess import dequantize, to_probabilities
from edgecls.runtime.common import BackendRunError, BaseBackend, one_line

DEVICES = ("CPU", "GPU", "NPU", "AUTO")
PRECISION_HINTS = ("auto", "f32", "bf16", "f16")
OPTIONS = ("precision_hint", "config", "batch")
_COMPUTE_LAYERS = {"Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution"}
_INT_PRECISIONS = {"i8", "u8"}
_SHORT_PATH_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))  # what BaseBackend.run would hand _invoke unconverted


def _import_openvino() -> Any:
    from edgecls.openvino_import import import_openvino

    return import_openvino("intel")


def _device(device: str) -> str:
    name = device.upper()
    if name.split(".")[0].split(":")[0] not in DEVICES:
        raise ConfigError(f"device '{device}' is not an OpenVINO device", f"Use one of: {', '.join(d.lower() for d in DEVICES)}")
    return name


def _hint(precision_hint: str | None, device: str) -> str | None:
    """The INFERENCE_PRECISION_HINT to set, or None to leave the plugin's default."""
    if precision_hint is None:
        return "f32" if device == "CPU" else None  # "fp32" means fp32, also for the float parts of int8 models
    hint = precision_hint.lower()
    if hint not in PRECISION_HINTS:
        raise ConfigError(f"precision_hint '{precision_hint}' is not one of {', '.join(PRECISION_HINTS)}", "Use f32 for exact fp32 results")
    return None if hint == "auto" else hint


def _runtime_precisions(compiled: Any) -> set[str] | None:
    """Precisions the compiled graph's compute layers run in (CPU plugin), or None if not exposed."""
    try:
        found = set()
        for op in compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            if "layerType" in info and "runtimePrecision" in info and info["layerType"].astype(str) in _COMPUTE_LAYERS:
                found.add(info["runtimePrecision"].astype(str))
        return found or None
    except (RuntimeError, AttributeError, TypeError, KeyError):
        return None


def _describe_precision(model: Any, compiled: Any) -> str:
    """e.g. 'f32', 'bf16', 'f32 (fp16 weights)', 'int8 (f32 elsewhere)'."""
    try:
        hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    except (RuntimeError, AttributeError, TypeError):  # AUTO does not report it: name where it runs
        try:
            hint = f"{'/'.join(compiled.get_property('EXECUTION_DEVICES'))} default precision"
        except (RuntimeError, TypeError):
            hint = "plugin default precision"
    ran = _runtime_precisions(compiled)
    ops = model.get_ops()
    if ran is not None:
        is_int8 = bool(ran & _INT_PRECISIONS)
    else:
        is_int8 = any(op.get_type_name() == "FakeQuantize" for op in ops)
    if is_int8:
        return f"int8 ({hint} elsewhere)"
    fp16_weights = any(op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "f16" for op in ops)
    return f"{hint} (fp16 weights)" if fp16_weights and hint == "f32" else hint


class OpenVinoBackend(BaseBackend):
    """A compiled OpenVINO model that maps raw RGB pixels to probabilities."""

    name = "openvino"

    def __init__(
        self,
        path: Path,
        meta: ModelMeta,
        device: str = "cpu",
        threads: int | None = None,
        precision_hint: str | None = None,
        config: dict[str, Any] | None = None,
        batch: int | None = 1,
    ) -> None:
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
            raise ConfigError(f"batch must be a positive integer or None; got {batch!r}", "Pass e.g. batch=1, or None for a dynamic batch")
        ov = _import_openvino()
        self.path = Path(path)
        self.meta = meta
        self.threads = threads
        self.device = _device(device)
        weights = self.path.with_suffix(".bin")
        if not weights.is_file():
            raise ModelError(f"'{weights}' is missing beside '{self.path}'", "An OpenVINO IR is two files: keep the .bin next to the .xml")
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except RuntimeError as exc:
            raise ModelError(
                f"'{self.path}' is not a readable OpenVINO IR ({one_line(exc)})",
                "The .xml or .bin may be truncated: export it again",
            ) from exc
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ModelError(
                f"'{self.path}' has {len(model.inputs)} inputs and {len(model.outputs)} outputs; a classifier has 1 and 1",
                "Export a single-input, single-output classifier",
            )
        shape = model.input(0).get_partial_shape()
        if shape.rank.is_dynamic or shape.rank.get_length() != 4:
            raise ModelError(f"'{self.path}' takes input {shape}", "A classifier takes (N, height, width, 3)")
        dims = [d.get_length() if d.is_static else None for d in shape]
        # A static batch compiles faster kernels (the camera runs batch 1); the NPU needs one. batch=None keeps it dynamic.
        static = batch or (1 if self.device.startswith("NPU") else None)
        if dims[0] is None and static:
            try:
                model.reshape({model.input(0): [static, *(d if d is not None else -1 for d in dims[1:])]})
            except RuntimeError as exc:
                raise ModelError(
                    f"OpenVINO cannot give '{self.path}' a static batch of {static} ({one_line(exc)})",
                    "Its shapes do not allow a fixed batch: export it again (in Python, load_backend(..., batch=None) keeps it dynamic)",
                ) from exc
            dims[0] = static
        self.input_hw = (dims[1], dims[2])
        self._static_batch = dims[0]
        out_shape = model.output(0).get_partial_shape()
        last = out_shape[out_shape.rank.get_length() - 1] if out_shape.rank.is_static and out_shape.rank.get_length() else None
        self.num_classes = last.get_length() if last is not None and last.is_static else None
        self._input_dtype = model.input(0).get_element_type().to_dtype()
        properties: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", **(config or {})}
        hint = _hint(precision_hint, self.device)
        if hint:
            properties["INFERENCE_PRECISION_HINT"] = hint
        if threads and self.device == "CPU":  # GPU/NPU plugins have no thread setting
            properties["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self._compiled = core.compile_model(model, self.device, properties)
        except RuntimeError as exc:
            available = core.available_devices
            if self.device.split(".")[0].split(":")[0] not in ("AUTO", *available):
                raise ConfigError(
                    f"OpenVINO device '{self.device}' is not available here (found {available})", "Use device='cpu' or install its driver"
                ) from exc
            raise ModelError(
                f"OpenVINO cannot compile '{self.path}' for {self.device} ({one_line(exc)})", "Try device='cpu' or export it again"
            ) from exc
        self._request = self._compiled.create_infer_request()
        self.precision_ran = _describe_precision(model, self._compiled)
        # A static shape gets one input buffer that the request reads in place (no per-call tensor, no copy by
        # infer()); uint8 pixels are converted straight into it (BaseBackend hands them over unconverted).
        self._input: np.ndarray | None = None
        if all(d is not None for d in dims):
            self._input = np.zeros([int(d) for d in dims], self._input_dtype)  # type: ignore[arg-type]
            self._request.set_input_tensor(ov.Tensor(self._input, shared_memory=True))
        self._keep_uint8 = True

    def run(self, batch: np.ndarray) -> np.ndarray:
        """BaseBackend.run. A uint8 or float32 array of exactly the compiled input shape (the camera's and the bench's
        one image) skips the generic checks, chunking and concatenation, with the same result: between two inferences
        each numpy call costs several times what it does in a warm loop (issue 12, bench/openvino_overhead.py)."""
        buffer = self._input
        if (buffer is None or self._closed or type(batch) is not np.ndarray or batch.shape != buffer.shape
                or batch.dtype not in _SHORT_PATH_DTYPES):
            return super().run(batch)
        try:
            scores = self._scores_of_buffer(buffer, batch)
        except self._run_errors as exc:
            raise BackendRunError(self.path, self.name, self._describe_error(exc)) from exc
        if scores.shape != (len(batch), self.meta.num_classes):
            return super().run(batch)  # not reached after load_backend's class-count check; BaseBackend names the error
        return scores

    def _scores_of_buffer(self, buffer: np.ndarray, chunk: np.ndarray) -> np.ndarray:
        """Infer one chunk of the static shape through the shared input buffer."""
        np.copyto(buffer, chunk, casting="unsafe")  # uint8 or float pixels into the model's dtype, one pass
        self._request.infer()
        raw = np.array(self._request.get_output_tensor(0).data, dtype=np.float32).reshape(len(chunk), -1)  # a copy: the
        # request reuses its output memory at the next call
        return self._probabilities(raw)

    def _probabilities(self, raw: np.ndarray) -> np.ndarray:
        return to_probabilities(dequantize(raw, None), self.meta.output).astype(np.float32, copy=False)

    def _invoke(self, chunk: np.ndarray) -> np.ndarray:
        buffer = self._input
        if buffer is not None and chunk.shape == buffer.shape:
            return self._scores_of_buffer(buffer, chunk)
        # a dynamic batch: a tensor per call, shared rather than copied by OpenVINO
        result = self._request.infer({0: np.ascontiguousarray(chunk, dtype=self._input_dtype)}, share_inputs=True)
        return self._probabilities(np.array(result[0], dtype=np.float32).reshape(len(chunk), -1))

    def _release(self) -> None:
        self._request = None
        self._compiled = None
