"""Calibration sets on real image files: the training split with missing files, --calib folders, the
pixel checks every INT8 writer shares, and where the manifest goes. No TensorFlow, no training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.errors import ConfigError, DataError
from edgecls.meta import ModelMeta
from edgecls.quantize import calibration as cal

META = ModelMeta(architecture="plain_cnn", input_size=(16, 16), labels=["red", "green", "blue"])
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def _fake_run(tmp_path: Path, per_class: int) -> tuple[Path, list[Path]]:
    """A run folder whose splits.json lists `per_class` training images per class (a distinct shade each)."""
    data, run = tmp_path / "data", tmp_path / "run"
    run.mkdir()
    rows, paths = [], []
    for label, (name, colour) in enumerate(zip(META.labels, COLOURS)):
        (data / name).mkdir(parents=True)
        for i in range(per_class):
            path = data / name / f"{i}.png"
            Image.new("RGB", (20, 20), tuple(min(255, c + 3 * i) for c in colour)).save(path)
            rows.append([f"{name}/{i}.png", label])
            paths.append(path)
    (run / "splits.json").write_text(json.dumps({"root": str(data), "classes": META.labels, "train": rows, "val": [], "test": []}))
    return run, paths


def test_train_split_with_missing_files_calibrates_on_the_files_that_exist(tmp_path: Path) -> None:
    """Positions in the usable sub-list used to index the full path list: with the first files gone it
    picked the missing ones (and skipped real ones)."""
    run, paths = _fake_run(tmp_path, per_class=6)
    for path in paths[:4]:  # four 'red' training images were deleted after training
        path.unlink()
    present = [str(p) for p in paths[4:]]
    every = cal.from_run_train_split(run, META, size=100, seed=0)
    assert sorted(every.files) == sorted(present) and len(every) == 14
    some = cal.from_run_train_split(run, META, size=12, seed=0)
    assert len(some) == 12 and set(some.files) <= set(present)
    per_class = [sum(f"/{name}/" in f for f in some.files) for name in META.labels]
    assert per_class == [2, 5, 5]  # every surviving red image, the rest spread over green and blue
    assert some.images.shape == (12, 16, 16, 3) and some.images.dtype == np.uint8


def test_train_split_without_enough_files_is_a_data_error(tmp_path: Path) -> None:
    run, paths = _fake_run(tmp_path, per_class=4)
    for path in paths[:5]:
        path.unlink()
    with pytest.raises(DataError, match="has only 7 readable images for calibration"):
        cal.from_run_train_split(run, META, size=300)


def test_calib_folder_drops_unreadable_and_held_out_images(tmp_path: Path) -> None:
    run, paths = _fake_run(tmp_path, per_class=5)
    (tmp_path / "data" / "red" / "broken.png").write_bytes(b"not a png")
    held_out = {cal.sha256_file(paths[0])}
    result = cal.from_folder(tmp_path / "data", META, size=300, exclude_hashes=held_out)
    assert len(result) == 14 and str(paths[0]) not in result.files
    assert result.skipped["in_val_or_test"] == [str(paths[0])] and result.skipped["unreadable"][0].endswith("broken.png")


def test_manifest_goes_beside_the_exports(tmp_path: Path) -> None:
    run, _ = _fake_run(tmp_path, per_class=4)
    calibration = cal.from_run_train_split(run, META, size=10)
    path = cal.write_manifest(calibration, cal.manifest_path(run / "export"), META, seed=0)
    assert path == run / "export" / "calibration" / "manifest.json" and calibration.manifest == path
    manifest = json.loads(path.read_text())
    assert manifest["count"] == 10 and all(len(entry["sha256"]) == 64 for entry in manifest["files"])


@pytest.mark.parametrize("images, fragment", [
    (None, "int8 onnx export needs calibration images, got none"),
    (np.zeros((5, 16, 16, 3), np.uint8), "5 calibration images is below the minimum of 10"),
    (np.zeros((12, 16, 16, 3), np.float32), "calibration images must be uint8 (N, 16, 16, 3), got float32 (12, 16, 16, 3)"),
    (np.zeros((12, 8, 8, 3), np.uint8), "got uint8 (12, 8, 8, 3)"),
    ([[1, 2, 3]], "got list"),
])
def test_check_calibration(images: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        cal.check_calibration(images, (16, 16), "onnx")
    assert fragment in str(info.value)
    assert cal.check_calibration(np.zeros((10, 16, 16, 3), np.uint8), (16, 16), "onnx").shape == (10, 16, 16, 3)


def test_builtin_photos_split_by_photo_and_honour_calib_size() -> None:
    """Zoo models: the held-out images are crops of photos that never calibrated (skimage's `cat` is `chelsea`: kept once)."""
    pytest.importorskip("skimage")
    calibration, held = cal.builtin_photo_split(META, calib_size=12, seed=0)
    photos = {name.split("#")[0] for name in calibration.files}
    held_photos = {name.split("#")[0] for name in held.files}
    assert photos and held_photos and not photos & held_photos
    assert "skimage.data.cat" not in photos | held_photos  # the same pixels as skimage.data.chelsea
    assert len(calibration) == 12 and calibration.images.shape == (12, 16, 16, 3) and len(held) >= 12
    assert all(name in calibration.source for name in photos) and all(name in held.source for name in held_photos)
    every, _ = cal.builtin_photo_split(META, calib_size=300, seed=0)
    assert len(every) == len(photos) * cal.CROPS_PER_PHOTO and set(calibration.files) <= set(every.files)
    with pytest.raises(ConfigError, match="--calib-size 5 is below the minimum of 10"):
        cal.builtin_photo_split(META, calib_size=5)
