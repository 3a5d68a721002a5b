"""Edge TPU honesty: MACs per op from the flatbuffer, the TPU share of the compute, and the default gate that refuses
a graph cut before most of it (MobileNetV3's HARD_SWISH at op 4) with the share, the op and the fix, unless CPU ops
are allowed. The minimalistic MobileNetV3 maps whole: test_zoo_exports.py exports it to every target by default, the Edge
TPU gate's report (share 1.0, no CPU op, no HARD_SWISH) included."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecls.export import edgetpu
from edgecls.zoo import get_spec, list_backbones


def _calibration(size: int, count: int = 12) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_macs_per_op_are_counted_from_the_shapes(tmp_path: Path) -> None:
    import keras

    from edgecls.export.tflite import convert

    inputs = keras.Input((16, 16, 3), name="pixels")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)  # 16*16*8 outputs x 3*3*3
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu")(x)  # 8*8*8 outputs x 3*3
    x = keras.layers.Conv2DTranspose(4, 2, strides=2, activation="relu")(x)  # 8*8*8 inputs x 2*2*4
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))  # 5 outputs x 4
    path = tmp_path / "model.tflite"
    path.write_bytes(convert(model, (16, 16), "int8", _calibration(16), "uint8"))

    report = edgetpu.edgetpu_report(path)
    macs = {op["op"]: op["macs"] for op in report["ops"]}
    assert macs["CONV_2D"] == 16 * 16 * 8 * 27
    assert macs["DEPTHWISE_CONV_2D"] == 8 * 8 * 8 * 9
    assert macs["TRANSPOSE_CONV"] == 8 * 8 * 8 * 2 * 2 * 4
    assert macs["FULLY_CONNECTED"] == 5 * 4
    assert macs["SOFTMAX"] == 5  # one per output element for every other op
    assert report["macs_total"] == sum(op["macs"] for op in report["ops"]) == report["macs_on_tpu"]
    assert report["mac_share"] == 1.0 and report["first_unsupported"] is None and report["fix"] is None
    assert "TRANSPOSE_CONV" in report["mac_method"]


# ----------------------------------------------------------------------------- the gate
def test_gate_thresholds() -> None:
    least = edgetpu.MIN_TPU_MAC_SHARE
    assert edgetpu.gate({"mac_share": 1.0}, False)["passed"]
    assert edgetpu.gate({"mac_share": least}, False)["passed"]
    refused = edgetpu.gate({"mac_share": least - 0.01}, False)
    assert not refused["passed"] and "refused" in refused["verdict"]
    accepted = edgetpu.gate({"mac_share": 0.03}, True)
    assert accepted["passed"] and accepted["allow_cpu_ops"] and "--allow-cpu-ops" in accepted["verdict"]


def test_the_fix_names_backbones_that_map_whole() -> None:
    fix = edgetpu.fix_for({"op": "HARD_SWISH", "reasons": ["HARD_SWISH is not on Coral's supported-op list"]})
    mapping = fix.split("backbones whose whole graph maps: ")[1].split(", ")
    assert {"mobilenet_v3_small_minimalistic", "mobilenet_v3_large_minimalistic", "efficientnet_lite0", "mobilenet_v2"} <= set(mapping)
    assert "mobilenet_v3_small" not in mapping and "plain_cnn" not in mapping
    assert all(get_spec(name).edgetpu.maps_fully for name in mapping)
    other = edgetpu.fix_for({"op": "GATHER", "reasons": ["GATHER is not on Coral's supported-op list"]})
    assert other.startswith("GATHER cannot run on the Edge TPU") and edgetpu.SOURCE in other


def test_every_backbone_that_does_not_map_names_its_op_and_a_replacement() -> None:
    for spec in list_backbones():
        fit = spec.edgetpu
        if fit.maps_fully:
            assert fit.first_cpu_op is None and not fit.fix, spec.name
            continue
        assert fit.first_cpu_op and fit.fix, spec.name
        named = [word.strip("(),") for word in fit.fix.split() if "_" in word]
        assert named and all(get_spec(name).edgetpu.maps_fully for name in named), (spec.name, fit.fix)


# ----------------------------------------------------------------------------- caffe-style input (BGR)
def test_bgr_flip_is_exact_and_maps_to_the_edge_tpu(tmp_path: Path) -> None:
    """ResNet50/VGG16 take BGR: ops.flip became REVERSE_V2, which cut their graphs at op 1."""
    import keras

    from edgecls.export.tflite import convert
    from edgecls.zoo.layers import InputNormalization

    mean, std = [103.939, 116.779, 123.68], [1.0, 2.0, 4.0]
    layer = InputNormalization(mean, std, reverse_channels=True)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    expected = (pixels[..., ::-1] - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    np.testing.assert_allclose(np.asarray(layer(pixels)), expected, rtol=1e-6, atol=1e-4)

    inputs = keras.Input((16, 16, 3), name="pixels")
    x = keras.layers.Conv2D(4, 3, activation="relu")(InputNormalization(mean, std, reverse_channels=True)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))
    path = tmp_path / "bgr.tflite"
    path.write_bytes(convert(model, (16, 16), "int8", _calibration(16), "uint8"))
    report = edgetpu.edgetpu_report(path)
    assert "REVERSE_V2" not in {op["op"] for op in report["ops"]}
    assert report["first_unsupported"] is None and report["mac_share"] == 1.0


# ----------------------------------------------------------------------------- the CLI
@pytest.mark.slow
def test_cli_refuses_a_cut_graph_and_publishes_it_only_with_allow_cpu_ops(fmnist_tree: Path, tmp_path: Path) -> None:
    """MobileNetV3 (HARD_SWISH at op 4) through `edgecls export --target edgetpu`: refused by default with one line that
    gives the share, the op, where the rest runs and the backbones that map whole; published with --allow-cpu-ops, the
    cut recorded in export_report.json and printed. (No edgetpu_compiler here: it would change nothing about the gate.)"""
    import json

    from tests.conftest import assert_clean_error, run_cli
    from tests.zoo_runs import make_run

    run = make_run("mobilenet_v3_small", tmp_path / "v3", fmnist_tree)
    refused = run_cli("export", run, "--target", "edgetpu", "--calib-size", "12")
    assert_clean_error(refused, "% of the MACs of mobilenet_v3_small would run on the Edge TPU", "(at least 90% needed)",
                       "cut at op #4 HARD_SWISH", "would run on the host CPU", "mobilenet_v3_small_minimalistic", "efficientnet_lite0",
                       "--allow-cpu-ops")
    assert not (run / "export" / "edgetpu-int8").exists()
    assert not [p.name for p in (run / "export").glob(".*")]  # nor a temp folder that would look like one

    allowed = run_cli("export", run, "--target", "edgetpu", "--calib-size", "12", "--allow-cpu-ops",
                      "--max-drop", "none", "--min-agreement", "none", "--fallback-layers", "0")
    assert allowed.returncode == 0, allowed.output
    report = json.loads((run / "export" / "edgetpu-int8" / "export_report.json").read_text())
    tpu = report["notes"]["edgetpu"]
    assert (run / "export" / "edgetpu-int8" / "model.tflite").is_file()
    assert tpu["gate"]["passed"] and tpu["gate"]["allow_cpu_ops"]
    assert tpu["first_unsupported"]["op"] == "HARD_SWISH" and tpu["ops_on_tpu"] == 4
    record = get_spec("mobilenet_v3_small").edgetpu  # the registry's record (test_zoo_exports.py leaves this family to this test)
    assert not record.maps_fully and record.first_cpu_op == "HARD_SWISH"
    assert 0 < tpu["mac_share"] < edgetpu.MIN_TPU_MAC_SHARE and tpu["macs_on_cpu"] > tpu["macs_on_tpu"]
    assert {"HARD_SWISH", "CONV_2D", "DEPTHWISE_CONV_2D"} <= set(tpu["cpu_op_types"])
    share = f"{tpu['mac_share']:.1%}"
    assert f"{share} of the MACs" in tpu["cut"]
    [error] = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith(f"error: only {share} of the MACs")  # the refused and the published graph are the same graph
    assert "HARD_SWISH" in allowed.stdout  # the cut is printed beside the artifact
