"""`edgecls verify ARTIFACT` (issue 11, item 4) through the real CLI on real tiny artifacts and real golden sets.

The golden sets are made as export will make them: held-out Fashion-MNIST images at the model's size, the
artifact's own outputs through edgecls' runtime, and the runtime that computed them (make_golden/save_golden).
Each broken case is a real mistake a user or a device makes: labels reordered in meta.json, a different model
under the same name, an int8 artifact judged with the fp32 tolerance, a runtime version that computes
differently, meta.json preprocessing that drifts from the model, an Edge TPU model without the Edge TPU.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecls.metadata import GOLDEN_FILE, load_golden, read_embedded_meta, save_golden
from edgecls.verify import runtime_difference
from tests.clients.tiny_models import LABELS, fashion_rgb, golden_beside, save_artifact
from tests.conftest import REPO, CliResult, assert_clean_error, run_cli
from tests.test_tf_free import BLOCKER

pytestmark = pytest.mark.slow
CASES = {"tflite-fp32": ("tflite", "fp32"), "tflite-int8": ("tflite", "int8"), "onnx-fp32": ("onnx", "fp32"),
         "openvino-fp32": ("openvino", "fp32")}
TINT = np.array([1.0, 0.7, 0.35])  # colour, so that a channel swap changes the pixels (Fashion-MNIST is grey)


@pytest.fixture(scope="module")
def keras_model() -> Any:
    """Trained long enough (seconds) for golden images whose top-1 leads clearly, int8's wider margin included."""
    from tests.clients.tiny_models import train_tiny

    return train_tiny(train_images=1000, epochs=3)


@pytest.fixture(scope="module")
def held_out() -> np.ndarray:
    return fashion_rgb("test", 64, offset=200)[0]


