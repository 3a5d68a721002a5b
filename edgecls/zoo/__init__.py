"""Backbone zoo: registry of backbones with their input contracts, and classifier assembly.

Importing the package imports the model modules, whose `@register_backbone` decorators fill the registry
(the registry itself knows no member). None of them imports TensorFlow at import time.
"""
from edgecls.zoo import efficientnet_lite, keras_apps  # noqa: F401  (their decorators register them, in listing order)
from edgecls.zoo.registry import BackboneSpec, get_spec, list_backbones, register_backbone

__all__ = ["BackboneSpec", "create", "get_spec", "list_backbones", "list_models", "register_backbone"]


def create(name: str, num_classes: int, input_size: int | tuple[int, int] | None = None, weights: str | None = "auto", **kwargs):
    """A Keras classifier (raw 0..255 RGB pixels in, probabilities out) on backbone `name`."""
    from edgecls.zoo.classifier import build_classifier

    spec = get_spec(name)
    size = input_size or spec.default_size
    height, width = (size, size) if isinstance(size, int) else size
    return build_classifier(name, num_classes, (int(height), int(width)), weights, **kwargs).model


def list_models() -> list[str]:
    """Names of every registered backbone."""
    return [spec.name for spec in list_backbones()]
