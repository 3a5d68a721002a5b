"""Integration tests: the real `edgecls train / eval / predict / models / doctor` on real Fashion-MNIST files."""
from __future__ import annotations

import csv
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

from tests.conftest import BLOCK_TENSORFLOW, REPO, assert_clean_error, plain_train_args, run_cli

pytestmark = pytest.mark.slow


def _some_images(tree: Path, n: int) -> list[Path]:
    return sorted((tree / "test").rglob("*.png"))[:: 7][:n]


def test_run_folder_contents(plain_run: Path) -> None:
    for name in ("model.keras", "meta.json", "history.csv", "metrics.json", "curves.png", "splits.json", "confusion_matrix.png",
                 "confusion_matrix.csv", "state.json", ".edgecls-output"):
        assert (plain_run / name).is_file(), name
    assert not (plain_run / "checkpoint.npz").exists()
    meta = json.loads((plain_run / "meta.json").read_text())
    assert meta["architecture"] == "plain_cnn" and meta["input_size"] == [32, 32] and len(meta["labels"]) == 10
    assert meta["dataset"]["fingerprint"] and meta["training"]["epochs"] == 3 and meta["versions"]["tensorflow-cpu"]
    rows = list(csv.DictReader((plain_run / "history.csv").open()))
    assert [r["phase"] for r in rows] == ["head"] * 3 + ["fine_tune"]
    assert json.loads((plain_run / "state.json").read_text())["phase"] == "done"
    assert Image.open(plain_run / "curves.png").size[0] > 100


def test_eval_of_own_splits_and_of_a_folder_each_keep_their_report(plain_run: Path, fmnist_tree: Path, tmp_path: Path) -> None:
    """`edgecls eval RUN` (its test split, --json), `--split val` and `--data DIR` (the table): each writes its own
    eval_*metrics.json, confusion matrix PNG and CSV, and never overwrites the test split's report."""
    run = shutil.copytree(plain_run, tmp_path / "run")
    result = run_cli("eval", run, "--json")
    assert result.returncode == 0, result.output
    report = json.loads(result.stdout)
    assert report["num_images"] == 80 and 0.0 <= report["accuracy"] <= 1.0
    assert len(report["per_class"]) == 10 and np.asarray(report["confusion_matrix"]).sum() == 80
    assert (run / "eval_confusion_matrix.png").is_file()
    test_report = (run / "eval_metrics.json").read_bytes()
    assert json.loads(test_report)["source"] == f"test split of {run}"
    others = ((["--split", "val"], "eval_val_", f"val split of {run}"), (["--data", fmnist_tree], "eval_data_", str(fmnist_tree / "test")))
    for args, prefix, source in others:
        result = run_cli("eval", run, *args)
        assert result.returncode == 0, result.output
        assert json.loads((run / f"{prefix}metrics.json").read_text())["source"] == source
        assert (run / f"{prefix}confusion_matrix.png").is_file() and (run / f"{prefix}confusion_matrix.csv").is_file()
        assert f"{run}/{prefix}confusion_matrix.png" in result.stdout
        assert "macro avg" in result.stdout and "accuracy" in result.stdout  # the table
    assert (run / "eval_metrics.json").read_bytes() == test_report


