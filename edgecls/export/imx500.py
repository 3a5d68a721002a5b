"""IMX500 writer (Raspberry Pi AI Camera: the network runs on the Sony IMX500 image sensor) and its simulated validation.

The run's network moves into the pinned toolchain venv (imx500_toolchain.py) as data, never as a pickle or a
Lambda layer: its Keras 3 `.weights.h5`, a JSON spec (backbone name, input size, width, classes, mean/std) and
`.npz` arrays. imx500_worker.py rebuilds the architecture by name there, checks the float rebuild against this
model's probabilities, quantizes it with Model Compression Toolkit on the run's calibration images, exports it
(`mct.exporter.keras_export_model`) and converts it with `imxconv-tf`. Published beside `packerOut.zip`
(what `imx500-package` on the Pi turns into `network.rpk`): the converter's memory report, `labels.txt`, and the
MCT-quantized model, whose simulation of the IMX500 arithmetic is what validation runs on the held-out images.
A network that does not fit the sensor's memory is refused with the converter's own numbers.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, ExportError
from edgecls.export.base import Artifact, ExportRequest, input_size

FORMAT = "imx500"
PACKER = "packerOut.zip"
QUANTIZED_MODEL = "mct_quantized.keras"  # MCT's export: what the converter read and what validation simulates
MEMORY_REPORT = "memory_report.json"  # the converter's memory usage report, under a fixed name
CONVERTER_LOG = "imxconv.log"
LABELS = "labels.txt"
WORKER = Path(__file__).with_name("imx500_worker.py")
FLOAT_TOLERANCE = 1e-4  # the rebuilt float model against the Keras model (probabilities)
CHECK_IMAGES = 16
WORKER_TIMEOUT_S = 3600
NO_FIT = ("not enough memory", "does not fit", "exceeds the memory", "out of memory")


def export_imx500(request: ExportRequest) -> Artifact:
    """Quantize and convert `request.model` for the IMX500 into request.out_dir (packerOut.zip and its companions)."""
    from edgecls.export.formats import FORMATS, check_request
    from edgecls.export.imx500_toolchain import require_toolchain
    from edgecls.quantize.calibration import check_calibration
    from edgecls.zoo.registry import imx500_fit

    check_request(FORMATS[FORMAT], request)
    fit = imx500_fit(request.meta.architecture)
    if not fit.converts:
        raise ConfigError(f"backbone {request.meta.architecture} does not convert for the IMX500: {fit.reason}", f"Train {fit.fix}")
    size = input_size(request)
    calibration = check_calibration(request.calibration, size, FORMAT)
    toolchain = require_toolchain()
    began = time.perf_counter()
    from edgecls.export.serving import work_dir

    scratch = work_dir(request.out_dir)
    try:
        result, converted = _convert(request, calibration, toolchain, scratch)
        artifact = _publish(request, converted, scratch, result)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    artifact.notes.update(toolchain=toolchain.versions, toolchain_venv=str(toolchain.root), fit=fit.note,
                          total_seconds=round(time.perf_counter() - began, 2))
    return artifact


def _spec(request: ExportRequest, weights: Path) -> dict[str, Any]:
    """What the worker rebuilds: the backbone by name with the normalisation the run's InputNormalization layer applies."""
    meta = request.meta
    return {"backbone": meta.architecture, "input_size": list(meta.input_size), "alpha": (meta.training or {}).get("alpha"),
            "num_classes": len(meta.labels), **_normalization(request.model), "weights": str(weights)}


def _normalization(model: Any) -> dict[str, Any]:
    """mean / std / reverse_channels of the model's own "normalize" layer (InputNormalization: what the model computes)."""
    try:
        config = model.get_layer("normalize").get_config()
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"model '{getattr(model, 'name', model)}' has no 'normalize' layer", "Export a run trained by edgecls") from exc
    return {"mean": list(config["mean"]), "std": list(config["std"]), "reverse_channels": bool(config.get("reverse_channels", False))}


