"""Third-party clients read edgecls artifacts on their own: MediaPipe Tasks, OpenVINO Model API, benchmark_app, onnx.checker.

A tiny CNN is trained on Fashion-MNIST for a few seconds, exported as `edgecls export` writes its artifacts (the
writers, then the metadata its post-processing embeds: TFLite fp32/fp16/int8 uint8 I/O, ONNX, the static batch-1
IR), and 200 real test images at the model's size go through each client and
through edgecls' own runtime. MediaPipe and Model API run in a separate venv (scripts/clients_env.sh:
MediaPipe's opencv-contrib-python would replace the main venv's cv2) through client_probe.py; these tests
skip with the command to run when that venv is absent.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecls.metadata import write_tflite_metadata
from tests.clients.tiny_models import LABELS, export_artifact, fashion_rgb, tiny_meta, to_openvino, to_tflite, train_tiny
from tests.conftest import REPO

CLIENTS_PYTHON = Path(os.environ.get("EDGECLS_CLIENTS_VENV", REPO / ".cache" / "venv-clients")) / "bin" / "python"
PROBE = Path(__file__).with_name("client_probe.py")
IMAGES = 200
MIN_AGREEMENT = 0.99
REQUIRED = os.environ.get("EDGECLS_REQUIRE_CLIENTS") == "1"  # CI (.ci/run): a missing venv fails instead of skipping
needs_clients = pytest.mark.skipif(not CLIENTS_PYTHON.is_file() and not REQUIRED,
                                   reason=f"no clients venv at {CLIENTS_PYTHON.parent.parent}: run scripts/clients_env.sh")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The trained tiny model's artifacts as `edgecls export` writes them (its writers, then the metadata its
    post-processing embeds: tiny_models.export_artifact), the writer's bare fp32 .tflite, and the 200 test images."""
    import openvino as ov

    out = tmp_path_factory.mktemp("artifacts")
    model = train_tiny()
    calibration = fashion_rgb("train", 100, offset=5000)[0]
    calibration[0, 0, 0] = 255  # input range 0..255: uint8 input scale 1, zero point 0
    files: dict[str, Any] = {}
    for precision in ("fp32", "fp16", "int8"):
        files[precision] = export_artifact(model, out / f"tflite-{precision}", "tflite", precision, calibration)
    plain = to_tflite(model, "fp32")  # what the writer alone gives: no metadata
    files["plain"] = out / "plain.tflite"
    files["plain"].write_bytes(plain)
    twice = dataclasses.replace(tiny_meta(), normalization_baked_in=False)  # meta.json's mean/std as if outside: wrong
    files["double"] = out / "double.tflite"
    files["double"].write_bytes(write_tflite_metadata(plain, twice))
    files["onnx"] = export_artifact(model, out / "onnx-fp32", "onnx")
    files["xml"] = export_artifact(model, out / "openvino-fp32", "openvino")  # static batch 1: export's default
    ov.save_model(to_openvino(model), str(out / "dynamic.xml"), compress_to_fp16=False)  # --batch 0
    files["dynamic_xml"] = out / "dynamic.xml"
    images, labels = fashion_rgb("test", IMAGES)
    np.save(out / "images.npy", images)
    files["images"], files["labels"] = out / "images.npy", labels
    return files


def _edgecls_top1(path: Path, images: np.ndarray, fmt: str, precision: str) -> np.ndarray:
    from edgecls.runtime import load_backend

    with load_backend(path, meta=tiny_meta(format=fmt, precision=precision)) as backend:
        return backend.run(images.astype(np.float32))


