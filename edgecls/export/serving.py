"""The traced Keras model that the ONNX and OpenVINO writers both convert, and their scratch folder.

`serving_function` maps "pixels" float32 (None, h, w, 3) 0..255 to {"probabilities": float32 (None, classes)};
TensorFlow is imported only when it is called.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from edgecls.errors import require
from edgecls.export.base import INPUT_NAME, OUTPUT_NAME
from edgecls.fsutil import TEMP_PREFIX


def serving_function(model: Any, size: tuple[int, int]) -> Any:
    """The Keras model as a tf.function with a dynamic batch: INPUT_NAME -> {OUTPUT_NAME: probabilities}."""
    tf = require("tensorflow", "train")
    spec = tf.TensorSpec([None, *size, 3], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(pixels: Any) -> dict[str, Any]:
        return {OUTPUT_NAME: tf.cast(model(pixels, training=False), tf.float32)}

    return serve


def work_dir(out_dir: Path) -> Path:
    """A scratch folder inside out_dir (writers write nowhere else; swept like every edgecls temp); the caller removes it."""
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".work", dir=out_dir))
