"""Environment report for `edgecls doctor`: imports TensorFlow only if it is installed, to list devices."""
from __future__ import annotations

import importlib.util
import os
import platform
from importlib import metadata
from typing import Any

PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert", "tflite-runtime", "onnxruntime", "openvino", "nncf", "opencv-python-headless", "numpy", "pillow")


def diagnose(list_devices: bool = True) -> dict[str, Any]:
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu cores": os.cpu_count(),
    }
    for package in PACKAGES:
        try:
            report[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            report[package] = "not installed"
    if list_devices and importlib.util.find_spec("tensorflow") is not None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        report["tensorflow devices"] = ", ".join(f"{d.device_type}:{d.name.split(':')[-1]}" for d in tf.config.list_physical_devices()) or "none"
        report["GPU"] = "yes (mixed precision + XLA used by train)" if tf.config.list_physical_devices("GPU") else "no (training runs on the CPU)"
    report["edgetpu library"] = "found" if _find_library("edgetpu") else "not found (needed only for a Coral)"
    return report


def _find_library(name: str) -> bool:
    import ctypes.util

    return ctypes.util.find_library(name) is not None
