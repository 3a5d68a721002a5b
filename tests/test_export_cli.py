"""Integration tests: the real `edgecls export` on a run trained through the CLI, every target."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import assert_clean_error, run_cli

pytestmark = pytest.mark.slow


def _exported(result_stdout: str) -> dict[str, dict]:
    return {f"{r['target']}-{r['precision']}": r for r in json.loads(result_stdout)}


def _no_leftovers(folder: Path) -> None:
    if folder.exists():
        leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
        assert not leftovers, leftovers


def test_int8_every_target(plain_run: Path, tmp_path: Path) -> None:
    result = run_cli("export", plain_run, "--int8", "--target", "all", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.output
    reports = _exported(result.stdout)
    assert set(reports) == {"tflite-int8", "edgetpu-int8", "onnx-int8", "openvino-int8"}
    for name, report in reports.items():
        folder = plain_run / "export" / name
        assert (folder / "meta.json").is_file() and (folder / "export_report.json").is_file(), name
        validation = report["validation"]
        assert validation["integer_check"]["integer"], (name, validation["integer_check"])
        assert validation["images"] == 80 and 0.0 <= validation["top1_agreement"] <= 1.0
        assert "accuracy_drop" in validation and len(validation["per_class"]) == 10
        assert report["size_bytes"] > 0
    meta = json.loads((plain_run / "export" / "tflite-int8" / "meta.json").read_text())
    assert meta["format"] == "tflite" and meta["precision"] == "int8"
    assert meta["input_quantization"]["dtype"] == "uint8"
    manifest = json.loads((tmp_path / "calibration" / plain_run.name / "manifest.json").read_text())
    train_files = {row[0] for row in json.loads((plain_run / "splits.json").read_text())["train"]}
    held_out = {row[0] for split in ("val", "test") for row in json.loads((plain_run / "splits.json").read_text())[split]}
    calibrated = {str(Path(e["file"]).relative_to(json.loads((plain_run / "splits.json").read_text())["root"])) for e in manifest["files"]}
    assert calibrated <= train_files and not calibrated & held_out
    assert all(len(e["sha256"]) == 64 for e in manifest["files"])
    _no_leftovers(plain_run / "export")


def test_float_targets_match_keras(plain_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports"
    result = run_cli("export", plain_run, "--target", "all", "--out", out, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.output
    reports = _exported(result.stdout)
    assert set(reports) == {"tflite-fp32", "onnx-fp32", "openvino-fp32"}  # edgetpu is int8-only
    for name, report in reports.items():
        validation = report["validation"]
        assert validation["max_abs_diff"] <= validation["tolerance"] == 1e-3, name
        assert validation["top1_agreement"] >= 0.99
    assert "f32" in reports["openvino-fp32"]["validation"]["precision_ran"]
    table = run_cli("export", plain_run, "--fp16", "--target", "openvino", "--out", out, cwd=tmp_path)
    assert table.returncode == 0 and "openvino" in table.stdout and "ok" in table.stdout


def test_predict_uses_meta_of_exported_artifact(plain_run: Path, tmp_path: Path, fmnist_tree: Path) -> None:
    out = tmp_path / "exp"
    assert run_cli("export", plain_run, "--int8", "--target", "tflite", "--out", out, cwd=tmp_path).returncode == 0
    from edgecls.runtime import Classifier

    image = sorted((fmnist_tree / "test" / "Trouser").glob("*.png"))[0]
    with Classifier(out / "tflite-int8" / "model.tflite") as classifier:
        top = classifier.predict([image], top_k=3)[0]
    assert len(top) == 3 and top[0].score >= top[1].score


def test_calibration_from_own_folder_drops_held_out_images(plain_run: Path, tmp_path: Path) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    splits = json.loads((plain_run / "splits.json").read_text())
    root = Path(splits["root"])
    for i, (rel, _) in enumerate(splits["train"][:12] + splits["test"][:3]):
        (calib / f"{i}.png").write_bytes((root / rel).read_bytes())
    result = run_cli("export", plain_run, "--int8", "--calib", calib, "--out", tmp_path / "e", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.output
    report = _exported(result.stdout)["tflite-int8"]
    assert report["calibration"]["images"] == 12  # the 3 test images were dropped


def test_failed_validation_leaves_no_artifact(plain_run: Path, tmp_path: Path) -> None:
    from edgecls.export.api import _export_one, _load_source
    from edgecls.export.formats import FORMATS
    from edgecls.export.validate import Holdout

    source = _load_source(plain_run)
    images = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    wrong = np.roll(np.eye(10, dtype=np.float32)[np.arange(6) % 10], 1, axis=1)  # not what the model says
    result = _export_one(source, FORMATS["tflite"], "fp32", tmp_path, None, Holdout(images, None, wrong, "test"), None, "uint8", 17, None)
    assert not result.passed and "failed validation" in result.error
    assert not (tmp_path / "tflite-fp32").exists()
    assert json.loads((tmp_path / "tflite-fp32.failed.json").read_text())["validation"]["passed"] is False
    _no_leftovers(tmp_path)


def test_zoo_model_exports_with_builtin_calibration(tmp_path: Path) -> None:
    result = run_cli("export", "efficientnet_lite0", "--int8", "--target", "tflite", "--out", tmp_path / "zoo", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.output
    report = _exported(result.stdout)["tflite-int8"]
    assert report["validation"]["top1_agreement"] >= 0.7
    assert report["size_ratio_vs_fp32_weights"] <= 0.35
    assert report["calibration"]["source"].startswith("built-in photos")


def _bad_calib(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "undecodable":
        for i in range(12):
            (folder / f"{i}.jpg").write_text("not a jpeg")
    elif kind == "few":
        for i in range(3):
            Image.new("RGB", (40, 40), (i * 50, 0, 0)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["{run}", "--target", "tensorrt"], ["unknown target 'tensorrt'"]),
        (["{run}", "--target", "onx"], ["Did you mean 'onnx'"]),
        (["{run}", "--fp16", "--target", "onnx"], ["onnx cannot export precision fp16"]),
        (["{run}", "--int8", "--fp16"], ["conflicting precisions"]),
        (["{run}", "--int8", "--calib", "{empty}"], ["0 usable images"]),
        (["{run}", "--int8", "--calib", "{undecodable}"], ["12 unreadable"]),
        (["{run}", "--int8", "--calib", "{few}"], ["3 usable images"]),
        (["{run}", "--int8", "--calib-size", "5"], ["--calib-size 5"]),
        (["{run}", "--int8", "--io", "int16"], ["--io 'int16'"]),
        (["/nonexistent/run", "--int8"], ["/nonexistent/run"]),
        (["{fileinstead}", "--int8"], ["is a file"]),
    ],
)
def test_bad_export_inputs(args: list[str], fragments: list[str], plain_run: Path, tmp_path: Path) -> None:
    file_instead = tmp_path / "model.tflite"
    file_instead.write_bytes(b"junk")
    paths = {"run": plain_run, "empty": _bad_calib(tmp_path, "empty"), "undecodable": _bad_calib(tmp_path, "undecodable"),
             "few": _bad_calib(tmp_path, "few"), "fileinstead": file_instead}
    out = tmp_path / "out"
    result = run_cli("export", *[a.format(**paths) for a in args], "--out", out, cwd=tmp_path)
    assert_clean_error(result, *fragments)
    assert not out.exists() or not any(out.iterdir())


def test_predict_on_an_export_folder_and_io_only_for_tflite(plain_run: Path, tmp_path: Path, fmnist_tree: Path) -> None:
    out = tmp_path / "exp"
    assert run_cli("export", plain_run, "--int8", "--target", "tflite", "--out", out, cwd=tmp_path).returncode == 0
    image = sorted((fmnist_tree / "test" / "Bag").glob("*.png"))[0]
    result = run_cli("predict", out / "tflite-int8", image, "--json")
    assert result.returncode == 0, result.output
    assert len(json.loads(result.stdout)[0]["top"]) == 5
    assert_clean_error(run_cli("export", plain_run, "--int8", "--target", "onnx", "--io", "int8", "--out", out, cwd=tmp_path),
                       "--io int8 only applies to tflite")
