"""keras.applications backbones and a small plain CNN, registered with their input contracts.

Params are keras.io/api/applications' figures (ImageNet head included); MACs are the papers'.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecls.errors import ConfigError, require
from edgecls.zoo.keras_weights import check_available, download_failed
from edgecls.zoo.registry import EdgeTpuFit, WeightsCheck, register_backbone

_TF_MODE = {"mean": (127.5, 127.5, 127.5), "std": (127.5, 127.5, 127.5), "reverse_channels": False}
_CAFFE_MODE = {"mean": (103.939, 116.779, 123.68), "std": (1.0, 1.0, 1.0), "reverse_channels": True}  # BGR order
_TORCH_MODE = {"mean": (123.675, 116.28, 103.53), "std": (58.395, 57.12, 57.375), "reverse_channels": False}
_IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "reverse_channels": False}
_SOURCE = "keras.io/api/applications (params); original papers (MACs)"
_MINIMALISTIC_SOURCE = "keras.applications.MobileNetV3 docstring table (params, MACs, top-1)"
# Edge TPU mapping of each backbone's int8 graph (export/edgetpu.py's report on a tiny instance; tests/test_edgetpu_gate.py).
_MAPS = EdgeTpuFit(maps_fully=True)
_HARD_SWISH = EdgeTpuFit(maps_fully=False, first_cpu_op="HARD_SWISH",
                         fix="mobilenet_v3_small_minimalistic / mobilenet_v3_large_minimalistic (ReLU, no squeeze-excite)")


def _application(backbone: str, constructor: str, input_size: tuple[int, int], weights: str | None, **kwargs: Any) -> Any:
    keras = require("keras", "train")
    build = getattr(keras.applications, constructor)
    weights_path = _weights_path(weights)
    alpha, minimalistic = kwargs.get("alpha"), bool(kwargs.get("minimalistic"))
    if weights == "imagenet":
        check_available(backbone, constructor, input_size, alpha, minimalistic)  # fail fast offline, before Keras tries to download
    try:
        model = build(
            include_top=False,
            weights="imagenet" if weights == "imagenet" else None,
            input_shape=(*input_size, 3),
            pooling="avg",
            **kwargs,
        )
    except Exception as exc:  # Keras reports a failed weights download as a bare Exception ("URL fetch failure")
        failure = download_failed(backbone, constructor, input_size, alpha, exc, minimalistic) if weights == "imagenet" else None
        if failure is not None:
            raise failure from exc
        if isinstance(exc, OSError | ValueError):
            raise ConfigError(
                f"{constructor} cannot be built with {kwargs or 'these settings'} at {input_size}: {exc}", "Change --img-size or --alpha"
            ) from exc
        raise
    if weights_path is not None:
        model.load_weights(weights_path)
    return model


def _download_check(backbone: str, constructor: str, minimalistic: bool = False) -> WeightsCheck:
    """BackboneSpec.check_weights for a keras.applications backbone: its ImageNet file cached, or downloadable."""

    def check(input_size: tuple[int, int], weights: str | None, alpha: float | None) -> None:
        if weights == "imagenet":
            check_available(backbone, constructor, input_size, alpha or 1.0, minimalistic)  # as the builders pass it

    return check


def _weights_path(weights: str | None) -> Path | None:
    if weights in (None, "imagenet"):
        return None
    path = Path(weights)
    if not path.is_file() or not path.name.endswith(".weights.h5"):
        raise ConfigError(f"--weights '{weights}' is not a .weights.h5 file", "Pass imagenet, none, or a path to a Keras .weights.h5 file")
    return path


def _no_alpha(name: str, alpha: float | None) -> None:
    if alpha is not None:
        raise ConfigError(f"{name} has no width multiplier (--alpha {alpha})", "Drop --alpha, or use mobilenet_v2 / mobilenet_v3_*")


@register_backbone(
    "mobilenet_v2", family="keras_applications", check_weights=_download_check("mobilenet_v2", "MobileNetV2"),
    default_size=224, min_size=32, **_TF_MODE,
    params_m=3.5, macs_m=300, source=_SOURCE, offline_weights=None, supports_alpha=True,
    edge_notes="Edge TPU-friendly (ReLU6); INT8 71.8 -> 70.8 top-1 published",
    edgetpu=_MAPS,
)
def mobilenet_v2(input_size: tuple[int, int], weights: str | None = "imagenet", alpha: float | None = None) -> Any:
    return _application("mobilenet_v2", "MobileNetV2", input_size, weights, alpha=alpha or 1.0)


@register_backbone(
    "mobilenet_v3_small", family="keras_applications", check_weights=_download_check("mobilenet_v3_small", "MobileNetV3Small"),
    default_size=224, min_size=32, **_TF_MODE,
    params_m=2.5, macs_m=56, source=_SOURCE, offline_weights=None, supports_alpha=True,
    edge_notes="hard-swish + squeeze-excite; INT8 loses more (67.5 -> 64.9 published); Edge TPU: use the minimalistic variant",
    edgetpu=_HARD_SWISH,
)
def mobilenet_v3_small(input_size: tuple[int, int], weights: str | None = "imagenet", alpha: float | None = None) -> Any:
    return _application("mobilenet_v3_small", "MobileNetV3Small", input_size, weights, alpha=alpha or 1.0, include_preprocessing=False)


@register_backbone(
    "mobilenet_v3_large", family="keras_applications", check_weights=_download_check("mobilenet_v3_large", "MobileNetV3Large"),
    default_size=224, min_size=32, **_TF_MODE,
    params_m=5.4, macs_m=217, source=_SOURCE, offline_weights=None, supports_alpha=True,
    edge_notes="hard-swish + squeeze-excite; INT8 75.2 -> 73.9 published; Edge TPU: use the minimalistic variant",
    edgetpu=_HARD_SWISH,
)
def mobilenet_v3_large(input_size: tuple[int, int], weights: str | None = "imagenet", alpha: float | None = None) -> Any:
    return _application("mobilenet_v3_large", "MobileNetV3Large", input_size, weights, alpha=alpha or 1.0, include_preprocessing=False)


@register_backbone(
    "mobilenet_v3_small_minimalistic", family="keras_applications",
    check_weights=_download_check("mobilenet_v3_small_minimalistic", "MobileNetV3Small", minimalistic=True),
    default_size=224, min_size=32, **_TF_MODE,
    params_m=2.0, macs_m=65, source=_MINIMALISTIC_SOURCE, offline_weights=None, supports_alpha=True,
    edge_notes="MobileNetV3 with ReLU and 3x3 kernels, no hard-swish or squeeze-excite: Edge TPU-friendly; 61.9 top-1 published",
    edgetpu=_MAPS,
)
def mobilenet_v3_small_minimalistic(input_size: tuple[int, int], weights: str | None = "imagenet", alpha: float | None = None) -> Any:
    return _application("mobilenet_v3_small_minimalistic", "MobileNetV3Small", input_size, weights, alpha=alpha or 1.0,
                        minimalistic=True, include_preprocessing=False)


@register_backbone(
    "mobilenet_v3_large_minimalistic", family="keras_applications",
    check_weights=_download_check("mobilenet_v3_large_minimalistic", "MobileNetV3Large", minimalistic=True),
    default_size=224, min_size=32, **_TF_MODE,
    params_m=3.9, macs_m=209, source=_MINIMALISTIC_SOURCE, offline_weights=None, supports_alpha=True,
    edge_notes="MobileNetV3 with ReLU and 3x3 kernels, no hard-swish or squeeze-excite: Edge TPU-friendly; 72.3 top-1 published",
    edgetpu=_MAPS,
)
def mobilenet_v3_large_minimalistic(input_size: tuple[int, int], weights: str | None = "imagenet", alpha: float | None = None) -> Any:
    return _application("mobilenet_v3_large_minimalistic", "MobileNetV3Large", input_size, weights, alpha=alpha or 1.0,
                        minimalistic=True, include_preprocessing=False)


@register_backbone(
    "efficientnet_b0", family="keras_applications", check_weights=_download_check("efficientnet_b0", "EfficientNetB0"),
    default_size=224, min_size=32, **_IDENTITY,
    params_m=5.3, macs_m=390, source=_SOURCE, offline_weights=None,
    edge_notes="swish + squeeze-excite widen activation ranges: INT8 loses more; prefer efficientnet_lite0",
    edgetpu=_MAPS,
)
def efficientnet_b0(input_size: tuple[int, int], weights: str | None = "imagenet", alpha: float | None = None) -> Any:
    _no_alpha("efficientnet_b0", alpha)
    return _application("efficientnet_b0", "EfficientNetB0", input_size, weights)


@register_backbone(
    "resnet50", family="keras_applications", check_weights=_download_check("resnet50", "ResNet50"),
    default_size=224, min_size=32, **_CAFFE_MODE,
    params_m=25.6, macs_m=4100, source=_SOURCE, offline_weights=None,
    edge_notes="accurate but heavy: ~10x Lite0's compute; BGR input",
    edgetpu=_MAPS,
)
def resnet50(input_size: tuple[int, int], weights: str | None = "imagenet", alpha: float | None = None) -> Any:
    _no_alpha("resnet50", alpha)
    return _application("resnet50", "ResNet50", input_size, weights)


@register_backbone(
    "densenet121", family="keras_applications", check_weights=_download_check("densenet121", "DenseNet121"),
    default_size=224, min_size=32, **_TORCH_MODE,
    params_m=8.1, macs_m=2900, source=_SOURCE, offline_weights=None,
    edge_notes="many concatenations; slow on CPUs and the Edge TPU",
    edgetpu=_MAPS,
)
def densenet121(input_size: tuple[int, int], weights: str | None = "imagenet", alpha: float | None = None) -> Any:
    _no_alpha("densenet121", alpha)
    return _application("densenet121", "DenseNet121", input_size, weights)


@register_backbone(
    "inception_v3", family="keras_applications", check_weights=_download_check("inception_v3", "InceptionV3"),
    default_size=299, min_size=75, **_TF_MODE,
    params_m=23.9, macs_m=5700, source=_SOURCE, offline_weights=None,
    edge_notes="heavy at 299 px",
    edgetpu=_MAPS,
)
def inception_v3(input_size: tuple[int, int], weights: str | None = "imagenet", alpha: float | None = None) -> Any:
    _no_alpha("inception_v3", alpha)
    return _application("inception_v3", "InceptionV3", input_size, weights)


@register_backbone(
    "vgg16", family="keras_applications", check_weights=_download_check("vgg16", "VGG16"),
    default_size=224, min_size=32, **_CAFFE_MODE,
    params_m=138.4, macs_m=15500, source=_SOURCE, offline_weights=None,
    edge_notes="138M parameters: too large for most edge devices; BGR input",
    edgetpu=_MAPS,
)
def vgg16(input_size: tuple[int, int], weights: str | None = "imagenet", alpha: float | None = None) -> Any:
    _no_alpha("vgg16", alpha)
    return _application("vgg16", "VGG16", input_size, weights)


@register_backbone(
    "plain_cnn", family="plain", default_size=32, min_size=8, **_TF_MODE,
    params_m=0.1, macs_m=6, source="counted (edgecls)", offline_weights=None, supports_alpha=True,
    edge_notes="tiny 4-block CNN for small inputs and tests; no pretrained weights", imagenet_crop=1.0, edgetpu=_MAPS,
)
def plain_cnn(input_size: tuple[int, int], weights: str | None = None, alpha: float | None = None) -> Any:
    if weights == "imagenet":
        raise ConfigError("plain_cnn has no ImageNet weights", "Use --weights none (the default for plain_cnn)")
    keras = require("keras", "train")
    width = alpha or 1.0
    inputs = keras.Input((*input_size, 3), name="normalized")
    x = inputs
    for index, filters in enumerate((32, 64, 128, 128)):
        x = keras.layers.Conv2D(max(8, int(filters * width)), 3, padding="same", use_bias=False, name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU(6.0, name=f"relu{index}")(x)
        if min(x.shape[1], x.shape[2]) >= 4:
            x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    model = keras.Model(inputs, outputs, name="plain_cnn")
    path = _weights_path(weights)
    if path is not None:
        model.load_weights(path)
    return model
