"""Integration tests: the real `edgecls export` on a run trained through the CLI, every target."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.fsutil import OUTPUT_MARKER, TEMP_PREFIX
from edgecls.verify import verify
from tests.conftest import (
    CLI_OUTPUT,
    FP32_EXPORT_STDOUT,
    INT8_CWD,
    INT8_STALE,
    REPO,
    assert_clean_error,
    copy_run,
    read_output,
    run_cli,
    run_cli_without_tensorflow,
)
from tests.test_export_metadata import check_lone_copy, check_published, ir_input_shape

pytestmark = pytest.mark.slow


def _exported(result_stdout: str) -> dict[str, dict]:
    return {f"{r['target']}-{r['precision']}": r for r in json.loads(result_stdout)}


def _no_leftovers(folder: Path) -> None:
    if folder.exists():
        leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
        assert not leftovers, leftovers


# plain_run is a 25%-accuracy model with nearly flat probabilities: every top-1 is a near-tie, so its ordinary
# ONNX INT8 misses the default gate (agreement 0.89). Tests about something else turn the gate off; the gate
# itself is tested in test_int8_gate.py on a model that really quantizes badly.
NO_GATE = ("--max-drop", "none", "--min-agreement", "none")


def test_int8_every_target(plain_int8_exports: Path) -> None:
    """`edgecls export RUN --int8 --target all --json` (gate off), run once per test run by conftest's plain_int8_exports (the
    artifacts the camera, deploy, bench and serving tests use): checked here. RUN/export held a SIGKILLed export's temp folder."""
    export = plain_int8_exports
    plain_run = export.parent
    result = read_output(plain_run.parent / CLI_OUTPUT)
    stale = Path((plain_run.parent / INT8_STALE).read_text())
    assert stale.parent == export and stale.name.startswith(TEMP_PREFIX)
    reports = _exported(result.stdout)
    assert set(reports) == {"tflite-int8", "edgetpu-int8", "onnx-int8", "openvino-int8"}
    for name, report in reports.items():
        folder = plain_run / "export" / name
        assert (folder / "meta.json").is_file() and (folder / "export_report.json").is_file(), name
        assert (folder / OUTPUT_MARKER).is_file(), name
        assert json.loads((folder / "export_report.json").read_text())["validation"] == report["validation"]
        validation = report["validation"]
        assert validation["integer_check"]["integer"], (name, validation["integer_check"])
        assert validation["images"] == 80 and 0.0 <= validation["top1_agreement"] <= 1.0
        assert "accuracy_drop" in validation and len(validation["per_class"]) == 10
        assert report["size_bytes"] > 0
        sensitivity = report["sensitivity"]  # per-layer int8 error on every target, with its PNG beside the artifact
        assert sensitivity["images"] == 16 and len(sensitivity["layers"]) >= 8 and (folder / sensitivity["plot"]).stat().st_size > 1000
        assert report["gate"] == {"max_drop": None, "min_agreement": None, "judged_on": validation["source"], "passed": True,
                                  "advice": []}
        artifact = check_published(folder)  # standard metadata embedded, golden.npz beside it
        weights = artifact.with_suffix(".bin") if artifact.suffix == ".xml" else artifact  # an IR's .xml is the graph, not weights
        assert report["weights_bytes"] == weights.stat().st_size and report.get("graph_bytes") == (
            artifact.stat().st_size if weights != artifact else None), name
        assert report["size_ratio_vs_fp32_weights"] == round(report["weights_bytes"] / report["fp32_weights_bytes"], 4)
        assert verify(folder).ok, name  # the golden set through this machine's runtime, as `edgecls verify` runs it
    assert ir_input_shape(plain_run / "export" / "openvino-int8" / "model.xml") == [1, 32, 32, 3]  # static batch 1 after NNCF
    meta = json.loads((plain_run / "export" / "tflite-int8" / "meta.json").read_text())
    assert meta["format"] == "tflite" and meta["precision"] == "int8"
    assert meta["input_quantization"]["dtype"] == "uint8"
    assert not stale.exists()
    assert list((plain_run.parent / INT8_CWD).iterdir()) == []  # nothing written into the current folder
    manifest_file = plain_run / "export" / "calibration" / "manifest.json"
    assert reports["tflite-int8"]["calibration"]["manifest"] == str(manifest_file)
    manifest = json.loads(manifest_file.read_text())
    train_files = {row[0] for row in json.loads((plain_run / "splits.json").read_text())["train"]}
    held_out = {row[0] for split in ("val", "test") for row in json.loads((plain_run / "splits.json").read_text())[split]}
    calibrated = {str(Path(e["file"]).relative_to(json.loads((plain_run / "splits.json").read_text())["root"])) for e in manifest["files"]}
    assert calibrated <= train_files and not calibrated & held_out
    assert all(len(e["sha256"]) == 64 for e in manifest["files"])
    _no_leftovers(plain_run / "export")


