"""Export: the FORMATS table, one writer module per format, validation, and the `export` entry point.

`from edgecls.export import export` (or `edgecls.export_model(...)`); TensorFlow is imported only when
an export runs.
"""
from __future__ import annotations

from typing import Any


def export(*args: Any, **kwargs: Any) -> Any:
    """See edgecls.export.api.export."""
    from edgecls.export.api import export as run_export

    return run_export(*args, **kwargs)