def _convert(request: ExportRequest, calibration: np.ndarray, toolchain: Any, scratch: Path) -> tuple[dict[str, Any], Path]:
    weights = scratch / "model.weights.h5"
    request.model.save_weights(str(weights))  # Keras 3's own weights file: data, no code
    check = calibration[:CHECK_IMAGES]
    reference = np.asarray(request.model.predict(check.astype(np.float32), verbose=0), dtype=np.float32)
    arrays = scratch / "arrays.npz"
    np.savez(arrays, calibration=calibration, check_images=check, check_reference=reference)
    out = scratch / "converted"
    job = {"spec": _spec(request, weights), "arrays": str(arrays), "float_tolerance": FLOAT_TOLERANCE,
           "quantized_model": str(scratch / QUANTIZED_MODEL), "converter": str(toolchain.converter), "converter_out": str(out),
           "converter_log": str(scratch / CONVERTER_LOG), "result": str(scratch / "result.json"), "seed": 0}
    result = run_worker(toolchain, "convert", job, scratch)
    if result["converter_exit"] != 0:
        raise _converter_failure(scratch / CONVERTER_LOG, result["converter_exit"], request.meta.architecture)
    return result, out


def run_worker(toolchain: Any, command: str, job: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Run imx500_worker.py `command` with the toolchain's Python; its result JSON, or ExportError with its one-line reason."""
    job_path = scratch / f"{command}.job.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    log = scratch / f"{command}.worker.log"
    try:
        with log.open("w", encoding="utf-8") as sink:
            proc = subprocess.run([str(toolchain.python), "-I", str(WORKER), command, str(job_path)], stdout=sink,
                                  stderr=subprocess.STDOUT, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"the IMX500 toolchain ({command}) gave no result within {WORKER_TIMEOUT_S} s",
                          "Use fewer calibration images (--calib-size) or a smaller model") from exc
    result_path = Path(job["result"])
    result = json.loads(result_path.read_text(encoding="utf-8")) if result_path.is_file() else {}
    if proc.returncode != 0 or "error" in result:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or ["no output"]
        reason = result.get("error") or f"exit code {proc.returncode}: {tail[0][:300]}"
        raise ExportError(f"the IMX500 toolchain failed to {command} the model: {reason}",
                          f"Its venv is {toolchain.root}; if it is damaged, remove it and export again")
    return dict(result)


def _converter_failure(log_path: Path, code: int, backbone: str) -> ExportError:
    text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if any(marker in line.lower() for marker in NO_FIT):
            return ExportError(f"{backbone} does not fit the IMX500's memory: imxconv-tf says '{line[:300]}'",
                               "Use a smaller network: mobilenet_v2 --alpha 0.35 / 0.5, a smaller --img-size, or efficientnet_lite0")
    errors = [line for line in lines if "error" in line.lower()] or lines[-1:] or [f"exit code {code}"]
    return ExportError(f"imxconv-tf failed (exit code {code}): {errors[-1][:300]}", "Check the converter log; only converter-supported "
                       "layers map (edgecls models: the IMX500 column)")


def _publish(request: ExportRequest, converted: Path, scratch: Path, result: dict[str, Any]) -> Artifact:
    packer = converted / PACKER
    if not packer.is_file():
        raise ExportError(f"imxconv-tf wrote no {PACKER} into {converted}", "Check the converter log")
    out = request.out_dir
    shutil.copy2(packer, out / PACKER)
    shutil.copy2(scratch / QUANTIZED_MODEL, out / QUANTIZED_MODEL)
    shutil.copy2(scratch / CONVERTER_LOG, out / CONVERTER_LOG)
    memory = read_memory_report(converted)
    (out / MEMORY_REPORT).write_text(json.dumps(memory, indent=2), encoding="utf-8")
    (out / LABELS).write_text("".join(f"{label}\n" for label in request.meta.labels), encoding="utf-8")
    usage = memory.get("usage_percent")
    if memory.get("fits") is False or (usage is not None and usage > 100):
        raise ExportError(f"{request.meta.architecture} does not fit the IMX500's memory ({usage}% of {memory.get('total') or '8 MB'})",
                          "Use a smaller network: mobilenet_v2 --alpha 0.35 / 0.5 or a smaller --img-size")
    notes = {"cpu_model": QUANTIZED_MODEL, "sensor_memory": memory, "float_rebuild_max_abs_diff": result["float_max_abs_diff"],
             "seconds": {k: result[k] for k in ("rebuild_seconds", "quantize_seconds", "convert_seconds")},
             "converter_command": f"imxconv-tf -i {QUANTIZED_MODEL} -o OUT --overwrite-output",
             "on_the_pi": "sudo apt install imx500-tools; imx500-package -i packerOut.zip -o OUT (writes OUT/network.rpk)"}
    extra = [out / MEMORY_REPORT, out / LABELS, out / QUANTIZED_MODEL, out / CONVERTER_LOG]
    return Artifact(path=out / PACKER, format=FORMAT, precision="int8", extra_files=extra, notes=notes)


def read_memory_report(folder: Path) -> dict[str, Any]:
    """The converter's memory usage report (a *MemoryReport*.json beside packerOut.zip), with the share of the sensor's
    memory it uses as usage_percent where the report gives it."""
    found = sorted(p for p in folder.rglob("*") if p.is_file() and "memory" in p.name.lower() and p.suffix == ".json")
    if not found:
        return {"report": None, "usage_percent": None}
    raw = json.loads(found[0].read_text(encoding="utf-8"))
    summary = raw.get("Memory Report", {}) if isinstance(raw, dict) else {}
    fits = summary.get("Fit In Chip") if isinstance(summary, dict) else None
    return {"report": found[0].name, "usage_percent": _usage_percent(raw), "fits": fits if isinstance(fits, bool) else None,
            "total": summary.get("Total Memory Available On Chip") if isinstance(summary, dict) else None, "raw": raw}


def _usage_percent(raw: Any) -> float | None:
    """The memory usage share from the report: a field naming a percentage/usage, or used/total sizes."""
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = value

    walk(raw, "")
    for key, value in flat.items():
        if re.search(r"percent|usage|utili", key, re.I):
            number = _number(value)
            if number is not None:
                return number * 100 if isinstance(value, float) and number <= 1.0 and "percent" not in key.lower() else number
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = re.search(r"(\d+(?:\.\d+)?)\s*%", value)
        return float(match.group(1)) if match else None
    return None


# ----------------------------------------------------------------------------- validation
def simulated_scores(checked: Path, images: np.ndarray) -> tuple[np.ndarray, str]:
    """Probabilities of the MCT-quantized model beside the artifact (MCT's simulation of the IMX500 arithmetic) on uint8
    `images`, run in the toolchain venv."""
    import tempfile

    from edgecls.export.imx500_toolchain import require_toolchain

    folder = checked.parent  # `checked` is the MCT model itself (the artifact's cpu_model) or packerOut.zip beside it
    model = folder / QUANTIZED_MODEL
    if not model.is_file():
        raise ExportError(f"{folder} has no {QUANTIZED_MODEL} to simulate the IMX500 with", "Export again with --target imx500")
    toolchain = require_toolchain()
    with tempfile.TemporaryDirectory(prefix="edgecls-imx500-") as tmp:
        scratch = Path(tmp)
        np.savez(scratch / "images.npz", images=images)
        job = {"quantized_model": str(model), "arrays": str(scratch / "images.npz"), "scores": str(scratch / "scores.npy"),
               "result": str(scratch / "result.json")}
        run_worker(toolchain, "predict", job, scratch)
        scores = np.load(scratch / "scores.npy", allow_pickle=False)
    return scores.astype(np.float32), "int8 (MCT simulation of the IMX500)"


def integer_check(checked: Path) -> dict[str, Any]:
    """imxconv-tf converts MCT-quantized models only: its packerOut.zip beside the model is the proof, with the memory used."""
    folder = checked.parent
    memory_file = folder / MEMORY_REPORT
    memory = json.loads(memory_file.read_text(encoding="utf-8")) if memory_file.is_file() else {}
    return {"integer": (folder / PACKER).is_file(), "converter_accepted": (folder / PACKER).is_file(),
            "sensor_memory_percent": memory.get("usage_percent")}