def test_eval_of_an_exported_artifact_without_tensorflow(plain_run: Path, plain_fp32_exports: Path, fmnist_tree: Path,
                                                         tmp_path: Path) -> None:
    """`edgecls eval model.tflite --data DIR` (the `yolo val` equivalent) runs through edgecls.runtime, TensorFlow blocked.
    The artifact: the session's `export PLAIN_RUN --target all` fp32 TFLite, copied (eval writes its report beside it). The Keras
    reference: the run's own test report (its test split is the tree's test folder, the 80 images evaluated here; `eval RUN
    --data` of the same images is tested above), no second TensorFlow process."""
    artifact = shutil.copytree(plain_fp32_exports / "tflite-fp32", tmp_path / "export" / "tflite-fp32") / "model.tflite"
    reference = json.loads((plain_run / "metrics.json").read_text())
    splits = json.loads((plain_run / "splits.json").read_text())
    assert reference["split"] == "test" and splits["root"] == str(fmnist_tree)
    test_folder = sorted(str(p.relative_to(fmnist_tree)) for p in (fmnist_tree / "test").rglob("*.png"))
    assert sorted(path for path, _ in splits["test"]) == test_folder
    for model in (artifact, artifact.parent):
        proc = subprocess.run([sys.executable, "-c", BLOCK_TENSORFLOW, "eval", str(model), "--data", str(fmnist_tree), "--json"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["num_images"] == reference["num_images"] == 80 and "litert" in report["model"]
        assert abs(report["accuracy"] - reference["accuracy"]) <= 1 / 80  # fp32 TFLite vs Keras: at most one flip
    assert json.loads((artifact.parent / "eval_data_metrics.json").read_text())["num_images"] == 80
    assert_clean_error(run_cli("eval", artifact), "exported artifact", "has no splits", "Pass --data DIR")


def test_predict_run_folder_json(plain_run: Path, fmnist_tree: Path) -> None:
    images = _some_images(fmnist_tree, 2)
    result = run_cli("predict", plain_run, *images, "--top-k", "3", "--json")
    assert result.returncode == 0, result.output
    out = json.loads(result.stdout)
    assert [Path(r["image"]) for r in out] == images
    scores = [c["score"] for c in out[0]["top"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and sum(scores) <= 1.0 + 1e-5


def test_predict_pretrained_zoo_model_on_a_real_photo(tmp_path: Path) -> None:
    data = pytest.importorskip("skimage.data")
    cat = tmp_path / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(cat, quality=95)
    result = run_cli("predict", "efficientnet_lite0", cat, "--json")
    assert result.returncode == 0, result.output
    top = json.loads(result.stdout)[0]["top"]
    assert top[0]["id"] in (281, 282, 285), top  # tabby, tiger cat, Egyptian cat


def test_efficientnet_lite0_fine_tunes_offline(fmnist_tree: Path, tmp_path: Path) -> None:
    """The default model (Lite0, its offline ImageNet weights) through both phases; 32 px, its smallest input, is enough."""
    run = tmp_path / "lite"
    result = run_cli("train", "--data", fmnist_tree, "--img-size", "32", "--epochs", "4", "--fine-tune-epochs", "1",
                     "--unfreeze", "20", "--batch", "16", "--out", run)
    assert result.returncode == 0, result.output
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert float(rows[-2]["loss"]) < float(rows[0]["loss"])  # the head learned
    assert f"run folder: {run}" in result.stdout
    meta = json.loads((run / "meta.json").read_text())
    assert meta["mean"] == [127.0] * 3 and meta["std"] == [128.0] * 3


def test_same_seed_same_split_and_history(plain_run: Path, fmnist_tree: Path, tmp_path: Path) -> None:
    """The shared plain run's command (conftest plain_train_args: both phases, seed 1) run again gives the same split and history."""
    again = tmp_path / "again"
    assert run_cli(*plain_train_args(fmnist_tree, again)).returncode == 0
    for name in ("splits.json", "history.csv"):
        assert (again / name).read_text() == (plain_run / name).read_text(), name


def test_interrupt_then_resume(fmnist_tree: Path, tmp_path: Path) -> None:
    """Ctrl-C: exit 130, a checkpoint, no model; --resume finishes the run. Head phase only: test_resume.py resumes a run killed
    in each phase (and across the switch to fine-tuning)."""
    run = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from edgecls.cli.app import main; main()", "train", "--data", str(fmnist_tree), "--model", "plain_cnn",
         "--img-size", "16", "--epochs", "300", "--patience", "0", "--no-feature-cache", "--fine-tune-epochs", "0", "--out", str(run)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        state = run / "state.json"
        if state.is_file() and json.loads(state.read_text()).get("epochs_done", 0) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and (run / "checkpoint.npz").is_file() and not (run / "model.keras").exists()
    state = json.loads((run / "state.json").read_text())
    state["config"]["epochs"] = state["epochs_done"] + 1  # shorten the rest of the run for the test
    (run / "state.json").write_text(json.dumps(state))
    resumed = run_cli("train", "--resume", run)
    assert resumed.returncode == 0, resumed.output
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows if r["phase"] == "head"] == list(range(1, state["epochs_done"] + 2))
    assert (run / "model.keras").is_file() and not (run / "checkpoint.npz").exists()


def test_corrupt_image_is_skipped_with_a_warning_and_mirrored_strategy_trains_on_two_logical_cpus(fmnist_tree: Path,
                                                                                                 tmp_path: Path) -> None:
    """Two promises, one training (each run costs a TensorFlow start): an undecodable image is skipped with a warning,
    and --strategy mirrored trains both phases with 2 replicas."""
    tree = tmp_path / "tree"
    shutil.copytree(fmnist_tree / "train", tree)
    (tree / "Bag" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    run = tmp_path / "run"
    result = run_cli("train", "--data", tree, "--model", "plain_cnn", "--img-size", "16", "--epochs", "1", "--fine-tune-epochs", "1",
                     "--strategy", "mirrored", "--out", run)
    assert result.returncode == 0, result.output
    assert "skipped 1 unreadable" in result.output
    assert json.loads((run / "meta.json").read_text())["training"]["replicas"] == 2
    assert [r["phase"] for r in csv.DictReader((run / "history.csv").open())] == ["head", "fine_tune"]


def _tree(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (20, 20), (i * 20, 0, 0)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["train", "--data", "/nonexistent/tree"], ["/nonexistent/tree"]),
        (["train", "--data", "{tree}", "--model", "efficientnet_lite"], ["efficientnet_lite", "Did you mean 'efficientnet_lite0'"]),
        # a too small --img-size: test_train_safety.py::test_failed_start_leaves_no_run_folder (the same run, and the folder check)
        (["train", "--data", "{tree}", "--epochs", "0"], ["--epochs 0"]),
        (["train", "--data", "{tree}", "--optimizer", "adamw"], ["adamw"]),
        (["train", "--data", "{one}"], ["at least 2 classes"]),
        (["train", "--data", "{empty}", "--model", "plain_cnn"], ["empty"]),
        (["eval", "/nonexistent/run"], ["/nonexistent/run"]),
        (["predict", "no_such_model", "x.png"], ["no_such_model"]),
        (["predict", "{run}", "/nonexistent/image.png"], ["/nonexistent/image.png"]),
        (["train", "--resume", "{tree}"], ["state.json"]),
    ],
)
def test_bad_inputs_give_one_clean_line(args: list[str], fragments: list[str], tmp_path: Path, plain_run: Path) -> None:
    paths = {
        "tree": _tree(tmp_path / "tree", {"a": 3, "b": 3}),
        "one": _tree(tmp_path / "one", {"only": 3}),
        "empty": _tree(tmp_path / "empty", {"a": 3, "b": 0}),
        "run": plain_run,
    }
    filled = [a.format(**paths) for a in args]
    out = tmp_path / "out"
    result = run_cli(*filled, *(["--out", out] if filled[0] == "train" and "--resume" not in filled else []))
    assert_clean_error(result, *fragments)
    assert not (out / "model.keras").exists()


def test_models_and_doctor() -> None:
    listing = run_cli("models", "--json")
    assert listing.returncode == 0
    names = {m["name"]: m for m in json.loads(listing.stdout)}
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
            "efficientnet_b0", "resnet50", "densenet121", "inception_v3", "vgg16", "plain_cnn"} <= set(names)
    assert names["efficientnet_lite0"]["offline_weights_installed"] is True
    doctor = run_cli("doctor", "--json")
    assert doctor.returncode == 0 and "CPU" in json.loads(doctor.stdout)["tensorflow devices"]
