"""Training-time augmentation as a pure function of a stateless seed: a resumed run replays every batch exactly.

The factors mean what keras' Random* layers mean (RandomFlip("horizontal"), RandomRotation, RandomZoom,
RandomBrightness on 0..255, RandomContrast), but every random draw comes from tf.random.stateless_* with a
seed derived from (run seed, epoch, batch), never from a stateful generator that restarts on resume.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgecls.errors import ConfigError


def _knob(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; each factor 0 turns its transform off."""

    flip: bool = _knob(True, "Random horizontal flips in training.")
    rotation: float = _knob(0.05, "Max random rotation, a fraction of a full turn (0: off).")
    zoom: float = _knob(0.1, "Max random zoom in or out, a fraction of the image size (0: off).")
    brightness: float = _knob(0.1, "Max random brightness shift, a fraction of the 0..255 range (0: off).")
    contrast: float = _knob(0.1, "Max random contrast change, a fraction (0: off).")
    auto: bool = _knob(True, "A --time-budget whose fine-tune sees the train images only a few times turns it off "
                             "(training/budget.py augmentation_decision); False: --augment was asked for.")

    def __post_init__(self) -> None:
        for name in ("rotation", "zoom", "brightness", "contrast"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"--{name} {value} is outside [0, 1)", f"Use e.g. --{name} 0.1, or 0 to disable")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def active(self) -> bool:
        return bool(self.flip or self.rotation or self.zoom or self.brightness or self.contrast)


def augment_batch(images: Any, config: AugmentConfig, seed: Any, strength: Any = 1.0) -> Any:
    """Augment a float32 (N, h, w, 3) batch of 0..255 pixels; `seed` is a stateless seed (shape [2], int).

    `strength` (0..1, a float or a scalar tensor) scales rotation, zoom, brightness and contrast; flips stay as set.
    """
    import tensorflow as tf

    count = tf.shape(images)[0]
    flip_seed, angle_seed, zoom_seed, brightness_seed, contrast_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 5))
    x = images

    def draw(draw_seed: Any, factor: float) -> Any:  # uniform in [-factor, factor] * strength, one per image
        return tf.random.stateless_uniform([count], draw_seed, -factor, factor) * strength

    if config.flip:
        flipped = tf.random.stateless_uniform([count], flip_seed) < 0.5
        x = tf.where(flipped[:, None, None, None], tf.reverse(x, axis=[2]), x)
    if config.rotation or config.zoom:
        angle = draw(angle_seed, config.rotation) * (2.0 * math.pi)
        scale = 1.0 + draw(zoom_seed, config.zoom)
        x = _rotate_and_zoom(x, angle, scale)
    if config.brightness:
        delta = draw(brightness_seed, config.brightness) * 255.0
        x = tf.clip_by_value(x + delta[:, None, None, None], 0.0, 255.0)
    if config.contrast:
        factor = 1.0 + draw(contrast_seed, config.contrast)
        mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        x = (x - mean) * factor[:, None, None, None] + mean
    return tf.clip_by_value(x, 0.0, 255.0)


def _rotate_and_zoom(images: Any, angle: Any, scale: Any) -> Any:
    """One bilinear resampling about the image centre, edges reflected (keras' fill_mode="reflect").

    scale > 1 samples a larger area (zooms out), as keras' RandomZoom with a positive factor does.
    """
    import tensorflow as tf

    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    # Output pixel (x, y) reads input pixel (a0 x + a1 y + a2, b0 x + b1 y + b2).
    a2 = cx - cos * cx + sin * cy
    b2 = cy - sin * cx - cos * cy
    zeros = tf.zeros_like(cos)
    transforms = tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT",
    )


def mirror_flip_decision(augment: AugmentConfig, images: Any, labels: np.ndarray,
                         classes: list[str]) -> tuple[dict[str, Any] | None, str | None]:
    """(the flip decision to record or None, a line to print or None) from the class names and a mirror check of the
    train images (data/mirror.py): a default flip that would turn one class into another is turned off; with --augment
    it is only warned about."""
    if not augment.flip:
        return None, None
    from rich.markup import escape

    from edgecls.data.mirror import mirror_check

    check = mirror_check(lambda row: images[row], labels, classes)
    if check["warning"] is None:
        return None, None
    if not augment.auto:
        return None, f"[yellow]warning:[/yellow] {escape(check['warning'])} (train with --no-flip)"
    decision = {"flip": False, "why": check["warning"], "pairs": check["pairs"], "name_hints": check["name_hints"]}
    return decision, f"augmentation: horizontal flip turned off ({escape(check['warning'])}; pass --augment to keep it)"
