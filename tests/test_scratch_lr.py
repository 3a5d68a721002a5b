"""The default learning rate of a backbone trained from scratch without BatchNorm (VGG16).

VGG16 from scratch at Adam's 1e-3 stayed at chance (docs/benchmarks.md, zoo table): its first epoch overshot into dead
ReLUs and the output went constant. Without --lr such a backbone now starts at 1e-4; every other case keeps 1e-3,
and an explicit --lr is always kept.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecls.training.config import DEFAULT_LR, NO_BATCH_NORM_SCRATCH_LR, TrainConfig
from tests.conftest import run_cli


@pytest.mark.parametrize(("model_name", "pretrained", "expected"), [
    ("vgg16", False, NO_BATCH_NORM_SCRATCH_LR),
    ("vgg16", True, DEFAULT_LR),  # a frozen pretrained backbone: only the head trains
    ("plain_cnn", False, DEFAULT_LR),
    ("mobilenet_v3_small", False, DEFAULT_LR),
])
def test_the_default_rate_is_lower_only_for_a_scratch_backbone_without_batch_norm(model_name: str, pretrained: bool,
                                                                                  expected: float) -> None:
    from edgecls.training.scratch import default_lr
    from edgecls.zoo.classifier import build_classifier

    backbone = build_classifier(model_name, 2, (32, 32), "none").backbone
    assert default_lr(backbone, pretrained) == expected


def test_an_unset_rate_reads_as_the_default_and_a_given_one_is_kept(tmp_path: Path) -> None:
    unset = TrainConfig(data=str(tmp_path))
    assert unset.lr is None and unset.head_lr == DEFAULT_LR and unset.tune_lr == pytest.approx(DEFAULT_LR / 10)
    assert TrainConfig(data=str(tmp_path), lr=5e-3).head_lr == 5e-3


@pytest.mark.slow  # one VGG16 epoch on 80 images at 32 px
def test_a_vgg16_scratch_run_records_and_announces_its_rate(fmnist_tree: Path, tmp_path: Path) -> None:
    result = run_cli("train", "--data", fmnist_tree, "--model", "vgg16", "--weights", "none", "--img-size", "32",
                     "--epochs", "1", "--fine-tune-epochs", "0", "--batch", "16", "--out", tmp_path / "run")
    assert result.returncode == 0, result.output
    assert "no BatchNorm: --lr 0.0001" in " ".join(result.output.split())
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["config"]["lr"] == NO_BATCH_NORM_SCRATCH_LR
