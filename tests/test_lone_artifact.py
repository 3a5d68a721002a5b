"""A lone artifact is enough (issue 11, item 3): predict, camera and bench read the metadata embedded in a .tflite,
.onnx or .xml when no meta.json lies beside it; meta.json stays the readable copy and wins, with one warning line
when it says otherwise; a file with neither is the one-line error it always was.

The artifacts are a tiny real CNN (barely trained: the proofs need real graphs, not good scores) written with
edgecls.metadata's writers, as export will write them, into folders without meta.json.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edgecls.metadata import read_embedded_meta
from tests.clients.tiny_models import LABELS, fashion_rgb, save_artifact, tiny_meta, to_tflite
from tests.conftest import assert_clean_error, run_cli

pytestmark = pytest.mark.slow
FORMATS = {"tflite": "model.tflite", "onnx": "model.onnx", "openvino": "model.xml"}


@pytest.fixture(scope="module")
def keras_model() -> Any:
    import keras

    from tests.clients.tiny_models import train_tiny

    keras.utils.set_random_seed(0)
    return train_tiny(train_images=64, epochs=1)


@pytest.fixture(scope="module")
def lone(keras_model: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each format in its own 'plain-copy' folder: the artifact (and the IR's .bin), nothing else."""
    root = tmp_path_factory.mktemp("lone")
    return {fmt: save_artifact(keras_model, root / fmt / "plain-copy", fmt) for fmt in FORMATS}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three Fashion-MNIST test images as PNG files (at 64 px: predict resizes them to the model's 32)."""
    folder = tmp_path_factory.mktemp("images")
    for index, image in enumerate(fashion_rgb("test", 3)[0]):
        Image.fromarray(image).resize((64, 64)).save(folder / f"img{index}.png")
    return folder


def _reference(path: Path, image: Path) -> str:
    """The top-1 label edgecls' runtime gives with the meta passed in by hand."""
    from edgecls.preprocess import prepare
    from edgecls.runtime import load_backend

    meta = tiny_meta()
    with load_backend(path, meta=meta) as backend:
        return LABELS[int(np.argmax(backend.run(prepare(image, meta)[None])[0]))]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_predict_reads_the_embedded_metadata_of_a_lone_artifact(fmt: str, lone: dict[str, Path], images: Path) -> None:
    path = lone[fmt]
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name] + (["model.bin"] if fmt == "openvino" else []))
    image = images / "img0.png"
    result = run_cli("predict", path, image, "--json", "--top-k", "3")
    assert result.returncode == 0, result.output
    top = json.loads(result.stdout)[0]["top"]
    assert len(top) == 3 and {c["label"] for c in top} <= set(LABELS)
    assert top[0]["label"] == _reference(path, image)
    assert "warning" not in result.stderr and "error" not in result.stderr, result.stderr


def test_camera_and_bench_run_a_lone_artifact(lone: dict[str, Path], images: Path, tmp_path: Path) -> None:
    model = lone["tflite"]
    report = tmp_path / "camera.json"
    camera = run_cli("camera", "--model", model, "--device", images, "--frames", "3", "--headless", "--report", report, "--json")
    assert camera.returncode == 0, camera.output
    summary = json.loads(report.read_text())
    assert summary["counts"]["processed"] == 3 and summary["last"]["top"][0]["label"] in LABELS
    bench_out = tmp_path / "bench.json"
    bench = run_cli("bench", model, lone["onnx"], "--runs", "3", "--warmup", "1", "--out", bench_out, "--json")
    assert bench.returncode == 0, bench.output
    results = json.loads(bench_out.read_text())["results"]
    assert [Path(r["artifact"]).suffix for r in results] == [".tflite", ".onnx"]
    assert all("error" not in r and r["latency"]["p50_ms"] > 0 for r in results), results


def test_meta_json_wins_and_a_disagreement_is_one_warning_line(lone: dict[str, Path], images: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy" / "model.tflite"
    copy.parent.mkdir()
    shutil.copy(lone["tflite"], copy)
    embedded = read_embedded_meta(copy)
    assert embedded is not None
    # the same meta beside it: no warning
    embedded.save(copy.parent / "meta.json")
    same = run_cli("predict", copy, images / "img0.png", "--json")
    assert same.returncode == 0 and "warning" not in same.stderr, same.output
    # labels reordered in meta.json: it is still what predict reports, and one line says the two copies differ
    swapped = [LABELS[1], LABELS[0], *LABELS[2:]]
    (copy.parent / "meta.json").write_text(json.dumps({**embedded.to_dict(), "labels": swapped}))
    reordered = run_cli("predict", copy, images / "img0.png", "--json", "--top-k", "10")
    assert reordered.returncode == 0, reordered.output
    warnings = [line for line in reordered.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "disagree" in warnings[0] and "another order" in warnings[0] and "using meta.json" in warnings[0]
    assert {c["label"] for c in json.loads(reordered.stdout)[0]["top"]} == set(LABELS)
    with_meta = {c["label"]: c["score"] for c in json.loads(reordered.stdout)[0]["top"]}
    alone = {c["label"]: c["score"] for c in json.loads(run_cli("predict", lone["tflite"], images / "img0.png", "--json",
                                                                "--top-k", "10").stdout)[0]["top"]}
    assert with_meta[LABELS[0]] == pytest.approx(alone[LABELS[1]]) and with_meta[LABELS[1]] == pytest.approx(alone[LABELS[0]])
    # input size in meta.json that the model does not take: the warning, then the one-line error naming meta.json
    (copy.parent / "meta.json").write_text(json.dumps({**embedded.to_dict(), "input_size": [48, 48]}))
    resized = run_cli("predict", copy, images / "img0.png")
    assert_clean_error(resized, "takes 32x32 input", "meta.json says input_size 48x48")
    assert "input_size [48, 48] vs [32, 32] embedded" in resized.stderr


def test_meta_json_folder_falls_back_to_the_embedded_metadata(lone: dict[str, Path], images: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy" / "model.onnx"
    copy.parent.mkdir()
    shutil.copy(lone["onnx"], copy)
    (copy.parent / "meta.json").mkdir()
    result = run_cli("predict", copy, images / "img1.png", "--json")
    assert result.returncode == 0, result.output


def test_no_meta_anywhere_and_a_damaged_lone_file_are_one_line(keras_model: Any, lone: dict[str, Path], images: Path,
                                                               tmp_path: Path) -> None:
    plain = tmp_path / "plain" / "model.tflite"
    plain.parent.mkdir()
    plain.write_bytes(to_tflite(keras_model, "fp32"))
    assert_clean_error(run_cli("predict", plain, images / "img0.png"), f"no meta.json beside '{plain}'",
                       "no edgecls metadata embedded in it", "Copy the meta.json that was exported with it", "export the artifact again")
    cut = tmp_path / "cut" / "model.tflite"
    cut.parent.mkdir()
    cut.write_bytes(lone["tflite"].read_bytes()[:60])
    assert_clean_error(run_cli("predict", cut, images / "img0.png"), f"'{cut}'", "not a readable TFLite file")
