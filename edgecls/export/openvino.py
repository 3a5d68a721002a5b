"""OpenVINO IR export: fp32, fp16 (weights compressed) and int8 (NNCF post-training quantization).

The Keras model is traced to a tf.function and converted by OpenVINO's TensorFlow frontend
(no ONNX detour). Input "pixels" float32 (batch, h, w, 3) 0..255, output "probabilities"; the batch
is static 1 by default (`batch` option; 0 keeps it dynamic), fixed after quantization: NNCF calibrates one image at a time.
The rt_info metadata (Model API's model_info, edgecls_meta) is written by export's post-processing through
edgecls.metadata.write_openvino_metadata.

INT8 keeps the converted float model in `request.cache` (the sensitivity report's float reference;
fallback retries start from it, with `request.float_nodes` as NNCF's ignored scope: op friendly names).

OpenVINO's CPU plugin runs f32 IRs in bf16 on CPUs with AMX / AVX512-BF16 unless compiled with
INFERENCE_PRECISION_HINT=f32; compare against Keras with that hint.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, ExportError
from edgecls.export.base import INPUT_NAME, OUTPUT_NAME, Artifact, ExportRequest, input_size
from edgecls.export.formats import DYNAMIC_BATCH, FORMATS, check_request
from edgecls.export.serving import serving_function
from edgecls.metadata.openvino import static_batch
from edgecls.openvino_import import import_nncf, import_openvino, telemetry_declined
from edgecls.quantize.calibration import check_calibration, check_pixels

FLOAT_MODEL = "openvino_float"  # request.cache key: (converted float ov.Model, converter notes)
BF16_NOTE = (
    "OpenVINO CPU runs f32 IRs in bf16 on CPUs with AMX/AVX512-BF16 unless INFERENCE_PRECISION_HINT is f32"
)
# NNCF log lines worth keeping in the notes (accuracy control); the rest is per-step chatter.
_KEEP_LOG = (
    "Metric of", "Accuracy drop:", "Total number of quantized", "Algorithm completed",
    "The algorithm could not", "All layers have been checked", "Maximum number",
)


def export_openvino(request: ExportRequest) -> Artifact:
    """Write out_dir/<stem>.xml + .bin at request.precision ("fp32", "fp16" or "int8")."""
    check_request(FORMATS["openvino"], request)
    size = input_size(request)
    int8 = request.precision == "int8"
    calibration = check_calibration(request.calibration, size, "openvino") if int8 else None
    holdout = check_holdout(request, size, calibration) if calibration is not None and request.max_drop is not None else None
    ov = import_openvino("export")

    start = time.perf_counter()
    cache = request.cache if request.cache is not None and int8 else {}
    if FLOAT_MODEL not in cache:
        cache[FLOAT_MODEL] = convert(request.model, size)
    model, converted = cache[FLOAT_MODEL]
    notes: dict[str, Any] = dict(converted)
    if calibration is not None:
        model, quant_notes = quantize_int8(model, calibration, holdout, request.max_drop or 0.0, request.float_nodes)
        notes.update(quant_notes)
    if request.batch not in (None, DYNAMIC_BATCH):  # static batch 1 by default (formats.OPTIONS["batch"]); 0 keeps it dynamic
        model = static_batch(model, request.batch)
        notes["batch"] = request.batch

    xml = Path(request.out_dir) / f"{request.stem}.xml"
    # fp16 stores weights as f16 (decompressed at load); int8 weights are already i8 constants.
    ov.save_model(model, str(xml), compress_to_fp16=request.precision == "fp16")
    notes["export_seconds"] = round(time.perf_counter() - start, 2)
    return Artifact(path=xml, format="openvino", precision=request.precision, extra_files=[xml.with_suffix(".bin")], notes=notes)


@telemetry_declined()  # the converter re-starts OpenVINO's telemetry (edgecls/openvino_import.py)
def convert(keras_model: Any, size: tuple[int, int]) -> tuple[Any, dict[str, Any]]:
    """The float ov.Model of the traced Keras model, and the converter notes."""
    ov = import_openvino("export")
    try:
        model = ov.convert_model(serving_function(keras_model, size))
    except Exception as exc:  # the frontend raises OpConversionFailure / RuntimeError / GeneralFailure
        raise ExportError(f"OpenVINO could not convert the model: {type(exc).__name__}: {exc}", "Report the architecture") from exc
    names = ([p.get_any_name() for p in model.inputs], [sorted(p.get_names()) for p in model.outputs])
    if names != ([INPUT_NAME], [[OUTPUT_NAME]]):
        raise ExportError(f"OpenVINO produced inputs/outputs {names}, expected ['{INPUT_NAME}'] -> ['{OUTPUT_NAME}']", "Report this")
    return model, {
        "converter": f"openvino {ov.get_version()} convert_model(tf.function) via the TensorFlow frontend",
        "batch": "dynamic",
        "cpu_precision": BF16_NOTE,
    }


def check_holdout(request: ExportRequest, size: tuple[int, int], calibration: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate (images, labels) for accuracy control; they must not repeat calibration images."""
    max_drop = float(request.max_drop or 0.0)
    if not 0.0 <= max_drop < 1.0:
        raise ConfigError(f"max_drop {max_drop} is outside [0, 1); it is an absolute top-1 drop", "Use e.g. --max-drop 0.01")
    if request.holdout is None:
        raise ConfigError(
            f"accuracy-controlled int8 (max_drop {max_drop}) needs labelled held-out images, none were given",
            "Export a run folder (its test split is the holdout), or drop --max-drop",
        )
    images, labels = request.holdout
    images = check_pixels(images, size, "holdout images")
    labels = np.asarray(labels)
    classes = request.meta.num_classes
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"holdout labels have shape {labels.shape} / dtype {labels.dtype}, expected ({len(images)},) integers",
                          "Pass one class index per image")
    if len(images) == 0 or labels.min() < 0 or labels.max() >= classes:
        raise ConfigError(f"holdout labels must be class indices in 0..{classes - 1} (got {len(images)} images)", "Check the label mapping")
    seen = {_digest(image) for image in calibration}
    overlap = sum(_digest(image) in seen for image in images)
    if overlap:
        raise ConfigError(f"{overlap} holdout images also appear in the calibration set", "Calibrate and validate on different images")
    return images, labels.astype(np.int64)


