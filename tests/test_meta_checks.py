"""meta.json is checked for meaning when read: each bad field is one line naming the field, the value and the fix."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecls.errors import ModelError
from edgecls.meta import INTERPOLATIONS, MAX_INPUT_SIZE, MIN_INPUT_SIZE, ModelMeta, Quantization

GOOD = {"architecture": "plain_cnn", "input_size": [32, 24], "labels": ["cat", "dog", "bird"]}


def read(tmp_path: Path, **changes: object) -> ModelMeta:
    (tmp_path / "meta.json").write_text(json.dumps({**GOOD, **changes}))
    return ModelMeta.load(tmp_path)


# field changes -> fragments the one error line must hold (field, value, what is wrong)
BAD_FIELDS = {
    "mean-two-values": ({"mean": [127.0, 127.0]}, ["mean [127.0, 127.0]", "must be 3 numbers"]),
    "mean-scalar": ({"mean": 127.0}, ["mean 127.0", "must be 3 numbers"]),
    "mean-text": ({"mean": ["a", "b", "c"]}, ['mean ["a", "b", "c"]', "must be 3 numbers"]),
    "mean-nan": ({"mean": [127.0, float("nan"), 127.0]}, ["mean", "NaN", "finite"]),
    "std-zero": ({"std": [128.0, 0.0, 128.0]}, ["std [128.0, 0.0, 128.0]", "above 0"]),
    "std-negative": ({"std": [-1.0, 1.0, 1.0]}, ["std [-1.0, 1.0, 1.0]", "above 0"]),
    "std-infinite": ({"std": [1.0, float("inf"), 1.0]}, ["std", "Infinity", "finite"]),
    "std-four-values": ({"std": [1.0, 1.0, 1.0, 1.0]}, ["std [1.0, 1.0, 1.0, 1.0]", "must be 3 numbers"]),
    "crop-zero": ({"crop_fraction": 0}, ["crop_fraction 0", "(0, 1]"]),
    "crop-negative": ({"crop_fraction": -0.5}, ["crop_fraction -0.5", "(0, 1]"]),
    "crop-over-one": ({"crop_fraction": 1.5}, ["crop_fraction 1.5", "(0, 1]"]),
    "crop-nan": ({"crop_fraction": float("nan")}, ["crop_fraction nan", "(0, 1]"]),
    "crop-text": ({"crop_fraction": "all"}, ['crop_fraction "all"', "(0, 1]"]),
    "size-zero": ({"input_size": [0, 32]}, ["input_size [0, 32]", f"{MIN_INPUT_SIZE}..{MAX_INPUT_SIZE}"]),
    "size-tiny": ({"input_size": [4, 4]}, ["input_size [4, 4]", f"{MIN_INPUT_SIZE}..{MAX_INPUT_SIZE}"]),
    "size-huge": ({"input_size": [100000, 224]}, ["input_size [100000, 224]", f"{MIN_INPUT_SIZE}..{MAX_INPUT_SIZE}"]),
    "size-fraction": ({"input_size": [32.5, 32]}, ["malformed", "input_size must be two whole numbers", "32.5"]),
    "size-three": ({"input_size": [32, 32, 3]}, ["malformed"]),
    "labels-empty": ({"labels": []}, ["labels []", "non-empty list"]),
    "labels-blank": ({"labels": ["cat", " ", "bird"]}, ['labels[1] " "', "is empty"]),
    "labels-duplicate": ({"labels": ["cat", "dog", "cat"]}, ['labels[2] "cat"', "repeats labels[0]"]),
    "labels-null": ({"labels": ["cat", None, "bird"]}, ["labels[1] None", "not a string"]),
    "labels-nested": ({"labels": ["cat", ["dog"], "bird"]}, ['labels[1] ["dog"]', "not a string"]),
    "color-order": ({"color_order": "GRB"}, ['color_order "GRB"', "RGB, BGR"]),
    "interpolation": ({"interpolation": "lanczos"}, ['interpolation "lanczos"', "bicubic"]),
    "output": ({"output": "softmax"}, ['output "softmax"', "probabilities, logits"]),
    "baked-in": ({"normalization_baked_in": "yes"}, ['normalization_baked_in "yes"', "true or false"]),
    "architecture": ({"architecture": ""}, ['architecture ""', "is empty"]),
    "quant-scale": ({"output_quantization": {"scale": 0.0, "zero_point": 0, "dtype": "uint8"}},
                    ["output_quantization.scale 0.0", "above 0"]),
    "quant-zero-point": ({"input_quantization": {"scale": 1.0, "zero_point": 300, "dtype": "uint8"}},
                         ["input_quantization.zero_point 300", "0..255"]),
    "quant-dtype": ({"output_quantization": {"scale": 1.0, "zero_point": 0, "dtype": "float8"}}, ['output_quantization.dtype "float8"']),
}


@pytest.mark.parametrize("case", list(BAD_FIELDS))
def test_each_bad_field_is_one_line_with_value_and_fix(case: str, tmp_path: Path) -> None:
    changes, fragments = BAD_FIELDS[case]
    with pytest.raises(ModelError) as caught:
        read(tmp_path, **changes)
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / "meta.json") in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert "Fix it in" in message or "Re-create it" in message, message  # every line says what to do


def test_good_variants_are_accepted(tmp_path: Path) -> None:
    meta = read(tmp_path, input_size=[224.0, 160], labels=["0", 1, "two"], crop_fraction=0.875, color_order="BGR",
                interpolation="area", output="logits", mean=[1, 2, 3], std=[0.5, 1, 2])
    assert meta.input_size == (224, 160) and meta.labels == ["0", "1", "two"]
    assert meta.mean == (1.0, 2.0, 3.0) and meta.std == (0.5, 1.0, 2.0)
    assert read(tmp_path, input_size=[MIN_INPUT_SIZE, MAX_INPUT_SIZE]).input_size == (MIN_INPUT_SIZE, MAX_INPUT_SIZE)


def test_save_refuses_a_meta_that_could_not_be_read_back(tmp_path: Path) -> None:
    bad = ModelMeta("x", (32, 32), ["a", "b"], std=(1.0, 0.0, 1.0))
    with pytest.raises(ModelError, match=r"std \[1.0, 0.0, 1.0\]"):
        bad.save(tmp_path)
    assert not (tmp_path / "meta.json").exists()
    ModelMeta("x", (32, 32), ["a", "b"], output_quantization=Quantization(0.5, -128, "int8")).save(tmp_path)
    assert ModelMeta.load(tmp_path).output_quantization == Quantization(0.5, -128, "int8")


def test_a_meta_passed_to_load_backend_is_checked_too(tmp_path: Path) -> None:
    from edgecls.runtime import load_backend

    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read: the meta is refused first")
    with pytest.raises(ModelError, match="the meta passed in: crop_fraction 0.0"):
        load_backend(model, meta=ModelMeta("x", (16, 16), ["a"], crop_fraction=0.0))


def test_interpolation_names_match_the_resamplers() -> None:
    from edgecls.preprocess import _INTERPOLATION

    assert set(_INTERPOLATION) == set(INTERPOLATIONS)


def test_bgr_color_order_is_honoured_by_prepare() -> None:
    from edgecls.preprocess import prepare, prepare_pixels

    image = np.zeros((16, 16, 3), np.uint8)
    image[..., 0] = 200  # red
    rgb = ModelMeta("x", (16, 16), ["a"])
    bgr = ModelMeta("x", (16, 16), ["a"], color_order="BGR")
    assert prepare(image, rgb)[0, 0].tolist() == [200.0, 0.0, 0.0]
    assert prepare(image, bgr)[0, 0].tolist() == [0.0, 0.0, 200.0]
    assert prepare_pixels(image[..., ::-1], bgr, bgr=True)[0, 0].tolist() == [0, 0, 200]  # a BGR frame for a BGR model: as it is
