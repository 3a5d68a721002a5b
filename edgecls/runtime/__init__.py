"""Run exported artifacts without TensorFlow: LiteRT (+ Edge TPU delegate), onnxruntime and OpenVINO.

The public face only; the code lives in base.py (the Backend protocol), common.py (what every backend
shares, and the runtime's errors), loader.py (load_backend, RUNTIMES), classifier.py (Classifier) and
one module per runtime. Nothing here imports TensorFlow (a Raspberry Pi installs edgecls[pi] without it).
"""
from __future__ import annotations

from edgecls.runtime.base import Backend
from edgecls.runtime.classifier import Classifier, Prediction
from edgecls.runtime.common import BackendRunError, BaseBackend, EdgeTPUError, check_batch, run_chunked
from edgecls.runtime.loader import RUNTIMES, RuntimeFormat, find_meta, load_backend

__all__ = [
    "RUNTIMES", "Backend", "BackendRunError", "BaseBackend", "Classifier", "EdgeTPUError", "Prediction", "RuntimeFormat",
    "check_batch", "find_meta", "load_backend", "run_chunked",
]