def _probe(client: str, model: Path, images: Path) -> dict[str, Any]:
    assert CLIENTS_PYTHON.is_file(), f"no clients venv at {CLIENTS_PYTHON.parent.parent}: run scripts/clients_env.sh"
    proc = subprocess.run([str(CLIENTS_PYTHON), str(PROBE), client, str(model), str(images)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _agreement(client: dict[str, Any], reference: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, largest top-1 score difference) of a client against edgecls' scores; names checked."""
    assert "error" not in client, client["error"]
    results = client["results"]
    assert len(results) == len(reference)
    assert all(name == LABELS[index] for index, name, _ in results), "category names do not match the labels"
    top = np.array([index for index, _, _ in results])
    agreement = float(np.mean(top == reference.argmax(axis=1)))
    score = np.array([score for _, _, score in results])
    return agreement, float(np.max(np.abs(score - reference[np.arange(len(top)), top])))


@needs_clients
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_mediapipe_image_classifier_reads_the_tflite(precision: str, exported: dict[str, Any]) -> None:
    images = np.load(exported["images"])
    reference = _edgecls_top1(exported[precision], images, "tflite", precision)
    agreement, score_gap = _agreement(_probe("mediapipe", exported[precision], exported["images"]), reference)
    accuracy = float(np.mean(reference.argmax(axis=1) == exported["labels"]))
    print(f"\nmediapipe {precision}: top-1 agreement {agreement:.3f} with edgecls LiteRT on {IMAGES} images, "
          f"largest top-1 score gap {score_gap:.4f} (model accuracy {accuracy:.3f})")
    assert agreement >= MIN_AGREEMENT


@needs_clients
def test_mediapipe_refuses_plain_and_misreads_double_normalisation(exported: dict[str, Any]) -> None:
    """The proof can fail: without metadata MediaPipe refuses the file; meta.json's mean/std in the metadata wrecks it."""
    plain = _probe("mediapipe", exported["plain"], exported["images"])
    assert "NormalizationOptions" in plain.get("error", ""), plain
    images = np.load(exported["images"])
    reference = _edgecls_top1(exported["fp32"], images, "tflite", "fp32")
    double = _probe("mediapipe", exported["double"], exported["images"])
    top = np.array([index for index, _, _ in double["results"]])
    agreement = float(np.mean(top == reference.argmax(axis=1)))
    print(f"\nmediapipe with mean 127 / std 128 written into the metadata (normalised twice): top-1 agreement {agreement:.3f}")
    assert agreement < 0.9


@needs_clients
@pytest.mark.parametrize("artifact", ["xml", "onnx"])
def test_openvino_model_api_classifies_without_configuration(artifact: str, exported: dict[str, Any]) -> None:
    images = np.load(exported["images"])
    fmt = "openvino" if artifact == "xml" else "onnx"
    reference = _edgecls_top1(exported[artifact], images, fmt, "fp32")
    agreement, score_gap = _agreement(_probe("model_api", exported[artifact], exported["images"]), reference)
    print(f"\nModel API {artifact}: top-1 agreement {agreement:.3f} with edgecls {fmt} on {IMAGES} images, "
          f"largest top-1 score gap {score_gap:.4f}")
    assert agreement >= MIN_AGREEMENT


def test_benchmark_app_runs_the_static_ir_and_refuses_the_dynamic_one(exported: dict[str, Any]) -> None:
    tool = shutil.which("benchmark_app", path=str(Path(sys.executable).parent)) or shutil.which("benchmark_app")
    if tool is None:
        pytest.skip("benchmark_app (from the openvino wheel) is not installed")
    command = [tool, "-d", "CPU", "-niter", "10", "-nireq", "1", "-hint", "latency", "-m"]
    ran = subprocess.run([*command, str(exported["xml"])], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and "Throughput" in ran.stdout, ran.stdout[-1500:] + ran.stderr[-1500:]
    refused = subprocess.run([*command, str(exported["dynamic_xml"])], capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "is dynamic" in refused.stdout + refused.stderr


def test_onnx_checker_full_check_passes(exported: dict[str, Any]) -> None:
    import onnx

    onnx.checker.check_model(onnx.load(str(exported["onnx"])), full_check=True)
