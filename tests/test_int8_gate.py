"""The INT8 accuracy gate, the per-layer sensitivity report and the float fallback, proved on a model that
really quantizes badly: the session's plain_cnn run with one channel scaled by 1000 after `pool1` (and the
next convolution compensating), which computes the same function in float and collapses in full-integer
INT8 on every target. Pure-numpy parts (the measure, the candidates, the gate's arithmetic) run without
models; the rest exports in-process, one small model per target."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecls.errors import ConfigError
from edgecls.export.gate import Agreement, Gate, agreement_and_drop
from edgecls.export.report import LayerSensitivity, SensitivityReport
from edgecls.export.sensitivity import Node, fallback_nodes, measure
from edgecls.quantize.outlier import OUTLIER_LAYER
from tests.conftest import assert_clean_error, run_cli, run_cli_without_tensorflow

# plain_run is a 25%-accuracy model whose probabilities are nearly flat: its ordinary INT8 already flips a few
# near-tied images (onnx 0.89 agreement). These thresholds pass every target's ordinary INT8 and fail the
# collapsed one (agreement 0.10), so each test checks the fallback, not plain_run's near-ties.
TEST_GATE = {"max_drop": 0.10, "min_agreement": 0.8}


# ----------------------------------------------------------------------------- no models
def _quantize_per_tensor(x: np.ndarray) -> np.ndarray:
    step = (x.max() - x.min()) / 255
    return np.round((x - x.min()) / step) * step + x.min()


def test_measure_finds_the_channel_that_per_tensor_int8_erases() -> None:
    rng = np.random.default_rng(0)
    normal = rng.normal(0, 1, (16, 8, 8, 4)).astype(np.float32)
    wide = normal.copy()
    wide[..., 0] *= 1000  # one channel's range 1000x the others': per-tensor int8 rounds the rest to zero
    nodes = [Node("a", "a", "CONV_2D", [], True, True), Node("b", "b", "CONV_2D", ["a"], True, True),
             Node("c", "c", "CONV_2D", ["b"], True, True)]
    outputs = [{"a": (normal[i], _quantize_per_tensor(normal[i])), "b": (wide[i], _quantize_per_tensor(wide[i])),
                "c": (normal[i], normal[i] + 0.5)} for i in range(16)]
    layers = {layer.name: layer for layer in measure(nodes, outputs)}
    assert layers["a"].error < 0.05 and layers["b"].error > 0.7  # per channel: 3 of 4 channels are gone
    assert layers["b"].rmse_per_step is not None and layers["b"].rmse_per_step < 1  # what per-tensor RMSE/scale would miss
    assert layers["b"].added > 0.7 and layers["c"].added < 0  # c's error is inherited from b, not added
    assert layers["b"].float_nodes == ("b", "c")  # b's output stays float only if its consumer is float too


def test_fallback_nodes_walk_to_the_ops_with_weights() -> None:
    nodes = [Node("conv1", "", "Conv", [], True, True), Node("relu1", "", "Relu", ["conv1"], False, True),
             Node("pool1", "", "MaxPool", ["relu1"], False, True), Node("conv2", "", "Conv", ["pool1"], True, True),
             Node("out", "", "Softmax", ["conv2"], False, True, fixed=True)]
    assert fallback_nodes(nodes[1], nodes) == ("relu1", "conv1", "pool1", "conv2")
    assert fallback_nodes(nodes[4], nodes) == ()  # an integer model output: --io decides, not the fallback


def test_candidates_grow_along_the_ranking_within_the_layer_budget() -> None:
    from edgecls.export.fallback import candidates

    def layer(name: str, added: float, nodes: tuple[str, ...], index: int) -> LayerSensitivity:
        return LayerSensitivity(name, name, "Conv", index, added, added, 0.0, None, nodes)

    report = SensitivityReport("onnx", "", 8, [layer("a", 0.9, ("a", "b"), 0), layer("big", 0.5, ("c", "d", "e", "f"), 1),
                                               layer("g", 0.2, ("g",), 2), layer("h", 0.1, ("h", "a"), 3),
                                               layer("zero", 0.0, ("z",), 4)])
    assert candidates(report, 8) == [(["a", "b"], ["a"]), (["a", "b", "c", "d", "e", "f"], ["a", "big"]),
                                     (["a", "b", "c", "d", "e", "f", "g", "h"], ["a", "big", "g", "h"])]
    assert candidates(report, 4) == [(["a", "b"], ["a"]), (["a", "b", "g"], ["a", "g"]), (["a", "b", "g", "h"], ["a", "g", "h"])]
    assert candidates(report, 1) == [(["g"], ["g"])]  # the layers that do not fit are passed over
    assert candidates(report, 0) == []


def test_gate_reads_decisive_agreement_and_the_drop() -> None:
    reference = np.array([[0.9, 0.1], [0.8, 0.2], [0.51, 0.49], [0.2, 0.8]] * 5)  # 15 decisive, 5 near-ties
    flipped_ties = reference[:, ::-1].copy()
    flipped_ties[[i for i in range(20) if i % 4 != 2]] = reference[[i for i in range(20) if i % 4 != 2]]
    agreement, drop = agreement_and_drop(flipped_ties, reference, np.zeros(20, int))
    assert agreement.overall == 0.75 and agreement.decisive == 1.0 and agreement.decisive_images == 15
    assert Gate(0.01, 0.9).failures(agreement, None) == []  # near-ties flip between any two runtimes
    assert drop == pytest.approx(0.25)  # all labelled 0: Keras right on 3 of 4 rows of each block, the artifact on 2
    few = Agreement(overall=0.5, decisive=1.0, decisive_images=3, images=20)  # too few decisive images: all count
    assert Gate(None, 0.9).failures(few, None) == ["top-1 agreement with Keras 0.500 (on all 20 images) is below --min-agreement 0.9"]
    assert Gate(0.01, None).failures(few, 0.02) == ["accuracy drop 2.00 points exceeds --max-drop 1.00 points"]
    assert Gate(None, None).failures(few, 0.5) == []


def test_edgetpu_never_takes_float_layers(tmp_path: Path) -> None:
    """A TFLite fallback (float layers) is no Edge TPU model: the edgetpu writer refuses float_nodes before converting."""
    from edgecls.export.base import ExportRequest
    from edgecls.export.formats import FORMATS, check_request
    from edgecls.meta import ModelMeta

    request = ExportRequest(None, ModelMeta("plain_cnn", (8, 8), ["a", "b"]), "int8", tmp_path, float_nodes=("conv",))
    with pytest.raises(ConfigError, match="edgetpu int8 cannot keep layers in float"):
        check_request(FORMATS["edgetpu"], request)
    check_request(FORMATS["tflite"], request)
    with pytest.raises(ConfigError, match="tflite fp16 cannot keep layers in float"):
        check_request(FORMATS["tflite"], ExportRequest(None, request.meta, "fp16", tmp_path, float_nodes=("conv",)))


def test_judging_tuning_and_calibration_images_never_overlap(plain_run: Path) -> None:
    from edgecls.export import sources
    from edgecls.meta import ModelMeta
    from edgecls.quantize.calibration import from_run_train_split

    (_, judging), (tuning_name, tuning) = sources._run_splits(plain_run, seed=0)
    calibration = from_run_train_split(plain_run, ModelMeta.load(plain_run / "meta.json"), 300)
    judged = {str(p) for p in judging.paths}
    assert judged and not judged & {str(p) for p in tuning.paths} and not judged & set(calibration.files)
    assert tuning_name.startswith("val split + ") and len(tuning.paths) == 80  # val (10) topped up from train


# ----------------------------------------------------------------------------- the model that quantizes badly
@pytest.fixture(scope="module")
def bad_run(plain_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgecls.quantize.outlier import with_outlier_channel
    from edgecls.run_folder import load_run, save_model

    run = tmp_path_factory.mktemp("outlier") / "run"
    shutil.copytree(plain_run, run, ignore=shutil.ignore_patterns("export"))
    model, _ = load_run(run)
    save_model(with_outlier_channel(model), run / "model.keras")
    return run


def test_outlier_model_keeps_the_float_function(plain_run: Path, bad_run: Path) -> None:
    from edgecls.run_folder import load_run

    images = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3)).astype(np.float32)
    (model, _), (bad, _) = load_run(plain_run), load_run(bad_run)
    assert OUTLIER_LAYER in [layer.name for layer in bad.get_layer("plain_cnn").layers]
    assert np.abs(np.asarray(model(images)) - np.asarray(bad(images))).max() < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("target", ["tflite", "onnx", "openvino"])
def test_fallback_keeps_the_outlier_float_and_passes(bad_run: Path, target: str, tmp_path: Path) -> None:
    from edgecls.export.api import export

    [result] = export(bad_run, target=target, precision="int8", out=tmp_path, **TEST_GATE)
    assert result.passed, result.error
    report = result.report
    assert report.sensitivity is not None
    worst = report.sensitivity.worst(1)[0]
    if target == "openvino":  # OpenVINO names ops by type (Convolution_93): the 1x1 outlier conv is the one after pool1
        assert worst.op == "Convolution" and worst.label.endswith("[1,64,8,8]")
    else:
        assert OUTLIER_LAYER in worst.name
    assert worst.added > 0.5 and worst.name in report.fallback.candidate.float_nodes  # type: ignore[union-attr]
    assert (result.folder / "sensitivity.png").stat().st_size > 1000  # type: ignore[operator]
    fallback = report.fallback
    assert fallback is not None and fallback.candidate is not None and fallback.candidate.passed
    assert fallback.full_int8_agreement is not None and fallback.full_int8_agreement < 0.5  # the collapse it fixed
    assert len(fallback.candidate.float_nodes) <= 8
    assert fallback.size_bytes and fallback.full_int8_size_bytes and fallback.latency_ms and fallback.full_int8_latency_ms
    assert "tuning" not in report.validation.source and "val split" in fallback.tuned_on  # type: ignore[union-attr]
    validation = report.validation
    assert validation is not None and validation.top1_agreement >= 0.8 and validation.precision_ran.startswith("int8+float fallback")
    assert validation.integer_check is not None and validation.integer_check["mixed"]
    saved = json.loads((result.folder / "export_report.json").read_text())  # type: ignore[operator]
    assert saved["fallback"]["float_nodes"] == fallback.candidate.float_nodes and saved["gate"]["passed"]
    assert not (tmp_path / f"{target}-int8.rejected").exists()


@pytest.mark.slow
def test_nothing_fits_the_budget_so_nothing_is_published(bad_run: Path, tmp_path: Path) -> None:
    from edgecls.export.api import export

    [failed] = export(bad_run, target="tflite", precision="int8", out=tmp_path, fallback_layers=1, **TEST_GATE)
    assert not failed.passed and failed.folder is None and not (tmp_path / "tflite-int8").exists()
    aside = tmp_path / "tflite-int8.rejected"
    assert failed.error and f"kept aside in {aside}" in failed.error and "Try: the fallback stopped" in failed.error
    assert {"model.tflite", "meta.json", "export_report.json", "sensitivity.png", ".edgecls-output"} <= {p.name for p in aside.iterdir()}
    kept = json.loads((aside / "export_report.json").read_text())
    assert kept["rejected"] == str(aside) and not kept["gate"]["passed"] and kept["gate"]["advice"]
    assert "passed" not in kept["fallback"]["outcome"] and kept["fallback"]["budget"]["layers"] == 1
    assert kept["validation"]["top1_agreement"] < 0.5 and not kept["validation"]["passed"]
    [published] = export(bad_run, target="tflite", precision="int8", out=tmp_path, **TEST_GATE)
    assert published.passed and not aside.exists()  # the stale rejected artifact goes once one passes


@pytest.mark.slow
def test_cli_fails_with_the_reason_and_what_to_try(bad_run: Path, tmp_path: Path) -> None:
    result = run_cli("export", bad_run, "--int8", "--fallback-layers", "0", "--out", tmp_path / "e", cwd=tmp_path)
    assert_clean_error(result, "tflite-int8 failed validation: top-1 agreement with Keras", "kept aside in",
                       "Try: let the fallback keep the most sensitive layers float")
    assert result.returncode == 1
    assert "most sensitive layers" in result.stdout and OUTLIER_LAYER in result.stdout and "NOT published" in result.stdout
    assert (tmp_path / "e" / "tflite-int8.rejected" / "model.tflite").is_file() and not (tmp_path / "e" / "tflite-int8").exists()
    assert_clean_error(run_cli("export", bad_run, "--int8", "--max-drop", "one", cwd=tmp_path), "--max-drop 'one' is not a number")
    assert_clean_error(run_cli("export", bad_run, "--int8", "--min-agreement", "1.5", cwd=tmp_path), "--min-agreement 1.5 is outside")
    assert_clean_error(run_cli("export", bad_run, "--int8", "--fallback-tries", "-1", cwd=tmp_path), "--fallback-tries -1")
    for seconds in ("nan", "inf"):  # nan compared false with every limit: the search ran unbounded
        assert_clean_error(run_cli_without_tensorflow("export", bad_run, "--int8", "--fallback-seconds", seconds, cwd=tmp_path),
                           f"--fallback-seconds {seconds}", "must be a finite number")


@pytest.mark.slow
def test_dynamic_range_is_gated_too_and_has_no_fallback(bad_run: Path, tmp_path: Path) -> None:
    """Dynamic range quantizes activations per tensor at run time: the outlier channel erases the others there too."""
    from edgecls.export.api import export

    [result] = export(bad_run, target="tflite", precision="dynamic", out=tmp_path, **TEST_GATE)
    assert not result.passed and result.report.fallback is None and result.report.sensitivity is None
    assert result.report.gate is not None and not result.report.gate.passed
    assert any("--precision fp16" in tip for tip in result.report.gate.advice)
    assert (tmp_path / "tflite-dynamic.rejected" / "model.tflite").is_file() and not (tmp_path / "tflite-dynamic").exists()