def test_float_targets_match_keras(plain_run: Path, plain_fp32_exports: Path, tmp_path: Path, fmnist_tree: Path) -> None:
    """`edgecls export PLAIN_RUN --target all --out OUT --json`: conftest's plain_fp32_exports runs it once per test run
    (test_reliability.py uses the same artifacts) and keeps its stdout; copied here, then checked and verified."""
    out = shutil.copytree(plain_fp32_exports, tmp_path / "exports")
    reports = _exported((out / FP32_EXPORT_STDOUT).read_text())
    assert {r["folder"] for r in reports.values()} == {str(plain_fp32_exports / name) for name in reports}
    assert set(reports) == {"tflite-fp32", "onnx-fp32", "openvino-fp32"}  # edgetpu is int8-only
    for name, report in reports.items():
        validation = report["validation"]
        assert validation["max_abs_diff"] <= validation["tolerance"] == 1e-3, name
        assert validation["top1_agreement"] >= 0.99
    assert "f32" in reports["openvino-fp32"]["validation"]["precision_ran"]
    images = sorted(fmnist_tree.glob("test/*/*.png"))[::8][:6]
    for name in reports:  # every artifact: metadata, golden set, `edgecls verify`, a lone copy that still knows its labels
        path = check_published(out / name)
        checked = run_cli("verify", path, cwd=tmp_path)
        assert checked.returncode == 0 and "verify passed" in checked.stdout, checked.output
        check_lone_copy(path, tmp_path / "lone" / name, images)
    assert ir_input_shape(out / "openvino-fp32" / "model.xml") == [1, 32, 32, 3]  # benchmark_app / Model API run it as is
    table = run_cli("export", plain_run, "--fp16", "--target", "openvino", "--batch", "0", "--out", out, cwd=tmp_path)
    assert table.returncode == 0 and "openvino" in table.stdout and "ok" in table.stdout
    assert ir_input_shape(out / "openvino-fp16" / "model.xml") == [None, 32, 32, 3]  # --batch 0 keeps a dynamic batch
    check_published(out / "openvino-fp16")
    assert verify(out / "openvino-fp16").ok


def test_predict_uses_meta_of_exported_artifact(plain_int8_exports: Path, fmnist_tree: Path) -> None:
    """The runtime reads the input size and labels of an exported INT8 TFLite from its meta: the session's `export PLAIN_RUN
    --int8 --target all` (read only; the same export with the default gate is run in
    test_predict_on_an_export_folder_and_io_only_for_tflite)."""
    from edgecls.runtime import Classifier

    image = sorted((fmnist_tree / "test" / "Trouser").glob("*.png"))[0]
    with Classifier(plain_int8_exports / "tflite-int8" / "model.tflite") as classifier:
        top = classifier.predict([image], top_k=3)[0]
    assert len(top) == 3 and top[0].score >= top[1].score


