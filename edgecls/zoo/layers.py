"""Custom Keras layers that every saved edgecls model may contain. Import before loading a model."""
from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="edgecls")
class InputNormalization(keras.layers.Layer):
    """(x - mean) / std on 0..255 RGB pixels, optionally reversing RGB to BGR first (for caffe-style backbones)."""

    def __init__(self, mean: list[float], std: list[float], reverse_channels: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        self.reverse_channels = bool(reverse_channels)

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        if self.reverse_channels:  # three slices and a concatenation: ops.flip becomes REVERSE_V2, which the Edge TPU lacks
            x = ops.concatenate([x[..., 2:3], x[..., 1:2], x[..., 0:1]], axis=-1)
        scale = ops.convert_to_tensor([1.0 / s for s in self.std], dtype=self.compute_dtype)
        offset = ops.convert_to_tensor([-m / s for m, s in zip(self.mean, self.std)], dtype=self.compute_dtype)
        return x * scale + offset

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mean": self.mean, "std": self.std, "reverse_channels": self.reverse_channels}
