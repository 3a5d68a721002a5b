"""Run folders of UNTRAINED tiny zoo classifiers, made in-process (no training): inputs of the zoo export tests.

Export validation compares each artifact with the Keras model, so random weights are enough for fp32; int8 runs
with the accuracy gate off (an untrained model has no accuracy to keep).
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from edgecls.meta import ModelMeta
from edgecls.zoo import get_spec

CLASSES = 3  # the first classes of the Fashion-MNIST tree (8 images each)
PER_SPLIT = {"train": 4, "val": 2, "test": 2}  # images per class: 12 train images calibrate (the minimum is 10)
# The smallest width each family's builder accepts (None: the backbone has no width multiplier).
SMALLEST_ALPHA = {"mobilenet_v2": 0.35, "plain_cnn": 0.25}
MOBILENET_V3_ALPHA = 0.35


def tiny_alpha(name: str) -> float | None:
    if name.startswith("mobilenet_v3"):
        return MOBILENET_V3_ALPHA
    return SMALLEST_ALPHA.get(name)


def tiny_size(name: str) -> int:
    return max(get_spec(name).min_size, 32)


def make_run(name: str, run: Path, tree: Path, seed: int = 0) -> Path:
    """RUN/{model.keras, meta.json, splits.json} for an untrained `name` at its smallest size and width."""
    from edgecls.data.folder import scan_class_folders
    from edgecls.run_folder import MODEL_FILE, save_model, write_splits
    from edgecls.zoo.classifier import build_classifier

    tree = tree / "train" if (tree / "train").is_dir() else tree  # the Fashion-MNIST tree is pre-split
    classes, paths, labels = scan_class_folders(tree)
    kept = classes[:CLASSES]
    splits: dict[str, SimpleNamespace] = {split: SimpleNamespace(paths=[], labels=[]) for split in PER_SPLIT}
    for index in range(CLASSES):
        files = sorted(p for p, y in zip(paths, labels) if y == index)
        start = 0
        for split, count in PER_SPLIT.items():
            splits[split].paths += files[start : start + count]
            splits[split].labels += [index] * count
            start += count
    size = tiny_size(name)
    spec = get_spec(name)
    import keras

    keras.utils.set_random_seed(seed)
    classifier = build_classifier(name, CLASSES, (size, size), weights=None, alpha=tiny_alpha(name))
    run.mkdir(parents=True, exist_ok=True)
    save_model(classifier.model, run / MODEL_FILE)
    ModelMeta(architecture=name, input_size=(size, size), labels=list(kept), mean=spec.mean, std=spec.std).save(run)
    write_splits(run, tree, list(kept), {k: SimpleNamespace(paths=v.paths, labels=np.asarray(v.labels)) for k, v in splits.items()})
    return run