def test_calibration_from_own_folder_drops_held_out_images(plain_run: Path, tmp_path: Path) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    splits = json.loads((plain_run / "splits.json").read_text())
    root = Path(splits["root"])
    for i, (rel, _) in enumerate(splits["train"][:12] + splits["test"][:3]):
        (calib / f"{i}.png").write_bytes((root / rel).read_bytes())
    result = run_cli("export", plain_run, "--int8", "--calib", calib, *NO_GATE, "--out", tmp_path / "e", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.output
    report = _exported(result.stdout)["tflite-int8"]
    assert report["calibration"]["images"] == 12  # the 3 test images were dropped


def test_failed_validation_leaves_no_artifact(plain_run: Path, tmp_path: Path) -> None:
    from edgecls.export import api, fallback, sources
    from edgecls.export.formats import FORMATS
    from edgecls.export.gate import Gate
    from edgecls.export.validate import Holdout

    source = sources.load_source(plain_run)
    images = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    wrong = np.roll(np.eye(10, dtype=np.float32)[np.arange(6) % 10], 1, axis=1)  # not what the model says
    job = api._Job(source, tmp_path, None, Holdout(images, None, wrong, "test"), None, Gate(), fallback.Budget(0, 0, 0), {}, None, {})
    result = api._export_one(job, FORMATS["tflite"], "fp32")
    assert not result.passed and result.error is not None and "failed validation" in result.error
    assert result.validation is not None and result.validation.failures and not result.validation.passed
    assert not (tmp_path / "tflite-fp32").exists()  # never published: kept aside with its report
    aside = tmp_path / "tflite-fp32.rejected"
    assert f"kept aside in {aside}" in result.error and (aside / "model.tflite").is_file() and (aside / OUTPUT_MARKER).is_file()
    assert json.loads((aside / "export_report.json").read_text())["validation"]["passed"] is False
    _no_leftovers(tmp_path)


def test_zoo_model_exports_with_builtin_calibration(tmp_path: Path) -> None:
    """Calibration and held-out images come from different built-in photos; --calib-size caps the calibration crops;
    the default gate judges the (unlabelled) held-out crops by agreement."""
    result = run_cli("export", "efficientnet_lite0", "--int8", "--target", "tflite", "--calib-size", "24", "--out", tmp_path / "zoo",
                     "--json", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zoo"]  # the manifest went to zoo/calibration/, not ./calibration
    manifest = json.loads((tmp_path / "zoo" / "calibration" / "manifest.json").read_text())
    report = _exported(result.stdout)["tflite-int8"]
    validation, calibration = report["validation"], report["calibration"]
    assert calibration["images"] == manifest["count"] == 24
    calibrated = {entry["file"].split("#")[0] for entry in manifest["files"]}
    judged = validation["source"].split(": ", 1)[1].split(" (")[0].split(", ")  # "built-in photos (...): a, b (32 crops ...)"
    assert calibrated and judged and not calibrated & set(judged), (calibrated, judged)
    assert "photos that did not calibrate" in validation["source"] and "accuracy_drop" not in validation
    assert validation["agreement_gated"] >= 0.9 and report["gate"]["passed"] and report["gate"]["max_drop"] == 0.01
    assert report["size_ratio_vs_fp32_weights"] <= 0.35
    assert calibration["source"].startswith("built-in photos")


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
        (["{run}", "--int8", "--calib-size", "5"], ["--calib-size 5"]),
        (["{run}", "--int8", "--io", "int16"], ["--io 'int16'"]),
        (["/nonexistent/run", "--int8"], ["/nonexistent/run"]),
        (["{fileinstead}", "--int8"], ["is a file"]),
    ],
)
def test_bad_export_inputs(args: list[str], fragments: list[str], plain_run: Path, tmp_path: Path) -> None:
    file_instead = tmp_path / "model.tflite"
    file_instead.write_bytes(b"junk")
    paths = {"run": plain_run, "fileinstead": file_instead}
    out = tmp_path / "out"
    result = run_cli("export", *[a.format(**paths) for a in args], "--out", out, cwd=tmp_path)
    assert_clean_error(result, *fragments)
    assert not out.exists() or not any(out.iterdir())


def test_a_calibration_set_too_small_is_refused_before_tensorflow_loads(plain_run: Path, tmp_path: Path) -> None:
    """A run's calibration set is built from meta.json and splits.json before the model loads: a --calib folder with 0, only
    unreadable, too few, or too few once the run's val/test images are dropped, and a train split without 10 readable images,
    are one line with TensorFlow blocked (seconds, not a TensorFlow import), and nothing is written."""
    overlap = tmp_path / "overlap"
    overlap.mkdir()
    splits = json.loads((plain_run / "splits.json").read_text())
    for i, (rel, _) in enumerate(splits["train"][:9] + splits["test"][:3]):
        shutil.copy(Path(splits["root"]) / rel, overlap / f"{i}.png")
    cases = [(_bad_calib(tmp_path, "empty"), "has 0 usable images (0 image files, 0 unreadable)"),
             (_bad_calib(tmp_path, "undecodable"), "has 0 usable images (12 image files, 12 unreadable)"),
             (_bad_calib(tmp_path, "few"), "has 3 usable images (3 image files, 0 unreadable)"),
             (overlap, "has 9 usable images (12 image files, 0 unreadable, 3 also in the run's val/test splits)")]
    for calib, fragment in cases:
        out = tmp_path / f"out-{calib.name}"
        assert_clean_error(run_cli_without_tensorflow("export", plain_run, "--int8", "--calib", calib, "--out", out, cwd=tmp_path),
                           f"--calib '{calib}' {fragment}; at least 10 are needed")
        assert not out.exists()
    run = copy_run(plain_run, tmp_path / "run")
    shutil.rmtree(run / "export", ignore_errors=True)
    splits["train"] = [[f"gone/{i}.png", 0] for i in range(20)]
    (run / "splits.json").write_text(json.dumps(splits))
    assert_clean_error(run_cli_without_tensorflow("export", run, "--int8", "--target", "onnx", cwd=tmp_path),
                       f"the training split of '{run}' has only 0 readable images for calibration")
    assert not (run / "export").exists() and list(tmp_path.glob("calibration")) == []


