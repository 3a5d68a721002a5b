"""The traced Keras model that the ONNX and OpenVINO writers both convert, and their scratch folder.

`serving_function` maps "pixels" float32 (None, h, w, 3) 0..255 to {"probabilities": float32 (None, classes)};
TensorFlow is imported only when it is called.

The trace is frozen before either converter sees it: every tf.Variable and every other tensor the function
captures becomes a graph constant. tf2onnx's `from_function` takes each captured tensor that is not a variable
for a graph input, so Keras' built-in `Normalization` layer (its mean and variance are captured EagerTensors;
keras.applications EfficientNet-B0 carries one) became two extra ONNX inputs and the export failed.
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
    """The Keras model as a tf.function with a dynamic batch and no captured inputs: INPUT_NAME -> {OUTPUT_NAME: probabilities}."""
    tf = require("tensorflow", "train")
    spec = tf.TensorSpec([None, *size, 3], tf.float32, name=INPUT_NAME)
    frozen = frozen_function(model, spec)

    @tf.function(input_signature=[spec])
    def serve(pixels: Any) -> dict[str, Any]:
        return {OUTPUT_NAME: tf.nest.flatten(frozen(pixels))[0]}

    return serve


def frozen_function(model: Any, spec: Any) -> Any:
    """A ConcreteFunction of `model` on `spec` whose variables and captured tensors are constants (it captures nothing)."""
    tf = require("tensorflow", "train")
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    @tf.function(input_signature=[spec])
    def traced(pixels: Any) -> Any:
        return tf.cast(model(pixels, training=False), tf.float32)

    return convert_variables_to_constants_v2(traced.get_concrete_function())


def work_dir(out_dir: Path) -> Path:
    """A scratch folder inside out_dir (writers write nowhere else; swept like every edgecls temp); the caller removes it."""
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".work", dir=out_dir))
