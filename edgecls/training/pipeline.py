"""Decoding splits into arrays (parallel, shared preprocessing) and tf.data pipelines whose every epoch is reproducible.

A split too large for memory is streamed instead: a uint8 cache on disk (training/disk_cache.py, the same pixels),
read batch by batch inside the same pipeline, so the batches are identical to the in-memory ones.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError
from edgecls.preprocess import load_for_model
from edgecls.training.augment import AugmentConfig, augment_batch
from edgecls.training.disk_cache import CACHE_DIR, DiskImages, ScanCache

__all__ = ["AugmentConfig", "DecodedOnDemand", "TrainingData", "load_images", "load_training_data", "make_dataset", "should_stream"]

IN_MEMORY_LIMIT_BYTES = 6 * 1024**3
STREAM_MODES = ("auto", "on", "off")


def memory_budget_bytes() -> int:
    """What decoded splits may take in memory: 6 GiB, or half the physical memory when that is less."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return IN_MEMORY_LIMIT_BYTES
    return int(min(IN_MEMORY_LIMIT_BYTES, physical // 2))


def decoded_bytes(count: int, size: tuple[int, int]) -> int:
    return count * size[0] * size[1] * 3


def should_stream(mode: str, needed: int, budget: int) -> bool:
    """--stream auto: stream when the decoded splits (`needed` bytes) exceed `budget`; on: always; off: never (and
    ConfigError when they exceed it)."""
    if mode == "on":
        return True
    if needed <= budget:
        return False
    if mode == "off":
        raise ConfigError(f"the decoded images need {needed / 1024**3:.1f} GiB in memory, over the {budget / 1024**3:.1f} GiB budget "
                          "(--stream off)", "Use --stream auto (streams them from a uint8 cache on disk), a smaller --img-size or a subset")
    return True


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
            "Use --stream auto or on (streams them from disk), a smaller --img-size or a subset of the data",
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


class DecodedOnDemand:
    """Files read as a uint8 array (N, h, w, 3) one slice at a time (load_images on that slice): for one pass over a
    split too large for memory, e.g. evaluation batch by batch."""

    ndim = 4

    def __init__(self, paths: Sequence[Path], size: tuple[int, int], crop_fraction: float = 1.0, interpolation: str = "bicubic") -> None:
        self.paths, self.size, self.crop_fraction, self.interpolation = list(paths), size, crop_fraction, interpolation

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: slice) -> np.ndarray:
        return load_images(self.paths[key], self.size, self.crop_fraction, self.interpolation)


def make_dataset(
    x: np.ndarray | DiskImages,
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
    `x` a DiskImages: the same batches, each read from disk when it is needed (parallel reads, prefetched).
    """
    import tensorflow as tf

    all_y = tf.constant(labels.astype(np.int32))
    if not training:
        if isinstance(x, DiskImages):
            fetch = _disk_fetch(x, tf)
            batches = tf.data.Dataset.range(len(x)).batch(batch_size)
            return _shard_by_data(batches.map(lambda indices: (tf.cast(fetch(indices), tf.float32),
                                                               tf.one_hot(tf.gather(all_y, indices), num_classes)),
                                              num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE), tf)
        items = tf.data.Dataset.from_tensor_slices((x, labels.astype(np.int32)))
        return _shard_by_data(items.batch(batch_size).map(lambda images, y: (tf.cast(images, tf.float32), tf.one_hot(y, num_classes)),
                                                          num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE), tf)
    augment = augment if augment is not None and augment.active and x.ndim == 4 else None
    fetch = _disk_fetch(x, tf) if isinstance(x, DiskImages) else _memory_fetch(x, tf)
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
        images = tf.cast(fetch(indices), tf.float32)
        if augment is not None:
            images = augment_batch(images, augment, batch_seed, strength)
        return images, tf.one_hot(tf.gather(all_y, indices), num_classes)

    first, end = epochs
    stream = tf.data.Dataset.range(first, end).flat_map(one_epoch)
    return _shard_by_data(stream.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE), tf)


def _shard_by_data(dataset: Any, tf: Any) -> Any:
    """Several workers (--strategy multi-worker): each global batch is split across them (AutoShardPolicy.DATA: every
    worker builds the same batches, from the same seed, and keeps its share). The data is in memory or one cache
    file, not a set of files to share out; without this, tf.distribute first tries FILE and logs a warning.
    Without a multi-worker strategy the option does nothing."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _disk_fetch(images: DiskImages, tf: Any) -> Any:
    """indices -> the uint8 batch read from disk (tf.numpy_function; os.pread releases the GIL, so reads overlap)."""
    height, width = images.size

    def fetch(indices: Any) -> Any:
        batch = tf.numpy_function(images.gather, [indices], tf.uint8, stateful=False)
        return tf.ensure_shape(batch, (None, height, width, 3))

    return fetch


def _memory_fetch(images: np.ndarray, tf: Any) -> Any:
    all_x = tf.constant(images)
    return lambda indices: tf.gather(all_x, indices)


@dataclass
class TrainingData:
    splits: Any  # data.folder.DatasetSplits
    arrays: dict[str, Any]  # split name -> uint8 images (N, h, w, 3): an array, or a DiskImages when streamed
    streamed: bool
    digests: dict[Path, str]  # sha256 of the files' bytes that the decoding or caching pass read


def load_training_data(data: str, val_split: float, test_split: float, seed: int, size: tuple[int, int], stream: str,
                       run_dir: Path, console: Any, check: Callable[[Any], None] = lambda splits: None) -> TrainingData:
    """The splits (data.folder.load_splits) and their uint8 images at `size`, each file read once: the pass that verifies
    the files also decodes, resizes and hashes them (for the duplicate check), and keeps the pixels in memory or, streamed
    (--stream on, or more than the memory budget), writes them to a uint8 cache on disk under the run folder
    (training/disk_cache.py ScanCache). `check(splits)` runs before the images are used and before a new cache is made
    trusted (e.g. a resumed run's fingerprint): when it raises, that cache is removed. A resumed streamed run whose
    files did not change reuses its cache and reads no image."""
    import functools

    from rich.progress import Progress

    from edgecls.data.decode_pool import DecodeSpec, FileDecoder
    from edgecls.data.folder import scan_tree, split_tree

    names = ("train", "val", "test")
    tree = scan_tree(data, val_split, test_split)  # no decoding yet
    needed, budget = decoded_bytes(len(tree.paths), size), memory_budget_bytes()
    if not should_stream(stream, needed, budget):
        kept = _KeptImages(size)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("decoding images", total=len(tree.paths))
            with FileDecoder(DecodeSpec(size), kept.store, functools.partial(progress.advance, task)) as decoder:
                splits = split_tree(tree, val_split, test_split, seed, reason_of=decoder)
        check(splits)
        return TrainingData(splits, {name: kept.take(getattr(splits, name).paths) for name in names}, False, kept.digests)
    why = "--stream on" if stream == "on" else f"over the {budget / 1024**3:.1f} GiB memory budget"
    cache = ScanCache(run_dir / CACHE_DIR, tree.root, tree.paths, size)
    console.print(f"data: streaming from disk: the decoded images need {needed / 1024**3:.1f} GiB ({why}); "
                  + (f"reusing the uint8 cache at {size[0]} px in {cache.folder}" if cache.reused else
                     f"a uint8 cache at {size[0]} px is written once to {cache.folder}"))
    cache.start()  # the disk space is checked before any decoding
    try:
        with Progress(console=console, transient=True) as progress:
            if cache.reused:  # each file's verdict is in the cache's manifest: nothing to decode
                splits = split_tree(tree, val_split, test_split, seed, reason_of=cache.reason)
            else:
                task = progress.add_task("decoding images into the cache", total=len(tree.paths))
                spec = DecodeSpec(size, cache.crop_fraction, cache.interpolation)
                with FileDecoder(spec, cache.store, functools.partial(progress.advance, task), on_skipped=cache.skip) as decoder:
                    splits = split_tree(tree, val_split, test_split, seed, reason_of=decoder)
        check(splits)
    except BaseException:
        cache.discard()
        raise
    cache.commit()
    kept_paths = [path for name in names for path in getattr(splits, name).paths]
    return TrainingData(splits, {name: cache.images(getattr(splits, name).paths) for name in names}, True, cache.digests_of(kept_paths))


def warn_about_data(loaded: TrainingData, data: str, console: Any) -> None:
    """One warning line each: unreadable files that were skipped, and images that appear in more than one split."""
    import shlex

    from rich.markup import escape

    from edgecls.cli.common import printable
    from edgecls.data.check import cross_split_duplicates

    splits = loaded.splits
    if splits.skipped:
        console.print(f"[yellow]warning:[/yellow] skipped {len(splits.skipped)} unreadable image(s), e.g. "
                      f"{escape(printable(str(splits.skipped[0][0])))}: {escape(printable(splits.skipped[0][1]))}")
    duplicates = cross_split_duplicates(splits, loaded.digests)
    if duplicates:
        first = duplicates[0][0]
        other = next(member for member in duplicates[0] if member[0] != first[0])  # a group spans two splits at least
        example = " and ".join(f"{path} ({split})" for split, path in (first, other))
        console.print(f"[yellow]warning:[/yellow] {len(duplicates)} image(s) appear in more than one split "
                      f"(e.g. {escape(printable(example))}): test and validation results will be optimistic. "
                      f"List them with: edgecls data check {escape(printable(shlex.quote(data)))}")


class _KeptImages:
    """What the decoding pass (data.decode_pool.FileDecoder) gives while training in memory: each file read once, decoded,
    resized to the model's size (load_for_model_and_digest) and hashed; kept until its split's array is assembled."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self.pixels: dict[Path, np.ndarray] = {}
        self.digests: dict[Path, str] = {}

    def store(self, path: Path, pixels: np.ndarray, digest: str) -> None:
        self.pixels[path], self.digests[path] = pixels, digest

    def take(self, paths: Sequence[Path]) -> np.ndarray:
        """The images of `paths` as one array, freed here as they are copied."""
        out = np.empty((len(paths), *self.size, 3), np.uint8)
        for row, path in enumerate(paths):
            out[row] = self.pixels.pop(path)
        return out