def test_predict_on_an_export_folder_and_io_only_for_tflite(plain_run: Path, tmp_path: Path, fmnist_tree: Path) -> None:
    out = tmp_path / "exp"
    old = out / "tflite-int8"  # no output marker: the user's folder, whatever its files are named
    old.mkdir(parents=True)
    (old / "model.tflite").write_bytes(b"old")
    (old / "meta.json").write_text("{}")
    assert_clean_error(run_cli("export", plain_run, "--int8", "--target", "tflite", "--out", out, cwd=tmp_path),
                       f"'{old}' was not made by edgecls")
    assert sorted(p.name for p in old.iterdir()) == ["meta.json", "model.tflite"] and (old / "model.tflite").read_bytes() == b"old"
    shutil.rmtree(old)
    old.mkdir()  # an empty folder is replaced
    exported = run_cli("export", plain_run, "--int8", "--target", "tflite", "--out", out, cwd=tmp_path)
    assert exported.returncode == 0, exported.output
    assert (old / OUTPUT_MARKER).is_file() and (old / "model.tflite").stat().st_size > 1000
    image = sorted((fmnist_tree / "test" / "Bag").glob("*.png"))[0]
    result = run_cli("predict", out / "tflite-int8", image, "--json")
    assert result.returncode == 0, result.output
    assert len(json.loads(result.stdout)[0]["top"]) == 5
    assert_clean_error(run_cli("export", plain_run, "--int8", "--target", "onnx", "--io", "int8", "--out", out, cwd=tmp_path),
                       "--io int8 only applies to tflite")


def test_outputs_that_would_hold_or_replace_inputs_are_refused(plain_run: Path, tmp_path: Path) -> None:
    """Before any work: --calib inside RUN/export/tflite-int8 (replacing that folder would delete it), --out inside
    --calib, and an existing folder that edgecls did not make."""
    run = tmp_path / "run"
    shutil.copytree(plain_run, run, ignore=shutil.ignore_patterns("export"))
    calib = run / "export" / "tflite-int8" / "calib"
    calib.mkdir(parents=True)
    splits = json.loads((run / "splits.json").read_text())
    for i, (rel, _) in enumerate(splits["train"][:12]):
        shutil.copy(Path(splits["root"]) / rel, calib / f"{i}.png")
    assert_clean_error(run_cli("export", run, "--int8", "--calib", calib, cwd=tmp_path),
                       f"export folder tflite-int8 '{run / 'export' / 'tflite-int8'}' contains the input --calib '{calib}'")
    assert_clean_error(run_cli("export", run, "--int8", "--calib", calib, "--out", calib / "exports", cwd=tmp_path),
                       "lies inside the input --calib", "Choose an output path outside the command's inputs")
    assert len(list(calib.iterdir())) == 12 and not (calib / "exports").exists()
    mine = tmp_path / "exp" / "tflite-fp32"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    assert_clean_error(run_cli("export", run, "--out", tmp_path / "exp", cwd=tmp_path), "was not made by edgecls")
    assert (mine / "notes.txt").read_text() == "mine"


def test_temp_folder_of_a_killed_export_is_swept_by_the_next(plain_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    proc = subprocess.Popen([sys.executable, "-c", "from edgecls.cli.app import main; main()", "export", str(plain_run), "--out", str(out)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and not (out.is_dir() and any(out.glob(f"{TEMP_PREFIX}*"))):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = list(out.glob(f"{TEMP_PREFIX}*"))
    assert left and not (out / "tflite-fp32").exists()  # SIGKILL runs no clean-up
    result = run_cli("export", plain_run, "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert not any(p.exists() for p in left) and (out / "tflite-fp32" / "model.tflite").is_file()


def test_openvino_export_sends_no_telemetry_and_leaves_home_alone(plain_run: Path, tmp_path: Path) -> None:
    """OpenVINO's converter and NNCF report usage to Google Analytics and write ~/intel/ unless told they run in CI:
    an offline tool must do neither (a Ctrl-C once printed the telemetry sender's failed-request tracebacks)."""
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "ov"
    result = run_cli("export", plain_run, "--int8", "--target", "openvino", "--max-drop", "none", "--min-agreement", "0.5",
                     "--fallback-layers", "0", "--out", out, cwd=tmp_path,
                     env={"HOME": str(home), "CI": "false"})
    assert result.returncode == 0, result.output
    assert (out / "openvino-int8" / "model.xml").is_file()
    assert not (home / "intel").exists(), sorted(str(p) for p in home.rglob("*"))
