"""`edgecls data check`: what a training run would see in a folder, and what is wrong with it.

The report uses the same scan and split rules as training (load_splits), so split counts are the
ones a run with the same fractions and seed gets. Everything in it is JSON-serialisable; paths are
relative to the root.
"""
from __future__ import annotations

import os
import statistics
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from edgecls.data.folder import DatasetSplits, load_splits
from edgecls.data.mirror import mirror_check, open_image
from edgecls.preprocess import file_sha256

IMBALANCE_WARN = 3.0  # max/min train images per class above this gets a warning
FEW_IMAGES_WARN = 10  # classes with fewer train images than this get a warning


def _file_info(path: Path) -> tuple[str, tuple[int, int] | None, str | None]:
    """(content sha256, (width, height) from the header or None, PIL mode or None)."""
    digest = file_sha256(path)
    try:
        with Image.open(path) as image:
            return digest, image.size, image.mode
    except (OSError, SyntaxError, ValueError):  # already verified by load_splits; a file changed since then only loses its size
        return digest, None, None


def _sha256(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError:  # gone or unreadable since the scan: it cannot be a duplicate of anything
        return f"unreadable {path}"


def cross_split_duplicates(data: DatasetSplits, known: dict[Path, str] | None = None) -> list[list[tuple[str, Path]]]:
    """Groups of byte-identical files that sit in more than one split, as [(split, path), ...].

    Training warns about them: a test image that is also a training image makes evaluation optimistic. `known`: the
    sha256 of files already read (training's decoding pass); the others are read here.
    """
    files = [(name, path) for name, split in data.splits().items() for path in split.paths]
    digests = dict(known or {})
    unread = list({path for _, path in files if path not in digests})  # only these go to the threads (70,000 known: ~1.5 s saved)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        digests.update(zip(unread, pool.map(_sha256, unread)))
    groups: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for item in files:
        groups[digests[item[1]]].append(item)
    return [members for members in groups.values() if len({split for split, _ in members}) > 1]


def _stats(values: list[int]) -> dict[str, float]:
    """min / median / max; a whole-number median is written as an int."""
    if not values:
        return {"min": 0, "median": 0, "max": 0}
    median = statistics.median(values)
    return {"min": min(values), "median": int(median) if float(median).is_integer() else median, "max": max(values)}


def check_dataset(root: str | Path, val_split: float = 0.1, test_split: float = 0.1, seed: int = 0) -> dict:
    """Classes, per-split counts, imbalance, image sizes, unreadable files, duplicates, and whether a horizontal flip
    would turn one class into another (data/mirror.py).

    Raises DataError for the same structural problems that stop training (see load_splits).
    """
    data = load_splits(root, val_split=val_split, test_split=test_split, seed=seed, verify=True)
    root = data.root

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    files = [(name, path, int(label)) for name, split in data.splits().items() for path, label in zip(split.paths, split.labels)]
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        infos = list(pool.map(lambda item: _file_info(item[1]), files))

    groups: dict[str, list[dict]] = defaultdict(list)
    widths: list[int] = []
    heights: list[int] = []
    modes: Counter[str] = Counter()
    for (split, path, label), (sha, size, mode) in zip(files, infos):
        groups[sha].append({"path": rel(path), "split": split, "class": data.classes[label]})
        if size:
            widths.append(size[0])
            heights.append(size[1])
        if mode:
            modes[mode] += 1
    duplicates = []
    for sha, members in sorted(groups.items(), key=lambda kv: kv[1][0]["path"]):
        if len(members) > 1:
            duplicates.append({
                "sha256": sha[:16],
                "files": members,
                "cross_split": len({m["split"] for m in members}) > 1,
                "cross_class": len({m["class"] for m in members}) > 1,
            })

    counts = data.counts()
    train_counts = [int(n) for n in counts["train"].values()]
    smallest = min(train_counts, default=0)
    imbalance = round(max(train_counts) / smallest, 3) if smallest else None
    unreadable = [{"path": rel(path), "reason": reason} for path, reason in data.skipped]

    warnings = []
    if imbalance and imbalance > IMBALANCE_WARN:
        warnings.append(f"classes are imbalanced: the largest has {imbalance}x the images of the smallest in train")
    few = [name for name, n in counts["train"].items() if n < FEW_IMAGES_WARN]
    if few:
        warnings.append(f"{len(few)} class(es) have fewer than {FEW_IMAGES_WARN} training images: {', '.join(few)}")
    if not sum(counts["val"].values()):
        warnings.append("the validation split is empty")
    if unreadable:
        warnings.append(f"{len(unreadable)} unreadable file(s) will be skipped")
    cross_split = sum(1 for d in duplicates if d["cross_split"])
    if cross_split:
        warnings.append(f"{cross_split} image(s) appear in more than one split: evaluation results will be optimistic")
    cross_class = sum(1 for d in duplicates if d["cross_class"])
    if cross_class:
        warnings.append(f"{cross_class} image(s) appear under more than one class")
    train = data.train
    mirror = mirror_check(lambda row: open_image(train.paths[row]), train.labels, data.classes)
    if mirror["warning"]:
        warnings.append(f"{mirror['warning']} (train with --no-flip)")

    return {
        "root": str(root),
        "fingerprint": data.fingerprint,
        "presplit": data.presplit,
        "split_settings": {"val_split": val_split, "test_split": test_split, "seed": seed},
        "classes": list(data.classes),
        "counts": counts,
        "totals": {name: sum(c.values()) for name, c in counts.items()},
        "imbalance_ratio": imbalance,
        "image_size": {"count": len(widths), "width": _stats(widths), "height": _stats(heights)},
        "modes": dict(sorted(modes.items())),
        "unreadable": unreadable,
        "duplicates": duplicates,
        "mirror": mirror,
        "warnings": warnings,
    }
