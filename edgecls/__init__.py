"""edgecls: train, quantize, export, run and benchmark image classifiers for edge devices.

The heavy entry points are imported lazily so `import edgecls` never pulls in TensorFlow.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "train": "edgecls.training.recipe",
    "evaluate": "edgecls.training.evaluate",
    "predict": "edgecls.predictor",
    "load_classifier": "edgecls.predictor",
    "export_model": "edgecls.export.api",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        attribute = "export" if name == "export_model" else name
        return getattr(importlib.import_module(_LAZY[name]), attribute)
    if name in ("zoo", "runtime", "data", "export"):
        import importlib

        return importlib.import_module(f"edgecls.{name}")
    raise AttributeError(f"module 'edgecls' has no attribute '{name}'")
