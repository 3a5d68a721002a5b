"""What a LiteRT backend says it ran (`precision_ran`: export reports, golden sets' runtime, `edgecls verify`) for an INT8
model whose fallback kept a layer float: "int8+float", not the "fp32 (int8 weights, dynamic range)" it used to say."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.slow  # TensorFlow import and two conversions: about 10 s


def test_mixed_int8_float_tflite_is_named_int8_plus_float(tmp_path: Path) -> None:
    import keras

    from edgecls.export.tflite import calibrate, quantize_calibrated
    from edgecls.export.tflite_inspect import graph
    from edgecls.meta import ModelMeta
    from edgecls.runtime.litert import LiteRTBackend

    keras.utils.set_random_seed(0)
    pixels = keras.Input((16, 16, 3), name="pixels")
    hidden = keras.layers.Rescaling(1 / 128, -1)(pixels)
    hidden = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(hidden)
    hidden = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    model = keras.Model(pixels, keras.layers.Dense(3, activation="softmax")(hidden))
    calibrated = calibrate(model, (16, 16), np.random.RandomState(0).randint(0, 256, (12, 16, 16, 3), dtype=np.uint8))
    (tmp_path / "calibrated.tflite").write_bytes(calibrated)
    ops = graph(tmp_path / "calibrated.tflite")
    first_conv = next(ops["tensors"][op["outputs"][0]]["name"] for op in ops["ops"] if op["op"] == "CONV_2D")
    meta = ModelMeta("plain_cnn", (16, 16), ["a", "b", "c"])
    ran = {}
    for name, float_nodes in (("full", []), ("mixed", [first_conv])):
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(quantize_calibrated(calibrated, "uint8", float_nodes))
        with LiteRTBackend(path, meta=meta) as backend:
            ran[name] = backend.precision_ran
    assert ran["full"] == "int8 (uint8 I/O)"
    assert ran["mixed"] == "int8+float (1 of 3 compute ops float; uint8 I/O)", ran
