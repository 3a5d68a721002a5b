"""Backbone zoo: registry of backbones with their input contracts, and classifier assembly."""
from edgecls.zoo.registry import BackboneSpec, get_spec, list_backbones, register_backbone

__all__ = ["BackboneSpec", "get_spec", "list_backbones", "register_backbone"]