def _digest(image: np.ndarray) -> bytes:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes(), usedforsecurity=False).digest()


def _to_input(image: np.ndarray) -> np.ndarray:
    return image[None].astype(np.float32)


def top1(compiled: Any, items: Iterable[tuple[np.ndarray, int]]) -> float:
    """Top-1 accuracy of a compiled model over (uint8 image, label) items; NNCF's validation_fn."""
    hits = [int(np.argmax(compiled(_to_input(image))[0][0]) == int(label)) for image, label in items]
    return float(np.mean(hits)) if hits else 0.0


@contextlib.contextmanager
def _quiet_nncf(nncf_logger: logging.Logger) -> Iterator[list[str]]:
    """Hide NNCF's progress bars and INFO logs; collect the INFO lines that report accuracy."""
    kept: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage().splitlines()[0]  # "N out of M were reverted:" lists ops below
            wanted = message.startswith(_KEEP_LOG) or "were reverted back" in message
            if wanted and (not kept or kept[-1] != message):  # NNCF repeats some lines
                kept.append(message)

    handlers = [(h, h.level) for h in nncf_logger.handlers]
    level, keep = nncf_logger.level, Keep(logging.INFO)
    for handler, _ in handlers:
        handler.setLevel(max(handler.level, logging.WARNING))
    nncf_logger.setLevel(logging.INFO)
    nncf_logger.addHandler(keep)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # rich progress bars write to sys.stdout
            yield kept
    finally:
        nncf_logger.removeHandler(keep)
        nncf_logger.setLevel(level)
        for handler, old in handlers:
            handler.setLevel(old)


