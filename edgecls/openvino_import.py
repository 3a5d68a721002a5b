"""OpenVINO and NNCF imported without their telemetry: every edgecls import of either goes through here.

`import openvino` starts openvino_telemetry (openvino.tools.ovc at import), which writes ~/intel/stats and a client id;
ov.convert_model and NNCF re-start it and send usage events to Google Analytics. Its one switch besides a consent file in
the user's home is CI=true. edgecls works offline and leaves the home folder alone: the imports, the converter and NNCF
run with CI=true, restored afterwards. TensorFlow-free.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from edgecls.errors import require


@contextlib.contextmanager
def telemetry_declined() -> Iterator[None]:
    previous = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = previous


def import_openvino(extra: str) -> Any:
    """The openvino module (MissingDependencyError naming `extra` when it is not installed)."""
    with telemetry_declined():
        return require("openvino", extra)


def import_nncf() -> Any:
    with telemetry_declined():
        return require("nncf", "export")
