"""The Raspberry Pi AI Camera (Sony IMX500) target: the toolchain venv and its errors, the per-backbone record, the
conversion of a real run with MCT's simulated accuracy, and the camera side's tensor-to-classes step.

The conversion test needs Sony's toolchain venv (scripts/imx500_env.sh makes it from PyPI, about 2.3 GB) and Java 17
(scripts/setup.sh); it skips only when the venv cannot be created (offline), with the reason.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgecls.camera.sources import CameraError
from edgecls.errors import ConfigError, ExportError
from edgecls.export.formats import plan_exports
from edgecls.meta import ModelMeta
from tests.conftest import assert_clean_error, run_cli

LABELS = ["cat", "dog", "bird"]


# ----------------------------------------------------------------------------- the record and the plan (no toolchain)
def test_models_say_per_backbone_whether_it_converts() -> None:
    result = run_cli("models", "--json")
    assert result.returncode == 0, result.output
    fits = {row["name"]: row["imx500"] for row in json.loads(result.stdout)}
    for name in ("mobilenet_v2", "efficientnet_lite0", "mobilenet_v3_small_minimalistic", "plain_cnn"):
        assert fits[name]["converts"] and fits[name]["note"], name
    for name, why in (("mobilenet_v3_small", "hard-swish"), ("efficientnet_b0", "Rescaling"), ("resnet50", "307%")):
        assert not fits[name]["converts"] and why in fits[name]["reason"] and "mobilenet_v2" in fits[name]["fix"], name
    table = run_cli("models")
    assert "IMX500" in table.stdout and "no: hard-swish" in table.stdout


def test_imx500_is_named_only_never_part_of_all() -> None:
    assert "imx500" not in [fmt.name for fmt, _ in plan_exports("all", "int8")]
    assert [(fmt.name, precision) for fmt, precision in plan_exports("imx500", None)] == [("imx500", "int8")]
    with pytest.raises(ConfigError, match="target imx500 cannot export precision fp16"):
        plan_exports("imx500", "fp16")


def test_a_backbone_that_does_not_map_is_refused_before_any_work(tmp_path: Path) -> None:
    from edgecls.export.base import ExportRequest
    from edgecls.export.imx500 import export_imx500

    meta = ModelMeta(architecture="resnet50", input_size=(224, 224), labels=LABELS)
    with pytest.raises(ConfigError, match=r"resnet50 does not convert for the IMX500: does not fit .* Train mobilenet_v2"):
        export_imx500(ExportRequest(model=None, meta=meta, precision="int8", out_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_memory_report_and_converter_refusal_are_read(tmp_path: Path) -> None:
    from edgecls.export.imx500 import _converter_failure, read_memory_report

    report = {"Memory Report": {"Name": "m", "Memory Usage": "298.53KB", "Total Memory Available On Chip": "8.00MB",
                                "Memory Utilization": "49%", "Fit In Chip": True}}  # imxconv-tf 3.18.2's layout
    (tmp_path / "m_MemoryReport.json").write_text(json.dumps(report))
    memory = read_memory_report(tmp_path)
    assert (memory["usage_percent"], memory["fits"], memory["total"]) == (49.0, True, "8.00MB")
    log = tmp_path / "imxconv.log"
    log.write_text("INFO : Starting SDSPconv\nERROR : Not enough memory: the network needs 307% of the available memory\n")
    error = _converter_failure(log, 1, "resnet50")
    assert "resnet50 does not fit the IMX500's memory" in str(error) and "307%" in str(error) and "--alpha 0.35" in str(error)


# ----------------------------------------------------------------------------- the toolchain's errors
def test_missing_java_is_one_line_with_the_apt_package(plain_run: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bin"  # a PATH with no java on it
    bare.mkdir()
    out = tmp_path / "exp"
    result = run_cli("export", plain_run, "--target", "imx500", "--out", out, env={"PATH": str(bare)})
    assert_clean_error(result, "needs Java 17", "apt-get install openjdk-17-jre-headless")
    assert not (out / "imx500-int8").exists()


@pytest.mark.slow
def test_a_failed_pip_is_one_line_and_leaves_no_usable_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecls.export import imx500_toolchain as toolchain

    for name, value in (("PIP_NO_INDEX", "1"), ("PIP_FIND_LINKS", str(tmp_path)), ("PIP_RETRIES", "0")):
        monkeypatch.setenv(name, value)  # no package source at all: pip fails at once, as offline
    root = tmp_path / "imx500-test"
    with pytest.raises(ExportError, match=r"cannot pip install edge-mdt\[tf\]==1\.3\.0.*Check the connection to PyPI"):
        toolchain.ensure_toolchain(root=root)
    assert toolchain.ready(root) is None  # no stamp: the next export removes it and starts again


# ----------------------------------------------------------------------------- the conversion (toolchain venv)
@pytest.fixture(scope="module")
def toolchain() -> object:
    from edgecls.export.imx500_toolchain import ensure_toolchain, ready

    found = ready()
    if found is None:
        try:
            found = ensure_toolchain(lambda message: print(message, file=sys.stderr))
        except ExportError as exc:
            pytest.skip(f"the IMX500 toolchain venv cannot be created here: {exc}")
    return found


@pytest.mark.slow
def test_plain_run_converts_and_its_simulation_passes_the_default_gate(plain_run: Path, tmp_path: Path, toolchain: object) -> None:
    """`edgecls export RUN --int8 --target imx500`: the run's network rebuilt in the toolchain venv (the float rebuild within
    1e-4 of Keras), quantized by MCT, converted by imxconv-tf into packerOut.zip, and MCT's simulation of the IMX500 judged
    on the held-out test split by the default gate (agreement >= 0.9, accuracy drop <= 1 point)."""
    out = tmp_path / "exp"
    result = run_cli("export", plain_run, "--int8", "--target", "imx500", "--out", out, "--json")
    assert result.returncode == 0, result.output
    [report] = json.loads(result.stdout)
    folder = out / "imx500-int8"
    assert report["passed"] and report["folder"] == str(folder) and report["gate"]["passed"]
    assert zipfile.is_zipfile(folder / "packerOut.zip")
    for name in ("memory_report.json", "labels.txt", "meta.json", "export_report.json", "mct_quantized.keras"):
        assert (folder / name).is_file(), name
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["format"], meta["precision"]) == ("imx500", "int8")
    assert (folder / "labels.txt").read_text().split() == meta["labels"]
    notes, validation = report["notes"], report["validation"]
    assert notes["float_rebuild_max_abs_diff"] < 1e-4
    usage = notes["sensor_memory"]["usage_percent"]
    assert 0 < usage < 100 and notes["sensor_memory"]["fits"] is True
    assert validation["precision_ran"] == "int8 (MCT simulation of the IMX500)" and validation["images"] == 80
    assert validation["top1_agreement"] >= 0.9 and validation["accuracy_drop"] <= 0.01
    assert validation["integer_check"] == {"integer": True, "converter_accepted": True, "sensor_memory_percent": usage}


# ----------------------------------------------------------------------------- the camera side (no picamera2 here)
def test_output_tensor_becomes_labelled_classes() -> None:
    from edgecls.camera.imx500 import classes_of, output_scores

    probabilities = [np.array([[0.1, 0.7, 0.2]], dtype=np.float32)]  # a softmax head, as edgecls exports it
    assert np.allclose(output_scores(probabilities, 3), [0.1, 0.7, 0.2])
    logits = [np.array([1.0, 3.0, -2.0], dtype=np.float32)]  # a network without softmax: edgecls applies it
    scores = output_scores(logits, 3)
    assert abs(float(scores.sum()) - 1) < 1e-6 and scores.argmax() == 1
    best = classes_of(probabilities, LABELS, k=2)
    assert [(c.label, round(c.score, 3)) for c in best] == [("dog", 0.7), ("bird", 0.2)]


def test_wrong_network_or_missing_tensor_is_one_line() -> None:
    from edgecls.camera.imx500 import output_scores

    with pytest.raises(CameraError, match="outputs 1000 values, the model has 3 labels"):
        output_scores([np.zeros(1000, np.float32)], 3)
    with pytest.raises(CameraError, match="no output tensor"):
        output_scores(None, 3)
    with pytest.raises(CameraError, match="NaN"):
        output_scores([np.array([np.nan, 0, 1], np.float32)], 3)


def test_labels_come_from_the_export_beside_the_rpk(tmp_path: Path) -> None:
    from edgecls.camera.imx500 import Imx500Reader, labels_beside

    network = tmp_path / "network.rpk"
    network.write_bytes(b"rpk")
    with pytest.raises(CameraError, match="no labels beside"):
        labels_beside(network)
    (tmp_path / "labels.txt").write_text("a\nb\n")
    assert labels_beside(network) == ["a", "b"]
    ModelMeta(architecture="plain_cnn", input_size=(32, 32), labels=LABELS).save(tmp_path)
    assert labels_beside(network) == LABELS  # meta.json wins
    with pytest.raises(CameraError, match="is not a network.rpk file"):
        Imx500Reader(tmp_path / "packerOut.zip")
    if importlib.util.find_spec("picamera2") is None:  # not installable here (apt's python3-picamera2 on a Pi)
        with pytest.raises(CameraError, match="picamera2 with IMX500 support is not installed"):
            Imx500Reader(network)
