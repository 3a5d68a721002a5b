"""Decoding splits into arrays (parallel, shared preprocessing) and tf.data pipelines with augmentation."""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError
from edgecls.preprocess import load_for_model

IN_MEMORY_LIMIT_BYTES = 6 * 1024**3


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; factors follow keras' Random* layers."""

    flip: bool = True
    rotation: float = 0.05  # fraction of a full turn
    zoom: float = 0.1
    brightness: float = 0.1
    contrast: float = 0.1

    def __post_init__(self) -> None:
        for name in ("rotation", "zoom", "brightness", "contrast"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"--{name} {value} is outside [0, 1)", f"Use e.g. --{name} 0.1, or 0 to disable")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_images(
    paths: Sequence[Path],
    size: tuple[int, int],
    crop_fraction: float = 1.0,
    interpolation: str = "bicubic",
    progress: Any = None,
    workers: int = 8,
) -> np.ndarray:
    """Decode and resize files into one uint8 array (N, h, w, 3); Pillow releases the GIL, so threads help."""
    height, width = size
    needed = len(paths) * height * width * 3
    if needed > IN_MEMORY_LIMIT_BYTES:
        raise ConfigError(
            f"{len(paths)} images at {height}x{width} need {needed / 1024**3:.1f} GiB in memory",
            "Use a smaller --img-size or a subset of the data",
        )
    out = np.empty((len(paths), height, width, 3), dtype=np.uint8)

    def load(index: int) -> int:
        out[index] = load_for_model(paths[index], size, crop_fraction, interpolation)
        return index

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(load, range(len(paths))):
            if progress is not None:
                progress()
    return out


def augmenter(config: AugmentConfig, seed: int) -> Any:
    """A keras Sequential of random layers working on 0..255 pixels, or None when all are off."""
    import keras

    layers: list[Any] = []
    if config.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if config.rotation:
        layers.append(keras.layers.RandomRotation(config.rotation, fill_mode="reflect", seed=seed + 1))
    if config.zoom:
        layers.append(keras.layers.RandomZoom(config.zoom, fill_mode="reflect", seed=seed + 2))
    if config.brightness:
        layers.append(keras.layers.RandomBrightness(config.brightness, value_range=(0, 255), seed=seed + 3))
    if config.contrast:
        layers.append(keras.layers.RandomContrast(config.contrast, seed=seed + 4))
    return keras.Sequential(layers, name="augment") if layers else None


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    training: bool,
    augment: AugmentConfig | None,
    seed: int,
) -> Any:
    """tf.data over in-memory uint8 images: shuffle and augment only in training, one-hot labels, prefetch."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
    if training:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    augment_layers = augmenter(augment, seed) if (training and augment is not None) else None

    def to_float(x: Any, y: Any) -> tuple[Any, Any]:
        x = tf.cast(x, tf.float32)
        if augment_layers is not None:
            x = tf.clip_by_value(augment_layers(x, training=True), 0.0, 255.0)
        return x, tf.one_hot(y, num_classes)

    dataset = dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