@telemetry_declined()  # so does NNCF
def quantize_int8(
    model: Any, calibration: np.ndarray, holdout: tuple[np.ndarray, np.ndarray] | None, max_drop: float,
    float_nodes: tuple[str, ...] | list[str] = (),
) -> tuple[Any, dict[str, Any]]:
    """NNCF PTQ (PERFORMANCE preset, full bias correction), with accuracy control when holdout is given; `float_nodes`
    (op friendly names) are NNCF's ignored scope. `model` itself is not changed."""
    nncf = import_nncf()
    nncf_logger = nncf.common.logging.nncf_logger
    ov = import_openvino("export")
    dataset = nncf.Dataset(calibration, _to_input)
    options = dict(
        subset_size=len(calibration),
        # PERFORMANCE (symmetric) matched or beat MIXED on Lite0 in our checks; activations are
        # mostly ReLU6 outputs. Full bias correction: structured-image top-1 agreement 0.84 -> 0.90
        # (64 px) and 0.76 -> 0.91 (224 px) over fast bias correction, for about 2x the time.
        preset=nncf.QuantizationPreset.PERFORMANCE,
        fast_bias_correction=False,
        model_type=None,
    )
    notes: dict[str, Any] = {
        "quantizer": f"nncf {nncf.__version__}",
        "preset": "performance",
        "bias_correction": "full",
        "subset_size": len(calibration),
    }
    if float_nodes:
        options["ignored_scope"] = nncf.IgnoredScope(names=list(float_nodes))
        notes["fallback_float_nodes"] = list(float_nodes)
    with _quiet_nncf(nncf_logger) as log:
        try:
            if holdout is None:
                quantized = nncf.quantize(model, dataset, **options)
                notes["nncf_mode"] = "quantize"
            else:
                items = list(zip(*holdout))
                quantized = nncf.quantize_with_accuracy_control(
                    model, dataset, nncf.Dataset(items, lambda item: _to_input(item[0])),
                    validation_fn=top1, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, **options,
                )
                notes["nncf_mode"] = "quantize_with_accuracy_control"
        except (nncf.ValidationError, nncf.InternalError, nncf.UnsupportedModelError, RuntimeError) as exc:
            raise ExportError(f"NNCF quantization failed: {type(exc).__name__}: {exc}",
                              "Check the calibration images or report the architecture") from exc
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    notes["fake_quantize_ops"] = fake_quantize
    if fake_quantize == 0:
        raise ExportError("NNCF inserted no FakeQuantize ops: the int8 model is not quantized", "Report the architecture")
    if holdout is not None:
        notes["nncf_log"] = log
        notes.update(_measure_drop(ov, model, quantized, holdout, max_drop))
    return quantized, notes


def _measure_drop(ov: Any, model: Any, quantized: Any, holdout: tuple[np.ndarray, np.ndarray], max_drop: float) -> dict[str, Any]:
    """Holdout top-1 of fp32 and int8 (f32 hint), as NNCF measures; fail if the drop exceeds max_drop."""
    core, items = ov.Core(), list(zip(*holdout))
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    fp32 = top1(core.compile_model(model, "CPU", config), items)
    int8 = top1(core.compile_model(quantized, "CPU", config), items)
    drop = round(fp32 - int8, 4)
    if drop > max_drop:
        raise ExportError(
            f"int8 OpenVINO top-1 on {len(items)} holdout images dropped {drop:.3f} ({fp32:.3f} -> {int8:.3f}), "
            f"more than max_drop {max_drop}",
            "Raise --max-drop, add calibration images, or export fp16",
        )
    return {"holdout_images": len(items), "holdout_top1_fp32": fp32, "holdout_top1_int8": int8, "accuracy_drop": drop, "max_drop": max_drop}
