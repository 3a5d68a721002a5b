"""Frames kept for retraining (`edgecls camera --save-uncertain DIR`): real runs of the CLI on a real model and video,
the files it leaves, the bound on disk (only its own files removed), a full disk, and the labelling loop: move a
frame into a class folder, then `edgecls train --data DIR` trains on it and on nothing else it wrote."""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.camera.decision import Postprocessor
from edgecls.camera.loop import FrameResult
from edgecls.errors import ConfigError
from edgecls.integrations.uncertain import UNLABELLED, UncertainKeeper
from edgecls.meta import ModelMeta
from tests.camera_helpers import shared_tflite
from tests.conftest import assert_clean_error, run_cli
from tests.test_camera_safety import tmpfs

LABELS = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def model(plain_int8_exports: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tflite(plain_int8_exports, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def clip(fmnist_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 frames of 160x120 (larger than the model's 32x32: frames are kept at full resolution)."""
    import cv2

    pictures = sorted((fmnist_tree / "test").glob("*/*.png"))[::8]
    path = tmp_path_factory.mktemp("uncertain-clip") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (160, 120))
    for index in range(24):
        image = np.asarray(Image.open(pictures[index % len(pictures)]).convert("RGB").resize((160, 120)))
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def saved(folder: Path) -> tuple[list[str], list[str]]:
    unlabelled = folder / UNLABELLED
    return sorted(p.stem for p in unlabelled.glob("*.jpg")), sorted(p.stem for p in unlabelled.glob("*.json"))


def camera(model: Path, clip: Path, folder: Path, report: Path, *extra: str) -> dict:
    result = run_cli("camera", "--device", clip, "--model", model, "--report", report, "--json", "--save-uncertain", folder, *extra,
                     timeout=180)
    assert result.returncode == 0, result.output
    return json.loads(report.read_text())


def test_uncertain_frames_are_saved_with_sidecars_at_full_resolution(model: Path, clip: Path, tmp_path: Path) -> None:
    folder = tmp_path / "collected"
    data = camera(model, clip, folder, tmp_path / "r.json", "--threshold", "0.999", "--save-rate", "1000")
    kept = data["integrations"]["save_uncertain"]
    images, sidecars = saved(folder)
    assert images == sidecars and len(images) == kept["saved"] == kept["kept_now"] >= 3
    assert kept["uncertain"] == 24 and kept["saved"] + kept["rate_limited"] + kept["dropped_queue_full"] == 24 and kept["failed"] == 0
    sidecar = json.loads((folder / UNLABELLED / f"{images[0]}.json").read_text())
    assert sidecar["tool"] == "edgecls" and sidecar["image"] == f"{images[0]}.jpg" and sidecar["size"] == [160, 120]
    assert sidecar["model"]["file"] == str(model) and sidecar["model"]["architecture"] == "plain_cnn"
    assert len(sidecar["top_k"]) == 5 and sidecar["top_k"][0]["score"] < 0.999 and "below --threshold 0.999" in sidecar["why"][0]
    assert sidecar["time"].endswith("+00:00") and sidecar["threshold"] == 0.999
    with Image.open(folder / UNLABELLED / f"{images[0]}.jpg") as image:
        assert image.size == (160, 120) and image.format == "JPEG"
    assert not [p for p in (folder / UNLABELLED).iterdir() if p.name.startswith(".")]  # no temp files left


def test_bounded_on_disk_across_runs_and_only_its_own_files_removed(model: Path, clip: Path, tmp_path: Path) -> None:
    folder = tmp_path / "collected"
    unlabelled = folder / UNLABELLED
    unlabelled.mkdir(parents=True)
    mine = {"notes.txt": b"the user's", "my-photo.jpg": b"not ours", "20200101T000000000Z-000001.jpg": b"our name, no sidecar"}
    for name, content in mine.items():
        (unlabelled / name).write_bytes(content)
    (unlabelled / "20200101T000000000Z-000002.jpg").write_bytes(b"x")
    (unlabelled / "20200101T000000000Z-000002.json").write_text(json.dumps({"tool": "someone else"}))
    for run in range(2):
        data = camera(model, clip, folder, tmp_path / f"r{run}.json", "--threshold", "0.999", "--save-rate", "1000", "--save-max", "2")
        kept = data["integrations"]["save_uncertain"]
        images, sidecars = saved(folder)
        ours = [stem for stem in images if stem in sidecars and not stem.startswith("2020")]
        assert len(ours) == 2 == kept["kept_now"] and kept["removed_oldest"] == kept["saved"] - (2 if run == 0 else 0)
        assert kept["saved"] >= 3
    for name, content in mine.items():  # never touched
        assert (unlabelled / name).read_bytes() == content
    assert (unlabelled / "20200101T000000000Z-000002.jpg").is_file() and (unlabelled / "20200101T000000000Z-000002.json").is_file()


def test_labelling_is_moving_a_file_and_training_uses_it(model: Path, clip: Path, fmnist_tree: Path, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    for name in ("Bag", "Sneaker"):  # a small labelled set to add to
        shutil.copytree(fmnist_tree / "train" / name, folder / name)
    camera(model, clip, folder, tmp_path / "r.json", "--threshold", "0.999", "--save-rate", "1000")
    images, _ = saved(folder)
    moved = folder / "Sneaker" / f"{images[0]}.jpg"
    (folder / UNLABELLED / f"{images[0]}.jpg").rename(moved)  # the user labels one frame
    from edgecls.data.folder import scan_class_folders

    classes, paths, _ = scan_class_folders(folder)
    assert classes == ["Bag", "Sneaker"] and moved in paths  # the unlabelled frames are no class
    assert not [p for p in paths if p.suffix == ".json" or UNLABELLED in p.parts]
    again = camera(model, clip, folder, tmp_path / "r2.json", "--threshold", "0.999", "--save-rate", "1000")
    assert again["integrations"]["save_uncertain"]["orphan_sidecars_removed"] == 1  # the moved frame's sidecar
    assert moved.is_file()  # a labelled frame is the user's now: never removed
    run = tmp_path / "run"
    result = run_cli("train", "--data", folder, "--model", "plain_cnn", "--img-size", "32", "--epochs", "1", "--fine-tune-epochs", "0",
                     "--batch", "8", "--val-split", "0.2", "--test-split", "0.0", "--out", run, "--seed", "1", timeout=600)
    assert result.returncode == 0, result.output
    splits = json.loads((run / "splits.json").read_text())
    listed = [entry[0] for split in ("train", "val", "test") for entry in splits.get(split, [])]
    assert splits["classes"] == ["Bag", "Sneaker"] and f"Sneaker/{moved.name}" in listed
    assert not [p for p in listed if UNLABELLED in p or p.endswith(".json")]


def test_a_full_disk_is_counted_and_the_run_goes_on(model: Path, clip: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", "256k") as full:
        (full / UNLABELLED).mkdir()
        with open(full / "filler", "wb", buffering=0) as filler:  # fill the disk: every frame's sidecar or image fails
            with contextlib.suppress(OSError):
                while True:
                    filler.write(b"\0" * 4096)
        data = camera(model, clip, full, tmp_path / "r.json", "--threshold", "0.999", "--save-rate", "1000")
        kept = data["integrations"]["save_uncertain"]
        assert data["frames"] == 24 and kept["failed"] >= 1 and "No space left" in (kept["first_error"] or "")
        images, sidecars = saved(full)
        assert set(images) <= set(sidecars)  # never an image without the sidecar that claims it
        assert not [p for p in (full / UNLABELLED).iterdir() if p.name.startswith(".edgecls-tmp-")]


def test_mistakes_are_clean_errors(model: Path, clip: Path, tmp_path: Path) -> None:
    base = ["camera", "--device", clip, "--model", model, "--report", tmp_path / "r.json"]
    assert_clean_error(run_cli(*base, "--save-uncertain", tmp_path / "d"), "keeps nothing without --threshold or --margin")
    assert_clean_error(run_cli(*base, "--save-uncertain", tmp_path / "d", "--threshold", "0.5", "--save-rate", "0"), "--save-rate 0")
    assert_clean_error(run_cli(*base, "--save-uncertain", tmp_path / "d", "--margin", "0.1", "--save-max", "0"), "--save-max 0")
    (tmp_path / "file").write_text("x")
    assert_clean_error(run_cli(*base, "--save-uncertain", tmp_path / "file", "--threshold", "0.5"), "cannot create")
    assert not (tmp_path / "d").exists() and not (tmp_path / "r.json").exists()


# ---------------------------------------------------------------- in process: what is kept, and how often


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def result(scores: list[float], index: int) -> FrameResult:
    probabilities = np.asarray(scores, np.float32)
    decision = Postprocessor(LABELS, top_k=2)(probabilities)
    return FrameResult(index, index + 1, np.full((48, 64, 3), index, np.uint8), probabilities, decision, {})


def test_threshold_margin_and_rate(tmp_path: Path) -> None:
    import types

    clock = Clock()
    keeper = UncertainKeeper(tmp_path / "kept", threshold=0.5, margin=0.2, rate=4.0, clock=clock)
    backend = types.SimpleNamespace(meta=ModelMeta("plain_cnn", (32, 32), list(LABELS)), path=tmp_path / "model.tflite")
    keeper.open(backend)
    frames = [[0.9, 0.05, 0.05], [0.45, 0.3, 0.25], [0.55, 0.40, 0.05]]  # sure; below the threshold; inside the margin
    for index in range(64):  # 64 frames, 1/64 s apart
        keeper.offer(result(frames[index % 3], index))
        clock.now += 1 / 64
    keeper.close()
    report = keeper.report()
    images, _ = saved(tmp_path / "kept")
    assert report["uncertain"] == 42 and report["saved"] == len(images) == 4 and report["rate_limited"] == 38
    whys = [json.loads((tmp_path / "kept" / UNLABELLED / f"{stem}.json").read_text())["why"] for stem in images]
    assert any("--margin" in why[0] for why in whys) and any("--threshold" in why[0] for why in whys)
    assert all(json.loads((tmp_path / "kept" / UNLABELLED / f"{s}.json").read_text())["top_k"][0]["label"] == "cat" for s in images)
    with pytest.raises(ConfigError, match="keeps nothing"):
        UncertainKeeper(tmp_path, threshold=0.0, margin=0.0)
