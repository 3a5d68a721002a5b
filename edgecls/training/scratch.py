"""Backbones trained from random weights (--weights none).

Why MobileNetV3 stayed at chance: keras.applications builds its BatchNormalization layers with momentum 0.999.
Training uses each batch's statistics, so the loss falls; but evaluation uses the moving statistics, which after a
few hundred steps (0.999^750 = 0.47 of a small dataset's ten epochs) still hold much of their initial (mean 0,
variance 1). At initialisation MobileNetV3's inference-mode features are ~1e-5 (hard-swish and squeeze-excite
shrink them block after block), so validation, early stopping and the test saw a constant: 0.10 accuracy.
EfficientNet-B0 (momentum 0.99) learned. A pretrained backbone keeps its BatchNorm frozen, so this only matters
from scratch.

Why VGG16 stayed at chance: it has no BatchNorm, and at Adam's 1e-3 its first epoch overshoots (loss 3.8) into dead
ReLUs: a constant output, loss 2.303 ever after. Without --lr, such a backbone starts at NO_BATCH_NORM_SCRATCH_LR.
"""
from __future__ import annotations

from typing import Any

from edgecls.training.config import DEFAULT_LR, NO_BATCH_NORM_SCRATCH_LR

SCRATCH_BN_MOMENTUM = 0.9  # moving statistics that follow a from-scratch backbone within a few dozen steps


def prepare_scratch_backbone(backbone: Any) -> int:
    """Give every BatchNormalization layer of a randomly initialised backbone a momentum of at most
    SCRATCH_BN_MOMENTUM; returns how many layers changed."""
    import keras

    changed = 0
    for layer in _all_layers(backbone):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.momentum > SCRATCH_BN_MOMENTUM:
            layer.momentum = SCRATCH_BN_MOMENTUM
            changed += 1
    return changed


def default_lr(backbone: Any, pretrained: bool) -> float:
    """The head-phase rate when --lr is not given: lower for a backbone trained from scratch without BatchNorm."""
    if pretrained or has_batch_norm(backbone):
        return DEFAULT_LR
    return NO_BATCH_NORM_SCRATCH_LR


def has_batch_norm(backbone: Any) -> bool:
    import keras

    return any(isinstance(layer, keras.layers.BatchNormalization) for layer in _all_layers(backbone))


def _all_layers(model: Any) -> list[Any]:
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found.extend(_all_layers(layer))
    return found
