"""The mirror check (data/mirror.py): class names and images that a horizontal flip would turn into another class,
in `edgecls data check` and in training where no head on features decides the flip."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from edgecls.data.check import check_dataset
from edgecls.data.mirror import mirror_check, name_hints
from edgecls.data.sampling import stratified_sample
from edgecls.training.augment import AugmentConfig, mirror_flip_decision
from tests.conftest import run_cli

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def digit_images(digit: int) -> np.ndarray:
    """scikit-learn's real 8 x 8 handwritten digits of one class as uint8 32 x 32 images."""
    digits = load_digits()
    images = digits.images[digits.target == digit]
    return np.stack([np.asarray(Image.fromarray((image * 16).clip(0, 255).astype(np.uint8)).resize((32, 32))) for image in images])


def mirrored_pair_set() -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Four classes: sevens, mirrored sevens (other writers' sevens, mirrored), zeros and ones."""
    sevens, zeros, ones = digit_images(7), digit_images(0), digit_images(1)
    half = len(sevens) // 2
    groups = [sevens[:half], sevens[half:, :, ::-1], zeros, ones]
    images = [image for group in groups for image in group]
    labels = np.concatenate([np.full(len(group), k) for k, group in enumerate(groups)])
    return images, labels, ["seven", "neves", "zero", "one"]


def test_name_hints_sides_and_glyphs() -> None:
    names = ["left_arrow", "turn-right", "3", "b", "shirt", "bright", "copyright", "Left"]
    assert name_hints(names) == ["left_arrow", "turn-right", "3", "b", "Left"]


def test_mirrored_classes_are_found_and_symmetric_ones_are_not() -> None:
    images, labels, classes = mirrored_pair_set()
    check = mirror_check(lambda row: images[row], labels, classes)
    found = {(pair["class"], pair["mirrored_as"]) for pair in check["pairs"]}
    assert found == {("seven", "neves"), ("neves", "seven")}
    assert all(pair["mirrored_share"] >= 0.5 and pair["recognised"] > 0.6 for pair in check["pairs"])
    assert check["name_hints"] == [] and "'seven'" in check["warning"] and "'neves'" in check["warning"]


def test_unmirrored_digits_are_not_paired() -> None:
    """The same sevens, zeros and ones without the mirrored class: nothing to swap into."""
    groups = [digit_images(7), digit_images(0), digit_images(1)]
    images = [image for group in groups for image in group]
    labels = np.concatenate([np.full(len(group), k) for k, group in enumerate(groups)])
    assert mirror_check(lambda row: images[row], labels, ["seven", "zero", "one"]) == {"pairs": [], "name_hints": [], "warning": None}


@pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_is_not_flagged() -> None:
    """Fashion-MNIST's shoes all point left, but a mirrored shoe is no other class (and the flip helped there)."""
    from edgecls.data.fashion_mnist import FASHION_MNIST_CLASSES, load_split

    images, labels = load_split(DEBIAN, "train")
    rows = np.asarray(stratified_sample(labels.astype(np.int64), 3000, seed=0))
    check = mirror_check(lambda row: images[rows[row]], labels[rows], list(FASHION_MNIST_CLASSES))
    assert check["pairs"] == [] and check["warning"] is None


def test_small_classes_and_unreadable_images_are_left_out() -> None:
    images, labels, classes = mirrored_pair_set()
    keep = np.concatenate([np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)[:5]])  # 5 mirrored sevens: too few
    check = mirror_check(lambda row: images[keep[row]], labels[keep], classes[:2])
    assert check["pairs"] == []

    def unreadable(row: int) -> np.ndarray:
        raise OSError("gone")

    assert mirror_check(unreadable, labels, classes)["pairs"] == []


def test_training_turns_a_default_flip_off_and_warns_about_an_asked_one() -> None:
    images, labels, classes = mirrored_pair_set()
    decision, message = mirror_flip_decision(AugmentConfig(), images, labels, classes)
    assert decision is not None and decision["flip"] is False and "'neves'" in decision["why"]
    assert message is not None and "turned off" in message and "--augment" in message
    decision, message = mirror_flip_decision(AugmentConfig(auto=False), images, labels, classes)
    assert decision is None and message is not None and "--no-flip" in message
    assert mirror_flip_decision(AugmentConfig(flip=False), images, labels, classes) == (None, None)
    assert mirror_flip_decision(AugmentConfig(), images, labels, ["a", "b", "c", "d"])[0] is not None  # the images alone
    assert mirror_flip_decision(AugmentConfig(), images[:0], labels[:0], ["up", "down"]) == (None, None)


def write_tree(root: Path, images: list[np.ndarray], labels: np.ndarray, classes: list[str]) -> Path:
    for row, (image, label) in enumerate(zip(images, labels)):
        folder = root / classes[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image)).save(folder / f"{row:04d}.png")
    return root


def test_data_check_reports_mirrored_classes(tmp_path: Path) -> None:
    images, labels, classes = mirrored_pair_set()
    report = check_dataset(write_tree(tmp_path / "tree", images, labels, classes))
    json.dumps(report)
    assert {pair["class"] for pair in report["mirror"]["pairs"]} == {"seven", "neves"}
    assert any("horizontal flip" in warning and "--no-flip" in warning for warning in report["warnings"])


def test_scratch_training_decides_the_flip_on_the_data(tmp_path: Path) -> None:
    """No head on features (random weights): the mirror check turns the default flip off and records why."""
    images, labels, classes = mirrored_pair_set()
    tree = write_tree(tmp_path / "tree", images, labels, classes)
    out = tmp_path / "run"
    result = run_cli("train", "--data", tree, "--model", "mobilenet_v2", "--weights", "none", "--img-size", "32", "--alpha", "0.35",
                     "--epochs", "1", "--fine-tune-epochs", "0", "--out", out)
    assert result.returncode == 0, result.output
    assert "horizontal flip turned off" in result.output
    decision = json.loads((out / "metrics.json").read_text())["decisions"]["flip"]
    assert decision["flip"] is False and {pair["class"] for pair in decision["pairs"]} == {"seven", "neves"}
