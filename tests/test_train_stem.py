"""The frozen stem of a budget's fine-tune (training/stem.py): where the cut falls, and that only the rest learns."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgecls.training.stem import MAX_FROZEN_SHARE, freeze_stem, stem_cut


def _classifier(name: str, size: int, alpha: float | None = None) -> Any:
    from edgecls.zoo.classifier import build_classifier

    return build_classifier(name, 3, (size, size), "none", alpha=alpha)


@pytest.mark.parametrize(("name", "size", "cut", "shape"), [
    ("efficientnet_lite0", 48, "block3b_add", (6, 6, 40)),  # the last tensor at stride 8, after its residual add
    ("efficientnet_lite0", 96, "block3b_add", (12, 12, 40)),
    ("mobilenet_v3_small", 96, "expanded_conv_2_add", (12, 12, 24)),  # raw ops (hard-swish) in the graph
])
def test_the_cut_is_the_smallest_tensor_everything_later_depends_on_at_stride_8(name: str, size: int, cut: str, shape: tuple) -> None:
    layer = stem_cut(_classifier(name, size).backbone)
    assert layer is not None and layer.name == cut and tuple(layer.output.shape[1:]) == shape


def test_a_backbone_whose_stem_holds_most_weights_is_not_frozen() -> None:
    backbone = _classifier("plain_cnn", 48).backbone  # its convolutions all lie before stride 8: nothing would learn
    assert stem_cut(backbone) is None and freeze_stem(backbone) is None
    assert all(layer.trainable for layer in backbone.layers)


def test_a_fine_tune_step_changes_the_rest_but_not_the_stem() -> None:
    import keras

    keras.utils.set_random_seed(0)
    classifier = _classifier("mobilenet_v2", 32, alpha=0.35)  # the smallest graph with a stem to freeze: a quick trace
    backbone = classifier.backbone
    backbone.trainable = True
    assert freeze_stem(backbone) == "block_5_add"
    frozen = [w for layer in backbone.layers[: [layer.name for layer in backbone.layers].index("block_5_add") + 1] for w in layer.weights]
    trainable = {id(w) for w in classifier.model.trainable_weights}
    share = sum(int(np.prod(w.shape)) for w in frozen) / sum(int(np.prod(w.shape)) for w in backbone.weights)
    assert frozen and not any(id(w) in trainable for w in frozen) and 0 < share <= MAX_FROZEN_SHARE
    before = {id(w): w.numpy().copy() for w in backbone.weights}
    import tensorflow as tf

    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    with tf.GradientTape() as tape:  # one eager step (a compiled fit's trace costs ~30 s here)
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(np.eye(3)[np.arange(8) % 3], classifier.model(x, training=True)))
    grads = tape.gradient(loss, classifier.model.trainable_weights)
    keras.optimizers.SGD(0.1).apply_gradients([(g, w) for g, w in zip(grads, classifier.model.trainable_weights) if g is not None])
    assert all(np.array_equal(w.numpy(), before[id(w)]) for w in frozen)
    later = [w for w in backbone.trainable_weights if id(w) not in {id(f) for f in frozen}]
    assert later and any(not np.array_equal(w.numpy(), before[id(w)]) for w in later)


@pytest.mark.parametrize(("unfreeze", "keep_stem_frozen", "cut"), [(2, True, None), (-1, True, "block_5_add"), (-1, False, None)])
def test_the_fine_tune_trains_the_top_layers_or_all_but_the_stem_and_never_batch_norm(unfreeze: int, keep_stem_frozen: bool,
                                                                                    cut: str | None) -> None:
    import keras

    from edgecls.training.stem import set_fine_tune_trainable

    backbone = _classifier("mobilenet_v2", 32, alpha=0.35).backbone
    backbone.trainable = False  # as the head phase leaves a pretrained backbone
    assert set_fine_tune_trainable(backbone, unfreeze, keep_stem_frozen) == cut
    training = [layer for layer in backbone.layers if layer.weights and layer.trainable]
    assert training and not any(isinstance(layer, keras.layers.BatchNormalization) for layer in training)
    weighted = [layer for layer in backbone.layers if layer.weights]
    if unfreeze > 0:  # the top `unfreeze` weighted layers, less any BatchNorm among them
        assert {layer.name for layer in training} <= {layer.name for layer in weighted[-unfreeze:]}
    elif cut:
        names = [layer.name for layer in backbone.layers]
        assert all(names.index(layer.name) > names.index(cut) for layer in training)
    else:
        assert len(training) == sum(not isinstance(layer, keras.layers.BatchNormalization) for layer in weighted)