@pytest.fixture(scope="module")
def artifacts(keras_model: Any, held_out: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each case's artifact alone in its folder with the golden.npz made from its own outputs (no meta.json)."""
    root = tmp_path_factory.mktemp("verify")
    found = {}
    for name, (fmt, precision) in CASES.items():
        found[name] = save_artifact(keras_model, root / name, fmt, precision)
        golden_beside(found[name], held_out)
    return found


def _copy(path: Path, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True)
    for part in path.parent.iterdir():
        shutil.copy(part, folder / (name if name and part == path else part.name))
    return folder / (name or path.name)


def _failed(result: CliResult, *fragments: str) -> str:
    """A verification that ran and failed: exit 1, one error line holding every fragment, no traceback."""
    assert_clean_error(result, *fragments)
    assert result.returncode == 1, result.output
    return next(line for line in result.stderr.splitlines() if line.startswith("error:"))


def _json(result: CliResult) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# ----------------------------------------------------------------------------------------------- passing


def test_verify_passes_with_a_short_table(artifacts: dict[str, Path]) -> None:
    path = artifacts["tflite-fp32"]
    result = run_cli("verify", path)
    assert result.returncode == 0, result.output
    out = result.stdout
    assert "verify passed: 8 golden images, top-1 agreement 100%" in out and "fp32 tolerance 0.002" in out
    assert "golden set made with: litert" in out and "this machine:         litert" in out and "precision ran fp32" in out
    assert "DIFFERS" not in out and sum(label in out for label in LABELS) >= 4
    assert "meta: the metadata embedded in" in out  # a lone artifact: no meta.json beside it
    assert not result.stderr.strip(), result.stderr
    folder = run_cli("verify", path.parent, "--json")  # the export folder works as well
    assert folder.returncode == 0 and _json(folder)["artifact"] == str(path), folder.output


@pytest.mark.parametrize("case", ["tflite-int8", "onnx-fp32", "openvino-fp32"])
def test_verify_passes_on_every_runtime_with_json(case: str, artifacts: dict[str, Path]) -> None:
    result = run_cli("verify", artifacts[case], "--json")
    assert result.returncode == 0, result.output
    data = _json(result)
    runtime = {"tflite-int8": "litert", "onnx-fp32": "onnxruntime", "openvino-fp32": "openvino"}[case]
    assert data["ok"] and data["problems"] == [] and data["top1_agreement"] == 1.0 and data["max_drift"] <= data["tolerance"]
    assert data["made_with"]["runtime"] == data["this_run"]["runtime"] == runtime
    assert data["made_with"]["version"] == data["this_run"]["version"] != "unknown"
    assert len(data["checks"]) == data["images"] == 8 and all(c["ok"] for c in data["checks"])
    assert len({c["expected"] for c in data["checks"]}) >= 4  # spread over classes
    assert data["precision"] == CASES[case][1] and data["tolerance"] == {"fp32": 2e-3, "int8": 6e-2}[CASES[case][1]]


# ----------------------------------------------------------------------------------------------- failing with a diagnosis


def test_labels_reordered_or_renamed_in_meta_json(artifacts: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy(artifacts["tflite-fp32"], tmp_path / "reordered")
    meta = read_embedded_meta(copy)
    assert meta is not None
    swapped = [LABELS[1], LABELS[0], *LABELS[2:]]
    (copy.parent / "meta.json").write_text(json.dumps({**meta.to_dict(), "labels": swapped}))
    result = run_cli("verify", copy)
    _failed(result, "wrong labels: the same names in another order", f"output 0 is '{LABELS[1]}', expected '{LABELS[0]}'")
    assert "disagree" in result.stderr and "DIFFERS" not in result.stdout  # the scores themselves agree
    (copy.parent / "meta.json").write_text(json.dumps({**meta.to_dict(), "labels": ["shirt", *LABELS[1:]]}))
    _failed(run_cli("verify", copy), "output 0 is named 'shirt', the golden set says")


def test_a_different_model_under_the_same_name(keras_model: Any, artifacts: dict[str, Path], tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(7)
    other = save_artifact(keras.models.clone_model(keras_model), tmp_path / "other", "tflite", "fp32")  # untrained weights
    shutil.copy(artifacts["tflite-fp32"].parent / GOLDEN_FILE, other.parent / GOLDEN_FILE)
    result = run_cli("verify", other)
    line = _failed(result, "top-1 differs on", "golden images", "same runtime, version, device and machine",
                   "a different model under this name?")
    assert "DIFFERS" in result.stdout, line


def test_a_golden_set_of_another_class_count(artifacts: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy(artifacts["onnx-fp32"], tmp_path / "three")
    golden = load_golden(copy)
    golden.labels = golden.labels[:3]
    golden.probabilities = golden.probabilities[:, :3] / golden.probabilities[:, :3].sum(axis=1, keepdims=True)
    save_golden(golden, copy)
    result = run_cli("verify", copy, "--json")
    _failed(result, "wrong labels: the artifact lists 10 classes, the golden set 3", "a different model or class count")
    data = _json(result)  # strict JSON: no Infinity
    assert data["max_drift"] is None and data["checks"] == [] and not data["ok"]


def test_int8_artifact_judged_with_the_fp32_tolerance(artifacts: dict[str, Path], held_out: np.ndarray, tmp_path: Path) -> None:
    # the fp32 export's golden set beside the int8 artifact: the wrong precision, and scores beyond fp32's tolerance
    copy = _copy(artifacts["tflite-int8"], tmp_path / "fp32-golden")
    shutil.copy(artifacts["tflite-fp32"].parent / GOLDEN_FILE, copy.parent / GOLDEN_FILE)
    result = run_cli("verify", copy, "--json")
    _failed(result, "the golden set was made for fp32 (tolerance 0.002)", "the artifact is int8", "belongs to another export")
    assert _json(result)["max_drift"] > 2e-3
    # a set made from the int8 artifact's own outputs but labelled fp32: the scores agree here, the precision still does not
    relabelled = _copy(artifacts["tflite-int8"], tmp_path / "relabelled")
    golden_beside(relabelled, held_out, precision="fp32")
    data_result = run_cli("verify", relabelled, "--json")
    _failed(data_result, "the golden set was made for fp32")
    assert _json(data_result)["top1_agreement"] == 1.0


def test_runtime_version_and_machine_differences_are_named(artifacts: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy(artifacts["tflite-fp32"], tmp_path / "drift")
    golden = load_golden(copy)
    top = golden.probabilities.argmax(axis=1)
    golden.probabilities[np.arange(len(top)), top] -= 0.003  # beyond fp32's 0.002; the top-1 leads by more than 0.004: unchanged
    golden.runtime = {**golden.runtime, "version": "0.0.1", "machine": "aarch64"}
    save_golden(golden, copy)
    result = run_cli("verify", copy)
    _failed(result, "scores drift 0.0030, beyond the fp32 tolerance 0.002 with the same top-1",
            "made with litert 0.0.1 on cpu, Linux aarch64", "here litert", "version 0.0.1 -> ", "machine aarch64 -> ")
    assert "golden set made with: litert 0.0.1 on cpu, Linux aarch64" in result.stdout  # both runs are printed


@pytest.mark.parametrize("mistake", ["normalisation applied twice", "colour order"])
def test_preprocessing_drift_in_meta_json(mistake: str, artifacts: dict[str, Path], held_out: np.ndarray, tmp_path: Path) -> None:
    copy = _copy(artifacts["tflite-fp32"], tmp_path / "pre")
    meta = read_embedded_meta(copy)
    assert meta is not None
    if mistake == "colour order":
        tinted = (held_out * TINT).astype(np.uint8)
        golden_beside(copy, tinted)  # a colour golden set: a channel swap changes what the model sees
        meta.color_order = "BGR"
    else:
        meta.normalization_baked_in = False  # meta.json's mean/std applied before a model that normalises itself
    meta.save(copy.parent / "meta.json")
    result = run_cli("verify", copy)
    line = _failed(result, "preprocessing drift: the golden pixels fed straight into the model agree",
                   "check color_order, normalization_baked_in, mean and std there")
    if mistake == "colour order":
        assert "channels swapped" in line


def test_edge_tpu_model_without_the_edge_tpu(artifacts: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy(artifacts["tflite-int8"], tmp_path / "coral", name="model_edgetpu.tflite")
    result = run_cli("verify", copy, "--json")
    _failed(result, "Edge TPU missing", "libedgetpu")
    data = _json(result)
    assert data["this_run"] == {} and data["top1_agreement"] is None and data["made_with"]["runtime"] == "litert"
    text = run_cli("verify", copy, "--backend-device", "coral")
    assert "the model did not load" in text.stdout and "golden images did not run" in text.stdout


# ----------------------------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_with_exit_2(artifacts: dict[str, Path], tmp_path: Path) -> None:
    alone = _copy(artifacts["tflite-fp32"], tmp_path / "alone")
    (alone.parent / GOLDEN_FILE).unlink()
    missing = run_cli("verify", alone)
    assert_clean_error(missing, f"no golden.npz at '{alone.parent / GOLDEN_FILE}'", "Export the artifact again")
    assert missing.returncode == 2
    (alone.parent / GOLDEN_FILE).write_bytes(b"PK\x03\x04 not a zip")
    assert_clean_error(run_cli("verify", alone), "is not a readable golden set")
    assert_clean_error(run_cli("verify", tmp_path / "nope.tflite"), "does not exist")
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.tflite", "b.onnx"):
        (two / name).write_bytes(b"x")
    assert_clean_error(run_cli("verify", two), "holds 2 artifacts (a.tflite, b.onnx)", "Pass the artifact file itself")
    assert_clean_error(run_cli("verify", artifacts["tflite-fp32"], "--threads", "0"), "--threads 0")
    assert_clean_error(run_cli("verify", artifacts["tflite-fp32"], "--backend-device", "quantum"), "device 'quantum'")


def test_verify_imports_no_tensorflow(artifacts: dict[str, Path]) -> None:
    code = BLOCKER + textwrap.dedent(f"""
        import sys
        from edgecls.cli.app import main
        try:
            main(["verify", {str(artifacts['tflite-int8'])!r}, "--json"])
        finally:
            heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
            assert not heavy, heavy
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["ok"], proc.stderr


def test_runtime_difference_phrases() -> None:
    made = {"runtime": "litert", "version": "2.3.0", "device": "coral", "delegate": "edgetpu", "machine": "aarch64", "system": "Linux",
            "python": "3.11.2"}
    here = {**made, "device": "cpu", "delegate": ""}
    assert "device coral -> cpu, delegate edgetpu -> none" in runtime_difference(made, here)
    assert "same runtime" in runtime_difference(made, made)
    assert "does not record its runtime (litert 2.2 x86_64)" in runtime_difference({"source": "litert 2.2 x86_64"}, here)
