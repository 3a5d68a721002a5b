"""Unit tests of the framework-free core: meta, preprocessing, postprocessing, metrics, atomic writes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.errors import ConfigError, ImageError, ModelError, suggest
from edgecls.fsutil import atomic_dir, atomic_path
from edgecls.meta import ModelMeta, Quantization
from edgecls.metrics import classification_report, confusion_matrix, roc_auc_binary, top_k_accuracy
from edgecls.postprocess import dequantize, quantize, softmax, top_k
from edgecls.preprocess import centre_crop_box, load_image, prepare, resize


def test_meta_round_trip(tmp_path: Path) -> None:
    meta = ModelMeta("plain_cnn", (32, 48), ["a", "b"], output_quantization=Quantization(1 / 256, -128, "int8"))
    meta.save(tmp_path)
    loaded = ModelMeta.load(tmp_path / "meta.json")
    assert loaded == meta
    assert loaded.num_classes == 2


@pytest.mark.parametrize(
    "payload, fragment",
    [
        ({"architecture": "x", "labels": ["a"]}, "lacks input_size"),
        ({"architecture": "x", "input_size": [0, 3], "labels": ["a"]}, "input_size"),
        ({"architecture": "x", "input_size": [3, 3], "labels": ["a"], "meta_version": 99}, "newer"),
        ({"architecture": "x", "input_size": "big", "labels": ["a"]}, "malformed"),
    ],
)
def test_meta_rejects_bad_files(tmp_path: Path, payload: dict, fragment: str) -> None:
    (tmp_path / "meta.json").write_text(json.dumps(payload))
    with pytest.raises(ModelError, match=fragment):
        ModelMeta.load(tmp_path)


def test_meta_rejects_non_json(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_bytes(b"\xff\x00garbage")
    with pytest.raises(ModelError, match="cannot read"):
        ModelMeta.load(tmp_path)


def _save(path: Path, image: Image.Image, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def test_load_image_converts_modes(tmp_path: Path) -> None:
    gray = _save(tmp_path / "g.png", Image.new("L", (5, 4), 200))
    rgba = _save(tmp_path / "a.png", Image.new("RGBA", (5, 4), (255, 0, 0, 0)))
    deep = _save(tmp_path / "d.png", Image.fromarray(np.full((4, 5), 65535, np.uint16)))
    palette = _save(tmp_path / "p.gif", Image.new("P", (5, 4), 3))
    for path in (gray, rgba, deep, palette):
        array = load_image(path)
        assert array.shape == (4, 5, 3) and array.dtype == np.uint8
    assert load_image(gray)[0, 0].tolist() == [200, 200, 200]
    assert load_image(rgba)[0, 0].tolist() == [0, 0, 0]  # fully transparent -> black background
    assert load_image(deep)[0, 0].tolist() == [255, 255, 255]


def test_load_image_honours_exif_orientation(tmp_path: Path) -> None:
    image = Image.new("RGB", (6, 2), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = _save(tmp_path / "r.jpg", image, exif=exif)
    assert load_image(path).shape == (6, 2, 3)


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_load_image_refuses_broken_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match="bad.png"):
        load_image(path)


def test_load_image_refuses_truncated_jpeg(tmp_path: Path) -> None:
    path = _save(tmp_path / "t.jpg", Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageError, match="t.jpg"):
        load_image(path)


def test_load_image_refuses_decompression_bomb(tmp_path: Path) -> None:
    path = _save(tmp_path / "bomb.png", Image.new("1", (12000, 12000)))
    with pytest.raises(ImageError, match="pixel limit|decompression bomb"):
        load_image(path)


def test_missing_and_folder_paths(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_centre_crop_keeps_aspect_and_fraction() -> None:
    assert centre_crop_box(200, 100, 10, 10, 1.0) == (50, 0, 150, 100)
    assert centre_crop_box(100, 100, 10, 10, 0.5) == (25, 25, 75, 75)


def test_resize_crops_the_centre() -> None:
    image = np.zeros((10, 30, 3), np.uint8)
    image[:, 10:20] = 255  # the centre square is white, the sides black
    out = resize(image, (5, 5), 1.0, "nearest")
    assert out.shape == (5, 5, 3) and out.min() == 255


def test_prepare_applies_bgr_and_normalisation() -> None:
    meta = ModelMeta("x", (2, 2), ["a", "b"], normalization_baked_in=False, mean=(1.0, 2.0, 3.0), std=(2.0, 2.0, 2.0))
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 9  # blue channel in BGR order
    out = prepare(bgr, meta, bgr=True)
    assert out.dtype == np.float32
    assert out[0, 0].tolist() == [-0.5, -1.0, 3.0]


def test_quantization_round_trip_and_no_wraparound() -> None:
    quant = Quantization(scale=0.5, zero_point=-128, dtype="int8")
    values = np.array([0.0, 1.0, 127.5, 1000.0], np.float32)
    q = quantize(values, quant)
    assert q.dtype == np.int8 and q.tolist() == [-128, -126, 127, 127]
    assert dequantize(np.array([127, -128], np.int8), quant).tolist() == [127.5, 0.0]
    uint = Quantization(scale=1.0, zero_point=200, dtype="uint8")
    assert dequantize(np.array([10], np.uint8), uint).tolist() == [-190.0]  # uint8 arithmetic would wrap to 66


def test_softmax_and_top_k() -> None:
    probs = softmax(np.array([[1000.0, 1000.0, 0.0]]))
    assert np.allclose(probs.sum(), 1.0) and np.isfinite(probs).all()
    ranked = top_k(np.array([0.1, 0.5, 0.5, 0.2]), ["a", "b", "c", "d"], k=3)
    assert [c.id for c in ranked] == [1, 2, 3] and ranked[0].label == "b"
    assert len(top_k(np.array([0.3, 0.7]), ["a", "b"], k=10)) == 2


def test_metrics_match_hand_computation() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    scores = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.9 + 0.05
    report = classification_report(y_true, scores, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(4 / 6)
    per = {c["label"]: c for c in report["per_class"]}
    assert per["b"]["precision"] == pytest.approx(2 / 3) and per["b"]["recall"] == 1.0
    assert per["a"]["f1"] == pytest.approx(0.5)
    assert confusion_matrix(y_true, scores.argmax(1), 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert top_k_accuracy(y_true, scores, 3) == 1.0


def test_roc_auc() -> None:
    assert roc_auc_binary(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc_binary(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "export"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "a").write_text("2")
            raise KeyboardInterrupt
    assert (target / "a").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_atomic_path_refuses_file_as_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        with atomic_path(tmp_path / "file" / "out.json"):
            pass


def test_suggest_near_miss() -> None:
    assert "efficientnet_lite0" in suggest("efficientnet_lite", ["efficientnet_lite0", "resnet50"])
    assert suggest("zzz", ["resnet50"]) == ""
