"""Decoding splits into arrays (parallel, shared preprocessing) and tf.data pipelines whose every epoch is reproducible."""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError
from edgecls.preprocess import load_for_model
from edgecls.training.augment import AugmentConfig, augment_batch

__all__ = ["AugmentConfig", "load_images", "make_dataset"]

IN_MEMORY_LIMIT_BYTES = 6 * 1024**3


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


def make_dataset(
    x: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    training: bool,
    augment: AugmentConfig | None,
    seed: int,
    epochs: tuple[int, int] = (0, 1),
    ramp_from: int | None = None,
) -> Any:
    """tf.data over in-memory arrays (uint8 images or float features): float32 batches, one-hot labels, prefetch.

    Evaluation (training=False): every item once, in order. Training: the batches of epochs [first, end) back to
    back, for fit(steps_per_epoch=ceil(len(x) / batch_size)). Each epoch's order and augmentation are a pure
    function of (seed, epoch): a run resumed at epoch k sees exactly the batches the uninterrupted run saw there.
    `ramp_from`: the augmentation's strength grows from 0 to full over that epoch (a head trained on clean
    features meets augmented images gradually, so the fine-tune does not open below it).
    """
    import tensorflow as tf

    if not training:
        items = tf.data.Dataset.from_tensor_slices((x, labels.astype(np.int32)))
        return items.batch(batch_size).map(lambda images, y: (tf.cast(images, tf.float32), tf.one_hot(y, num_classes)),
                                           num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    augment = augment if augment is not None and augment.active and x.ndim == 4 else None
    all_x, all_y = tf.constant(x), tf.constant(labels.astype(np.int32))
    steps = max(1, -(-len(x) // batch_size))

    def _ramp(strength: Any, step: Any, steps: int) -> Any:  # within the ramp epoch (strength 0 there): step / steps
        return tf.where(strength > 0.0, strength, tf.cast(step, tf.float32) / steps)

    def one_epoch(epoch: Any) -> Any:
        # Stateless draws only: the order depends on nothing but (seed, epoch), not on TF's global seed or history.
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        order_seed = tf.random.experimental.stateless_fold_in(epoch_seed, 0)
        order = tf.random.experimental.stateless_shuffle(tf.range(len(x), dtype=tf.int64), order_seed)
        augment_seed = tf.random.experimental.stateless_fold_in(epoch_seed, 1)
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size).enumerate()
        if ramp_from is None:
            strength = tf.constant(1.0)
        else:
            strength = tf.clip_by_value(tf.cast(epoch - ramp_from, tf.float32), 0.0, 1.0)
        return batches.map(lambda step, indices: (indices, tf.random.experimental.stateless_fold_in(augment_seed, step),
                                                  _ramp(strength, step, steps)))

    def to_float(indices: Any, batch_seed: Any, strength: Any) -> tuple[Any, Any]:
        images = tf.cast(tf.gather(all_x, indices), tf.float32)
        if augment is not None:
            images = augment_batch(images, augment, batch_seed, strength)
        return images, tf.one_hot(tf.gather(all_y, indices), num_classes)

    first, end = epochs
    stream = tf.data.Dataset.range(first, end).flat_map(one_epoch)
    return stream.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
