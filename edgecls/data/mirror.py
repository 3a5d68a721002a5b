"""Would a horizontal flip turn one class into another? A check on the data before training flips its images.

Two signals, both cheap and free of TensorFlow:
- names: class names that name a side (left / right) or a glyph (one digit or letter): a mirrored glyph is another
  glyph or none, and a mirrored "left" is a "right";
- images: a nearest-class-mean classifier on small grayscale thumbnails. When most mirrored images of a class it
  recognises well land in one other class, and that class's mirror images in the first, the flip swaps the two
  (left / right arrows, "b" / "d").
A class that is only asymmetric (Fashion-MNIST's shoes all point left) is not flagged: its mirror images match no
other class, and the flip helped there (docs/benchmarks.md, the flip decision).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.data.sampling import stratified_sample

THUMB_SIDE = 24  # thumbnails of 24 x 24 grayscale pixels
MAX_PER_CLASS = 100  # images per class the image signal reads (a stratified sample: data/sampling.py)
MIN_PER_CLASS = 10  # a class with fewer images is not judged on its images
MIN_RECOGNISED_ABOVE_CHANCE = 0.5  # a class is judged when its own images are recognised this far from chance to 1
MIN_MIRRORED_AS_OTHER = 0.5  # and flagged when at least this share of its mirror images is recognised as one other class
REACH_QUANTILE = 0.9  # a mirror image counts as another class's when no farther from its mean than 90% of that class's own

_SIDES = re.compile(r"(?<![a-z])(left|right)(?![a-z])", re.IGNORECASE)


def name_hints(classes: Sequence[str]) -> list[str]:
    """The class names that say a flip is risky: a side (left / right) or a single digit or letter."""
    return [name for name in classes if _SIDES.search(name) or re.fullmatch(r"[0-9A-Za-z]", name.strip())]


def thumbnail(image: Any) -> np.ndarray:
    """A PIL image or a uint8 (h, w[, c]) array -> a float32 THUMB_SIDE^2 vector, zero mean and unit spread."""
    from PIL import Image

    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8).squeeze())
    small = np.asarray(picture.convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR), np.float32)
    small = small - small.mean()
    return (small / max(float(small.std()), 1e-3)).reshape(-1)


def mirror_pairs(thumbs: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> list[dict[str, Any]]:
    """The classes whose mirror images a nearest-class-mean classifier recognises as one other class whose mirror images
    it recognises as them: [{"class", "mirrored_as", "recognised", "mirrored_share"}] (shares of its sampled images)."""
    num_classes = len(classes)
    counts = np.bincount(labels, minlength=num_classes)
    judged = counts >= MIN_PER_CLASS
    if judged.sum() < 2:
        return []
    means = np.stack([thumbs[labels == k].mean(axis=0) if judged[k] else np.full(thumbs.shape[1], np.inf) for k in range(num_classes)])
    mirrored = thumbs.reshape(-1, THUMB_SIDE, THUMB_SIDE)[:, :, ::-1].reshape(len(thumbs), -1)
    predicted, distance = _nearest(thumbs, means)
    # A class's reach: how far from its mean most of its own images lie. A mirrored image that is nearest to another
    # class but outside its reach looks like nothing in particular (a mirrored 7 is nearest to the 1s, but no 1).
    reach = np.array([np.quantile(distance[(labels == k) & (predicted == k)], REACH_QUANTILE)
                      if np.any((labels == k) & (predicted == k)) else 0.0 for k in range(num_classes)])
    predicted_mirrored, distance_mirrored = _nearest(mirrored, means)
    predicted_mirrored = np.where(distance_mirrored <= reach[predicted_mirrored], predicted_mirrored, -1)
    chance = 1.0 / judged.sum()
    found: dict[int, tuple[int, float, float]] = {}  # class -> (the class its mirror images land in, recognised, share)
    for k in np.flatnonzero(judged):
        own = labels == k
        recognised = float(np.mean(predicted[own] == k))
        if recognised < chance + MIN_RECOGNISED_ABOVE_CHANCE * (1 - chance):
            continue  # the images say too little about this class
        landed = np.bincount(predicted_mirrored[own][predicted_mirrored[own] >= 0], minlength=num_classes)
        landed[k] = 0
        other = int(np.argmax(landed))
        share = float(landed[other] / own.sum())
        if share >= MIN_MIRRORED_AS_OTHER:
            found[int(k)] = (other, recognised, share)
    # Only pairs that mirror into each other: a left arrow and a right arrow do; a mirrored 7 near the 1s does not
    # make a mirrored 1 a 7 (the flip then shows the 7s from another side, it does not relabel them).
    return [{"class": classes[k], "mirrored_as": classes[other], "recognised": round(recognised, 3), "mirrored_share": round(share, 3)}
            for k, (other, recognised, share) in found.items() if found.get(other, (None,))[0] == k]


def _nearest(vectors: np.ndarray, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the nearest mean's index, the distance to it) of each vector; a mean of inf is never nearest."""
    finite = np.isfinite(means[:, 0])
    squared = np.full((len(vectors), len(means)), np.inf, np.float32)
    selected = means[finite]
    squared[:, finite] = (vectors ** 2).sum(1, keepdims=True) - 2 * vectors @ selected.T + (selected ** 2).sum(1)
    nearest = np.argmin(squared, axis=1)
    return nearest, np.sqrt(np.maximum(squared[np.arange(len(vectors)), nearest], 0.0))


def flip_warning(hinted: Sequence[str], pairs: Iterable[dict[str, Any]]) -> str | None:
    """One sentence on why a horizontal flip may hurt on this data (`hinted`: name_hints' names), or None."""
    reasons = [f"mirrored '{pair['class']}' images look like '{pair['mirrored_as']}' ({pair['mirrored_share']:.0%} of them)"
               for pair in pairs]
    if hinted:
        shown = ", ".join(f"'{name}'" for name in hinted[:6]) + (", ..." if len(hinted) > 6 else "")
        reasons.append(f"class names {shown} name a side or a glyph")
    if not reasons:
        return None
    return "a horizontal flip may turn one class into another: " + "; ".join(reasons)


def mirror_check(load: Callable[[int], Any], labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """The mirror check: {"pairs", "name_hints", "warning"}. `load(row)`: image `row` of `labels` (a PIL image or a
    uint8 array), read for up to MAX_PER_CLASS images of each class only; one that raises OSError is left out."""
    labels = np.asarray(labels, np.int64)
    rows, thumbs = [], []
    for row in stratified_sample(labels, MAX_PER_CLASS * len(classes), seed=0):
        try:
            thumbs.append(thumbnail(load(int(row))))
        except OSError:  # changed or gone since the scan: one image fewer
            continue
        rows.append(int(row))
    vectors = np.stack(thumbs) if thumbs else np.zeros((0, THUMB_SIDE ** 2), np.float32)
    pairs, hinted = mirror_pairs(vectors, labels[rows], classes), name_hints(classes)
    return {"pairs": pairs, "name_hints": hinted, "warning": flip_warning(hinted, pairs)}


def open_image(path: Path) -> Any:
    """A file's image, read fully (the file is closed again); a JPEG is decoded at a reduced size (draft), enough for a
    thumbnail: large photos cost little."""
    from PIL import Image

    with Image.open(path) as image:
        image.draft("L", (THUMB_SIDE * 4, THUMB_SIDE * 4))
        image.load()
        return image.copy()
