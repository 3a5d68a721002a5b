"""Backbone zoo: registry of backbones with their input contracts, and classifier assembly."""
from edgecls.zoo.registry import BackboneSpec, get_spec, list_backbones, register_backbone

__all__ = ["BackboneSpec", "get_spec", "list_backbones", "register_backbone"]


def create(name: str, num_classes: int, input_size: int | tuple[int, int] | None = None, weights: str | None = "auto", **kwargs):
    """A Keras classifier (raw 0..255 RGB pixels in, probabilities out) on backbone `name`."""
    from edgecls.zoo.classifier import build_classifier

    spec = get_spec(name)
    size = input_size or spec.default_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    return build_classifier(name, num_classes, size, weights, **kwargs).model


def list_models() -> list[str]:
    """Names of every registered backbone."""
    return [spec.name for spec in list_backbones()]


__all__ += ["create", "list_models"]
