"""The layers a fine-tune trains; the frozen stem: under --time-budget it leaves the backbone's high-resolution first
stages frozen.

Those stages hold few weights (EfficientNet-Lite0: 2% of them up to stride 8) but most of the activations a training
step must keep and back-propagate through, so a fine-tune of the rest alone runs more images per second. The cut is a
tensor every later layer depends on through it alone (an articulation of the graph): at the deepest resolution whose
stride is at most STEM_STRIDE, the smallest such tensor (fewest values per image).
"""
from __future__ import annotations

import math
from typing import Any

MAX_FROZEN_SHARE = 0.25  # a stem holding more of the weights than this is not frozen (the fine-tune would learn too little)
STEM_STRIDE = 8  # the stem and the stages up to this stride stay frozen (their output is 1/8 of the input's side)


def _inbound_layers(layer: Any) -> list[Any]:
    found = []
    for node in getattr(layer, "_inbound_nodes", []):
        for tensor in node.input_tensors:
            history = getattr(tensor, "_keras_history", None)
            if history is not None:
                found.append(history[0])
    return found


def stem_cut(backbone: Any) -> Any | None:
    """The layer whose output is the stem's cut (see the module docstring), or None when the backbone has no such tensor
    (not a plain functional graph, or no articulation between its input and stride STEM_STRIDE)."""
    layers = list(getattr(backbone, "operations", None) or getattr(backbone, "layers", []))  # operations: raw ops too
    if len(layers) < 3:
        return None
    index = {id(layer): i for i, layer in enumerate(layers)}
    earliest_after = [math.inf] * (len(layers) + 1)  # the earliest layer any layer after i reads from
    for i in range(len(layers) - 1, -1, -1):
        sources = [index.get(id(source), -1) for source in _inbound_layers(layers[i])]
        earliest_after[i] = min([earliest_after[i + 1], *sources])
    height = backbone.input.shape[1]
    if not height:
        return None
    candidates = []  # (height, values per image, -position, layer) of every articulation at stride <= STEM_STRIDE
    for i, layer in enumerate(layers[1:-1], start=1):
        shape = getattr(getattr(layer, "output", None), "shape", None)
        if shape is None or len(shape) != 4 or earliest_after[i + 1] < i or any(not dim for dim in shape[1:]):
            continue
        if shape[1] * STEM_STRIDE >= height:
            candidates.append((shape[1], shape[1] * shape[2] * shape[3], -i, layer))
    if not candidates:
        return None
    cut = min(candidates, key=lambda item: item[:3])[3]  # the deepest stage, its smallest tensor, the latest on ties
    weights = [sum(math.prod(weight.shape) for weight in getattr(layer, "weights", [])) for layer in layers]
    frozen = sum(weights[: layers.index(cut) + 1])
    return cut if frozen <= MAX_FROZEN_SHARE * max(1, sum(weights)) else None


def freeze_stem(backbone: Any) -> str | None:
    """Freeze the layers up to and including the stem's cut; returns the cut layer's name (None: nothing frozen)."""
    cut = stem_cut(backbone)
    if cut is None:
        return None
    for operation in list(getattr(backbone, "operations", None) or backbone.layers):
        operation.trainable = False
        if operation is cut:
            break
    return str(cut.name)


def set_fine_tune_trainable(backbone: Any, unfreeze: int, keep_stem_frozen: bool) -> str | None:
    """The layers the fine-tune trains: the top `unfreeze` weighted layers (unfreeze > 0), else all but the stem
    (`keep_stem_frozen`), else all; BatchNorm never (it stays in inference mode). Returns the stem's cut, if frozen."""
    import keras

    backbone.trainable = True
    cut = None
    weighted = [layer for layer in backbone.layers if layer.weights]
    if unfreeze > 0:
        for layer in weighted[: max(0, len(weighted) - unfreeze)]:
            layer.trainable = False
    elif keep_stem_frozen:
        cut = freeze_stem(backbone)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return cut
