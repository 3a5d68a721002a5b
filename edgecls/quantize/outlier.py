"""A model that really quantizes badly, built deterministically from a trained classifier.

`with_outlier_channel` inserts a 1x1 convolution after one backbone block that multiplies one channel
by a large factor and divides the next convolution's input weights for that channel by the same
factor: the float model computes the same function (up to float rounding), but the new tensor's range
is `factor` times wider than its other channels need, so per-tensor INT8 activations round every
other channel to zero. This is the failure mode of wide activation ranges (swish/SE backbones,
outlier channels) in its plainest form, used by the INT8 gate tests and bench/int8_fallback.py.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgecls.errors import ModelError, require

OUTLIER_LAYER = "outlier_scale"
DEFAULT_FACTOR = 1000.0


def with_outlier_channel(model: Any, after: str = "pool1", factor: float = DEFAULT_FACTOR, channel: int = 0) -> Any:
    """A copy of an edgecls classifier (pixels -> normalize -> backbone -> head) whose backbone has the outlier
    layer right after layer `after`; the next Conv2D compensates. The input model is not changed."""
    keras = require("keras", "train")
    from edgecls.zoo.classifier import split_classifier

    parts = split_classifier(model)
    backbone = parts.backbone
    names = [layer.name for layer in backbone.layers]
    if after not in names:
        raise ModelError(f"backbone '{backbone.name}' has no layer '{after}'", f"Pick one of {', '.join(names[1:])}")
    following = [layer for layer in backbone.layers[names.index(after) + 1 :] if isinstance(layer, keras.layers.Conv2D)]
    if not following:
        raise ModelError(f"no Conv2D follows '{after}' in '{backbone.name}'", "Pick an earlier layer")
    compensating = following[0]

    inputs = keras.Input(backbone.input_shape[1:], name=backbone.layers[0].name)
    x = inputs
    copies: dict[str, Any] = {}
    for layer in backbone.layers[1:]:  # a plain chain (plain_cnn): each layer feeds the next
        copy = layer.__class__.from_config(layer.get_config())
        x = copy(x)
        copy.set_weights(layer.get_weights())
        copies[layer.name] = copy
        if layer.name == after:
            channels = int(x.shape[-1])
            scale = keras.layers.Conv2D(channels, 1, use_bias=False, name=OUTLIER_LAYER)
            x = scale(x)
            diagonal = np.ones(channels, np.float32)
            diagonal[channel] = factor
            scale.set_weights([np.diag(diagonal).reshape(1, 1, channels, channels)])
    kernel, *rest = compensating.get_weights()
    kernel = kernel.copy()
    kernel[:, :, channel, :] /= factor
    copies[compensating.name].set_weights([kernel, *rest])
    new_backbone = keras.Model(inputs, x, name=backbone.name)

    pixels = keras.Input(model.input_shape[1:], name=model.inputs[0].name.split(":")[0])
    normalize = model.get_layer("normalize")
    features = new_backbone(normalize(pixels), training=False)
    return keras.Model(pixels, parts.head(features), name=model.name)
