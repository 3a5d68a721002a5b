"""Backbones trained from random weights (--weights none).

Why MobileNetV3 stayed at chance: keras.applications builds its BatchNormalization layers with momentum 0.999.
Training uses each batch's statistics, so the loss falls; but evaluation uses the moving statistics, which after a
few hundred steps (0.999^750 = 0.47 of a small dataset's ten epochs) still hold much of their initial (mean 0,
variance 1). At initialisation MobileNetV3's inference-mode features are ~1e-5 (hard-swish and squeeze-excite
shrink them block after block), so validation, early stopping and the test saw a constant: 0.10 accuracy.
EfficientNet-B0 (momentum 0.99) learned. A pretrained backbone keeps its BatchNorm frozen, so this only matters
from scratch.
"""
from __future__ import annotations

from typing import Any

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


def _all_layers(model: Any) -> list[Any]:
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found.extend(_all_layers(layer))
    return found
