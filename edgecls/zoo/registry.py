"""Backbone registry: `@register_backbone(...)` on a builder, `get_spec`, `list_backbones`. No TensorFlow here.

The registry knows none of its members (timm's `@register_model` pattern): each model module imports this one
and registers its builders when it is imported, and `edgecls/zoo/__init__.py` imports the model modules, so
importing anything under `edgecls.zoo` fills the registry.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgecls.errors import ModelError, suggest

# builder(input_size=(h, w), weights="imagenet"|None|path, alpha=float|None) -> keras.Model
# mapping normalised float (h, w, 3) input to pooled features (batch, channels).
Builder = Callable[..., Any]
# check_weights(input_size=(h, w), weights="imagenet"|None|path, alpha=float|None) -> None: a cheap, TF-free
# check that the weights the builder will need can be had (e.g. Keras' download cache); raises EdgeclsError.
WeightsCheck = Callable[[tuple[int, int], str | None, float | None], None]


@dataclass(frozen=True)
class EdgeTpuFit:
    """How a backbone's full-integer TFLite graph maps to the Edge TPU, as export/edgetpu.py's op report finds it
    (measured on a tiny int8 instance; tests/test_edgetpu_gate.py keeps every entry true)."""

    maps_fully: bool  # every op from input to softmax is on Coral's list: one Edge TPU segment, nothing on the CPU
    first_cpu_op: str | None = None  # the TFLite op that cuts the graph when it does not map fully
    fix: str = ""  # what to use instead when it does not


@dataclass(frozen=True)
class Imx500Fit:
    """Whether `edgecls export --target imx500` converts a backbone for the Raspberry Pi AI Camera (Sony IMX500), and why.

    The converter takes ReLU(6.), GlobalAveragePooling2D, softmax and arithmetic; it refuses preprocessing layers
    (Rescaling, Normalization), Lambda, Activation('relu6'), PReLU, ELU and GlobalMaxPooling2D, and any network that
    does not fit the sensor's 8 MB. export/imx500_worker.py rebuilds the backbones marked `converts`."""

    converts: bool
    note: str  # what maps, with measured sensor memory where known
    reason: str = ""  # why not, when it does not
    fix: str = ""  # what to train instead

    @property
    def label(self) -> str:
        return "yes" if self.converts else "no"


_IMX500_FIX = "mobilenet_v2 (--alpha 0.35 / 0.5 / 1.0), efficientnet_lite0 or mobilenet_v3_*_minimalistic"
_IMX500_TOO_BIG = "does not fit the sensor's 8 MB"
IMX500_FITS: dict[str, Imx500Fit] = {
    "mobilenet_v2": Imx500Fit(True, "ReLU6: maps whole; 224 px uses 21% / 25% / 49% of the sensor memory at alpha 0.35 / 0.5 / 1.0 "
                                    "(96 px, alpha 0.35: 10%)"),
    "mobilenet_v3_small_minimalistic": Imx500Fit(True, "ReLU, no hard-swish or squeeze-excite: maps whole; 96 px uses 9% of the "
                                                       "sensor memory"),
    "mobilenet_v3_large_minimalistic": Imx500Fit(True, "ReLU, no hard-swish or squeeze-excite: converter-accepted layers (not yet "
                                                       "converted here)"),
    "efficientnet_lite0": Imx500Fit(True, "ReLU6, no squeeze-excite: maps whole; 96 px uses 50% of the sensor memory"),
    "efficientnet_lite1": Imx500Fit(True, "ReLU6, no squeeze-excite: maps whole"),
    "efficientnet_lite2": Imx500Fit(True, "ReLU6, no squeeze-excite: maps whole"),
    "plain_cnn": Imx500Fit(True, "ReLU6, max pooling, global average pooling: maps whole; 32 px uses 4% of the sensor memory"),
    "mobilenet_v3_small": Imx500Fit(False, "", "hard-swish + squeeze-excite: not rebuilt for the IMX500 by edgecls", _IMX500_FIX),
    "mobilenet_v3_large": Imx500Fit(False, "", "hard-swish + squeeze-excite: not rebuilt for the IMX500 by edgecls", _IMX500_FIX),
    "efficientnet_b0": Imx500Fit(False, "", "Rescaling/Normalization layers inside the Keras backbone; swish + squeeze-excite",
                                 _IMX500_FIX),
    "resnet50": Imx500Fit(False, "", f"{_IMX500_TOO_BIG} (imxconv-tf: 307% of it at 224 px)", _IMX500_FIX),
    "densenet121": Imx500Fit(False, "", f"{_IMX500_TOO_BIG} (8.1 M int8 weights alone)", _IMX500_FIX),
    "inception_v3": Imx500Fit(False, "", f"{_IMX500_TOO_BIG} (23.9 M int8 weights)", _IMX500_FIX),
    "vgg16": Imx500Fit(False, "", f"{_IMX500_TOO_BIG} (138 M int8 weights)", _IMX500_FIX),
}


def imx500_fit(name: str) -> Imx500Fit:
    """The IMX500 record of backbone `name` (one that has none does not convert)."""
    return IMX500_FITS.get(name) or Imx500Fit(False, "", f"no IMX500 record for backbone '{name}'", _IMX500_FIX)


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone and its input contract."""

    name: str
    family: str
    default_size: int
    min_size: int
    mean: tuple[float, float, float]  # applied to 0..255 RGB pixels inside the model
    std: tuple[float, float, float]
    reverse_channels: bool  # True when the backbone was trained on BGR (caffe-style)
    params_m: float  # millions, ImageNet head included, at default width
    macs_m: float  # millions of multiply-adds at default size
    source: str  # where params/MACs come from
    offline_weights: str | None  # Python package that ships ImageNet weights, if any
    edge_notes: str
    edgetpu: EdgeTpuFit
    builder: Builder
    fixed_size: bool = False
    supports_alpha: bool = False
    imagenet_crop: float = 0.875  # centre crop used for ImageNet evaluation
    check_weights: WeightsCheck | None = None

    @property
    def offline_weights_installed(self) -> bool:
        return self.offline_weights is not None and importlib.util.find_spec(self.offline_weights) is not None

    @property
    def imx500(self) -> Imx500Fit:
        return imx500_fit(self.name)


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, **spec: Any) -> Callable[[Builder], Builder]:
    """Register `builder` under `name` with the given BackboneSpec fields."""

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"backbone '{name}' registered twice")
        _REGISTRY[name] = BackboneSpec(name=name, builder=builder, **spec)
        return builder

    return decorate


def list_backbones() -> list[BackboneSpec]:
    """Every registered backbone, in registration order."""
    return list(_REGISTRY.values())


def get_spec(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(
            f"unknown model '{name}'.{suggest(name, _REGISTRY)}",
            "Run 'edgecls models' to list the available backbones",
        ) from None
