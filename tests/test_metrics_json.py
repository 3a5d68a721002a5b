"""Undefined metrics (ROC-AUC on one class, P/R/F1 of a class with no images or no predictions, anything without
images) are None: strict JSON (null, never NaN) in every report edgecls writes or prints."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecls.metrics import classification_report, roc_auc_binary, top_k_accuracy
from tests.conftest import run_cli
from tests.test_train_out_folder import two_class_tree


def _strict(text: str) -> object:
    """json.loads that refuses NaN and Infinity, as JavaScript's JSON.parse and Go's encoding/json do."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))


@pytest.mark.parametrize("label", [0, 1])
def test_roc_auc_of_one_class_is_none(label: int) -> None:
    assert roc_auc_binary(np.full(4, label), np.array([0.1, 0.4, 0.35, 0.8])) is None


def test_one_class_report_is_strict_json() -> None:
    y_true = np.zeros(4, np.int64)
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])  # one image predicted as b
    report = classification_report(y_true, scores, ["a", "b"])
    json.dumps(report, allow_nan=False)
    per = {c["label"]: c for c in report["per_class"]}
    assert report["roc_auc"] is None and report["accuracy"] == 0.75
    assert per["a"] == {"label": "a", "precision": 1.0, "recall": 0.75, "f1": pytest.approx(6 / 7), "support": 4}
    assert per["b"] == {"label": "b", "precision": 0.0, "recall": None, "f1": 0.0, "support": 0}  # b predicted once, wrongly
    assert report["macro"] == {"precision": 1.0, "recall": 0.75, "f1": pytest.approx(6 / 7)}  # over classes with images


def test_class_without_images_or_predictions_is_none_not_zero() -> None:
    report = classification_report(np.array([0, 0, 1]), np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.4, 0.6, 0.0]]), ["a", "b", "c"])
    json.dumps(report, allow_nan=False)
    assert report["per_class"][2] == {"label": "c", "precision": None, "recall": None, "f1": None, "support": 0}
    assert report["macro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_never_predicted_class_has_no_precision_and_averages_count_it_as_zero() -> None:
    report = classification_report(np.array([0, 1]), np.array([[0.9, 0.1], [0.8, 0.2]]), ["a", "b"])
    json.dumps(report, allow_nan=False)
    per = {c["label"]: c for c in report["per_class"]}
    assert per["b"] == {"label": "b", "precision": None, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["macro"]["precision"] == 0.25 and report["weighted"]["precision"] == 0.25  # (0.5 + 0) / 2, as ever
    assert report["roc_auc"] == 1.0  # b scores higher on b's image: both classes present, so defined


def test_report_without_images_is_strict_json() -> None:
    report = classification_report(np.zeros(0, np.int64), np.zeros((0, 2)), ["a", "b"])
    json.dumps(report, allow_nan=False)
    assert report["accuracy"] is None and report["roc_auc"] is None and report["top_k"] == {"top1": None}
    assert set(report["macro"].values()) == {None} and set(report["weighted"].values()) == {None}
    assert top_k_accuracy(np.zeros(0, np.int64), np.zeros((0, 3)), 3) is None


# ----------------------------------------------------------------------------- the real CLI

@pytest.fixture(scope="module")
def two_class_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny 2-class plain_cnn run, and a labelled folder holding only class a's images."""
    root = tmp_path_factory.mktemp("two_class")
    data, run = two_class_tree(root / "data"), root / "run"
    result = run_cli("train", "--data", data, "--model", "plain_cnn", "--img-size", "16", "--epochs", "1",
                     "--fine-tune-epochs", "0", "--out", run)
    assert result.returncode == 0, result.output
    subset = root / "subset"
    shutil.copytree(data / "a", subset / "a")
    return run, subset


@pytest.mark.slow
def test_eval_json_on_one_class_subset_is_strict_json(two_class_run: tuple[Path, Path]) -> None:
    run, subset = two_class_run
    result = run_cli("eval", run, "--data", subset, "--json")
    assert result.returncode == 0, result.output
    printed = _strict(result.stdout)
    written = _strict((run / "eval_data_metrics.json").read_text())
    for report in (printed, written):
        assert isinstance(report, dict) and report["roc_auc"] is None and report["num_images"] == 6
        assert report["per_class"][1]["recall"] is None and report["per_class"][1]["support"] == 0
    assert _strict((run / "metrics.json").read_text())  # the run's own report: strict JSON too


@pytest.mark.slow
def test_eval_screen_on_one_class_subset_shows_n_a(two_class_run: tuple[Path, Path]) -> None:
    run, subset = two_class_run
    result = run_cli("eval", run, "--data", subset)
    assert result.returncode == 0 and "Traceback" not in result.output, result.output
    assert "ROC-AUC n/a" in result.output and "None" not in result.output and "nan" not in result.output
