"""Assemble a classifier: raw RGB pixels -> normalisation layer -> backbone -> dropout -> softmax head."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgecls.errors import ConfigError, ModelError, require
from edgecls.meta import ModelMeta
from edgecls.metadata.common import INPUT_NAME  # the one name of the image input, in every model and artifact
from edgecls.zoo.registry import BackboneSpec, get_spec

HEAD_NAME = "head"


@dataclass
class Classifier:
    """The full Keras model plus the pieces training needs separately."""

    model: Any  # keras.Model: float32 (h, w, 3) 0..255 RGB -> probabilities
    backbone: Any  # keras.Model: normalised pixels -> pooled features
    head: Any  # keras.Sequential: features -> probabilities
    features: Any  # keras.Model: raw pixels -> pooled features (shares weights with `model`)


def resolve_weights(spec: BackboneSpec, weights: str | None) -> str | None:
    """'auto' means ImageNet where the backbone has any, else random init."""
    if weights in (None, "none", ""):
        return None
    if weights == "auto":
        return None if spec.family == "plain" else "imagenet"
    return weights


def check_weights(spec: BackboneSpec, weights: str | None, input_size: tuple[int, int], alpha: float | None = None) -> None:
    """Fail fast, before any data or training work, when the backbone's pretrained weights cannot be had
    (a keras.applications ImageNet download while offline). Cheap, and TensorFlow-free."""
    if spec.check_weights is not None:
        spec.check_weights(input_size, resolve_weights(spec, weights), alpha)


def check_input_size(spec: BackboneSpec, size: tuple[int, int]) -> None:
    height, width = size
    if min(height, width) < spec.min_size:
        raise ConfigError(
            f"--img-size {height}x{width} is too small for {spec.name} (minimum {spec.min_size})",
            f"Use --img-size {max(spec.min_size, 32)} or larger",
        )
    if spec.fixed_size and (height, width) != (spec.default_size, spec.default_size):
        raise ConfigError(f"{spec.name} only takes {spec.default_size} px", f"Use --img-size {spec.default_size}")
    if max(height, width) > 1024:
        raise ConfigError(f"--img-size {height}x{width} is larger than 1024", "Use a smaller --img-size")


def build_classifier(
    name: str,
    num_classes: int,
    input_size: tuple[int, int],
    weights: str | None = "auto",
    alpha: float | None = None,
    dropout: float = 0.2,
) -> Classifier:
    """Build a fresh classifier for `num_classes` on backbone `name`."""
    keras = require("keras", "train")
    from edgecls.zoo.layers import InputNormalization

    spec = get_spec(name)
    check_input_size(spec, input_size)
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}", "Add class folders")
    if alpha is not None and not spec.supports_alpha:
        raise ConfigError(f"{name} has no width multiplier (--alpha {alpha})", "Drop --alpha")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"--dropout {dropout} is outside [0, 1)", "Use e.g. --dropout 0.2")

    backbone = spec.builder(input_size=input_size, weights=resolve_weights(spec, weights), alpha=alpha)
    inputs = keras.Input((*input_size, 3), name=INPUT_NAME, dtype="float32")
    normalized = InputNormalization(list(spec.mean), list(spec.std), spec.reverse_channels, name="normalize")(inputs)
    features = backbone(normalized, training=False)  # BatchNorm stays in inference mode, even unfrozen
    head = keras.Sequential(
        [
            keras.layers.Dropout(dropout, name="head_dropout"),
            keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="logits"),
        ],
        name=HEAD_NAME,
    )
    head.build((None, int(features.shape[-1])))
    outputs = head(features)
    model = keras.Model(inputs, outputs, name=f"{name}_classifier")
    return Classifier(model=model, backbone=backbone, head=head, features=keras.Model(inputs, features, name=f"{name}_features"))


def split_classifier(model: Any) -> Classifier:
    """Recover the parts of a classifier loaded from disk."""
    keras = require("keras", "train")
    try:
        head = model.get_layer(HEAD_NAME)
        normalize = model.get_layer("normalize")
    except ValueError as exc:
        raise ModelError(
            f"model '{model.name}' was not built by edgecls (no '{HEAD_NAME}' layer)", "Train it with 'edgecls train'"
        ) from exc
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model) and layer is not head)
    features = keras.Model(model.inputs, backbone(normalize.output, training=False))
    return Classifier(model=model, backbone=backbone, head=head, features=features)


def pretrained_imagenet(name: str) -> tuple[Any, ModelMeta]:
    """The ImageNet classifier of a backbone whose weights ship offline (efficientnet_lite*)."""
    spec = get_spec(name)
    if spec.family != "efficientnet_lite":
        raise ModelError(
            f"'{name}' has no offline ImageNet classifier",
            "Use efficientnet_lite0/1/2, or a run folder made by 'edgecls train'",
        )
    from edgecls.zoo.efficientnet_lite import imagenet_head
    from edgecls.zoo.imagenet import imagenet_labels

    size = (spec.default_size, spec.default_size)
    classifier = build_classifier(name, 1000, size, weights="imagenet", dropout=0.0)
    kernel, bias = imagenet_head(name)
    classifier.head.get_layer("logits").set_weights([kernel, bias])
    meta = ModelMeta(
        architecture=name,
        input_size=size,
        labels=imagenet_labels(),
        mean=spec.mean,
        std=spec.std,
        crop_fraction=spec.imagenet_crop,
        training={"source": "ImageNet-1k checkpoint", "weights_package": spec.offline_weights},
        versions=versions(),
    )
    return classifier.model, meta


def versions() -> dict[str, str]:
    """Versions of the libraries that shape a model's numbers."""
    import platform
    from importlib import metadata

    found = {"python": platform.python_version()}
    for package in ("edgecls", "tensorflow", "tensorflow-cpu", "keras", "numpy", "pillow"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found
