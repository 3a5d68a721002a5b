"""Scan ImageFolder trees and split them into train / val / test, deterministically.

Two layouts are accepted:
  * flat: ROOT/<class>/**/<image>. Val and test are carved per class (stratified) with the
    val_split / test_split fractions; a class with 3 or more images gets at least 1 image in each
    split whose fraction is > 0, and every class keeps at least 1 training image.
  * pre-split: ROOT/train/<class>/... plus optional ROOT/{val,validation,valid}/ and ROOT/test/,
    each holding the same class folders. The tree counts as pre-split only when it has train/
    and every visible sub-folder is a split name, so a flat tree can still have a class "train".
    Splits on disk are used as they are. Without a val folder, val is carved from train with
    val_split (stratified, as above). Without a test folder, test stays empty: the user chose
    the held-out data, and taking more images out of train would silently shrink it
    (test_split is ignored for pre-split trees; evaluation can fall back to val).

Carving is seeded and stable: images are ranked by sha256(seed, relative path) within each class,
so the same files give the same split on any machine, and adding an image moves at most a few
others. Sub-folders of a class folder are searched recursively, symlinks are followed (a folder
reached twice is read once, which breaks loops), hidden files and OS junk are skipped silently.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecls.data.decode_pool import DecodeSpec, FileDecoder, check_image, reasons_of
from edgecls.errors import ConfigError, DataError
from edgecls.meta import has_control_characters
from edgecls.preprocess import IMAGE_SUFFIXES

VAL_NAMES = ("val", "validation", "valid")
SPLIT_NAMES = ("train", *VAL_NAMES, "test")
JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx", "@eadir", "$recycle.bin", "system volume information"})


@dataclass(frozen=True, eq=False)
class Split:
    """Image paths and their int64 class indices, in a deterministic order."""

    paths: tuple[Path, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return self.paths == other.paths and np.array_equal(self.labels, other.labels)

    def class_counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.labels, minlength=num_classes).astype(int).tolist()


@dataclass(frozen=True)
class DatasetSplits:
    root: Path
    classes: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    presplit: bool
    skipped: tuple[tuple[Path, str], ...]  # (file, reason): unreadable images left out
    fingerprint: str  # short sha256 of class names and (relative path, size) of every image used

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {class: number of images}}."""
        return {
            name: dict(zip(self.classes, split.class_counts(len(self.classes))))
            for name, split in self.splits().items()
        }


@dataclass
class _Scan:
    folder: Path
    classes: list[str]
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)  # class -> files with other suffixes


def is_junk(name: str) -> bool:
    """Hidden files (.DS_Store, ._foo, .git) and OS clutter (Thumbs.db, __MACOSX, ...)."""
    return name.startswith(".") or name.lower() in JUNK_NAMES


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:
        return False


def visible_subfolders(folder: Path) -> list[Path]:
    """Sub-folders that are not hidden or junk, sorted by name."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot list folder '{folder}': {exc.strerror}", "Check its permissions") from exc
    return [Path(e.path) for e in entries if not is_junk(e.name) and _is_dir(e)]


def _walk_images(folder: Path, skipped: list[tuple[Path, str]]) -> tuple[list[Path], int]:
    """(image files under folder, sorted; count of files with other suffixes)."""
    images: list[Path] = []
    ignored = 0
    visited: set[str] = set()
    top = os.path.realpath(folder)
    stack = [folder]
    while stack:
        current = stack.pop()
        real = os.path.realpath(current)
        if real in visited or top.startswith(real + os.sep):  # loop, folder linked twice, or a link up
            continue
        visited.add(real)
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as exc:
            skipped.append((current, f"cannot list folder: {exc.strerror}"))
            continue
        subfolders = []
        for entry in entries:
            if is_junk(entry.name):
                continue
            if _is_dir(entry):
                subfolders.append(Path(entry.path))
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                if entry.is_symlink() and not os.path.exists(entry.path):
                    skipped.append((Path(entry.path), "broken symlink"))
                else:
                    images.append(Path(entry.path))
            else:
                ignored += 1
        stack.extend(reversed(subfolders))
    images.sort(key=lambda p: p.relative_to(folder).parts)
    return images, ignored


def _scan(folder: Path) -> _Scan:
    scan = _Scan(folder, [p.name for p in visible_subfolders(folder)])
    for label, name in enumerate(scan.classes):
        images, ignored = _walk_images(folder / name, scan.skipped)
        scan.paths.extend(images)
        scan.labels.extend([label] * len(images))
        scan.ignored[name] = ignored
    return scan


def scan_class_folders(folder: str | Path) -> tuple[list[str], list[Path], list[int]]:
    """(class names sorted, image paths, class index per path) for FOLDER/<class>/**/<image>.

    No decoding: unreadable files are only found by load_splits(verify=True).
    """
    scan = _scan(Path(folder))
    return scan.classes, scan.paths, scan.labels


def _verify(scan: _Scan, reason_of: Callable[[Path], str | None] | FileDecoder) -> None:
    """Drop files that do not decode (`reason_of(path)`: None, or why not; or a FileDecoder), recording why in
    scan.skipped. Files are submitted in bounded chunks: a tree of millions of files never holds a pending task per file."""
    reasons = reasons_of(reason_of, scan.paths)
    keep = [i for i, reason in enumerate(reasons) if reason is None]
    scan.skipped.extend((p, r) for p, r in zip(scan.paths, reasons) if r is not None)
    scan.paths = [scan.paths[i] for i in keep]
    scan.labels = [scan.labels[i] for i in keep]


def detect_layout(root: Path) -> dict[str, Path] | None:
    """{'train': ..., 'val': ..., 'test': ...} (present ones) for a pre-split tree, else None."""
    folders = visible_subfolders(root)
    names = {p.name.lower(): p for p in folders}
    if "train" not in names or not all(p.name.lower() in SPLIT_NAMES for p in folders):
        if folders and all(p.name.lower() in SPLIT_NAMES for p in folders):
            found = ", ".join(f"{p.name}/" for p in folders)
            raise DataError(f"'{root}' has {found} but no train/ folder", "Add a train/ folder with one folder per class")
        return None
    vals = [names[n] for n in VAL_NAMES if n in names]
    if len(vals) > 1:
        raise DataError(f"'{root}' has several validation folders: {', '.join(p.name for p in vals)}", "Keep one of them")
    layout = {"train": names["train"]}
    if vals:
        layout["val"] = vals[0]
    if "test" in names:
        layout["test"] = names["test"]
    return layout


def _check_fractions(val_split: float, test_split: float) -> None:
    for flag, value in (("--val-split", val_split), ("--test-split", test_split)):
        if not 0.0 <= value < 1.0:  # also rejects NaN
            raise ConfigError(f"{flag} must be at least 0 and below 1, got {value}", f"Pass a fraction such as {flag} 0.1")
    if val_split + test_split >= 1.0:
        raise ConfigError(
            f"--val-split {val_split} plus --test-split {test_split} leaves no training images",
            "Make the two fractions add up to less than 1 (e.g. 0.1 and 0.1)",
        )


def _check_classes(root: Path, scans: dict[str, _Scan]) -> list[str]:
    train = scans["train"]
    classes = train.classes
    where = train.folder
    if not classes:
        loose, _ = _walk_images(where, [])
        if loose:
            raise DataError(f"'{where}' holds images but no class folders",
                            f"Move each class's images into its own folder: {where}/<class>/")
        raise DataError(f"'{where}' has no class folders", f"Put each class's images in its own folder: {where}/<class>/")
    for scan in scans.values():
        for name in scan.classes:
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:  # a non-UTF-8 byte in the folder name (surrogate-escaped by os.scandir)
                shown = os.fsencode(name).decode("utf-8", "backslashreplace")
                raise DataError(f"class folder name '{shown}' in '{scan.folder}' is not valid UTF-8",
                                "Rename the folder: class names become the model's labels and must be text") from None
            if has_control_characters(name):
                raise DataError(f"class folder name {json.dumps(name)} in '{scan.folder}' holds a control character",
                                "Rename the folder: class names become the model's labels and must be printable text")
    if len(classes) < 2:
        raise DataError(f"a classifier needs at least 2 classes; found 1: '{classes[0]}' in '{where}'",
                        f"Add a folder per class under '{where}'")
    problems = []
    for name, scan in scans.items():
        lacks = sorted(set(classes) - set(scan.classes))
        extra = sorted(set(scan.classes) - set(classes))
        if lacks:
            problems.append(f"{name}/ lacks {', '.join(repr(c) for c in lacks)}")
        if extra:
            problems.append(f"{name}/ has extra {', '.join(repr(c) for c in extra)}")
    if problems:
        raise DataError(
            f"class folders differ between splits in '{root}': {'; '.join(problems)} (train/ has {', '.join(repr(c) for c in classes)})",
            "Give train/, val/ and test/ the same class folders",
        )
    return classes


def _check_not_empty(scan: _Scan) -> None:
    counts = np.bincount(np.asarray(scan.labels, dtype=np.int64), minlength=len(scan.classes))
    for label, name in enumerate(scan.classes):
        if counts[label]:
            continue
        folder = scan.folder / name
        notes = []
        unlisted = [reason for p, reason in scan.skipped if p == folder]  # the class folder itself could not be listed
        if unlisted:
            why = unlisted[0].removeprefix("cannot list folder: ")
            raise DataError(f"class folder '{folder}' cannot be listed ({why})",
                            "Give this user read and execute permission on it, or remove it")
        bad = sum(1 for p, _ in scan.skipped if folder in p.parents)
        if bad:
            notes.append(f"{bad} unreadable file(s) skipped")
        if scan.ignored.get(name):
            notes.append(f"{scan.ignored[name]} file(s) without an image suffix ({', '.join(IMAGE_SUFFIXES)}) ignored")
        detail = f" ({'; '.join(notes)})" if notes else ""
        raise DataError(f"class folder '{folder}' has no usable images{detail}", "Add images to it or remove the folder")


def split_counts(n: int, val_split: float, test_split: float) -> tuple[int, int]:
    """(val, test) image counts for a class of n images; see the module docstring."""
    n_val, n_test = int(n * val_split + 0.5), int(n * test_split + 0.5)
    if n >= 3:
        n_val = max(n_val, 1) if val_split > 0 else 0
        n_test = max(n_test, 1) if test_split > 0 else 0
    while n_val + n_test > n - 1 and n_val + n_test > 0:  # keep one training image
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def _rank_key(root: Path, path: Path, seed: int) -> bytes:
    # os.fsencode: file names need not be valid UTF-8 (same bytes as .encode() for those that are)
    return hashlib.sha256(os.fsencode(f"{seed}\0{path.relative_to(root).as_posix()}")).digest()


def stratified_split(
    root: Path, paths: list[Path], labels: list[int], val_split: float, test_split: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Indices (train, val, test), each in the input order, carved per class."""
    label_array = np.asarray(labels, dtype=np.int64)
    train, val, test = [], [], []
    for label in np.unique(label_array):
        members = np.flatnonzero(label_array == label).tolist()
        ranked = sorted(members, key=lambda i: _rank_key(root, paths[i], seed))
        n_val, n_test = split_counts(len(members), val_split, test_split)
        val += ranked[:n_val]
        test += ranked[n_val : n_val + n_test]
        train += ranked[n_val + n_test :]
    return sorted(train), sorted(val), sorted(test)


def _make_split(paths: list[Path], labels: list[int], index: list[int] | None = None) -> Split:
    index = list(range(len(paths))) if index is None else index
    return Split(tuple(paths[i] for i in index), np.asarray([labels[i] for i in index], dtype=np.int64))


def fingerprint(root: Path, classes: list[str], paths: list[Path]) -> str:
    digest = hashlib.sha256(os.fsencode("\n".join(classes)) + b"\n\n")
    rows = []
    for path in paths:
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        rows.append(f"{path.relative_to(root).as_posix()}\t{size}\n")
    for row in sorted(rows):
        digest.update(os.fsencode(row))
    return digest.hexdigest()[:16]


@dataclass
class TreeScan:
    """An ImageFolder tree scanned, its structure checked, nothing decoded yet (scan_tree); split_tree finishes it."""

    root: Path
    layout: dict[str, Path] | None  # None: flat
    scans: dict[str, _Scan]  # split folder name -> its files
    classes: list[str]

    @property
    def paths(self) -> list[Path]:
        """Every image file found, in scan order (split folder, class, path): the order split_tree verifies them in."""
        return [p for scan in self.scans.values() for p in scan.paths]


def scan_tree(root: str | Path, val_split: float = 0.1, test_split: float = 0.1) -> TreeScan:
    """The first half of load_splits: find the files and check the tree's structure (DataError, ConfigError)."""
    _check_fractions(val_split, test_split)
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset folder '{root}' does not exist", "Check the path")
    if not root.is_dir():
        raise DataError(f"dataset path '{root}' is a file, not a folder", "Pass the folder that holds one folder per class")
    layout = detect_layout(root)
    scans = {"train": _scan(root)} if layout is None else {name: _scan(folder) for name, folder in layout.items()}
    return TreeScan(root, layout, scans, _check_classes(root, scans))


def load_splits(
    root: str | Path, val_split: float = 0.1, test_split: float = 0.1, seed: int = 0,
    verify: bool | Callable[[Path], object] = True,
) -> DatasetSplits:
    """Scan an ImageFolder tree (flat or pre-split) and return its train/val/test splits.

    With verify=True every image is decoded once; files that fail are left out and listed in
    `skipped` with the reason. `verify` may be the decoder itself (path -> anything, ImageError when the file does not
    decode, as load_image): training keeps what it decodes. Raises DataError for an unusable tree, ConfigError for bad
    fractions.
    """
    return split_tree(scan_tree(root, val_split, test_split), val_split, test_split, seed, verify)


def split_tree(tree: TreeScan, val_split: float, test_split: float, seed: int, verify: bool | Callable[[Path], object] = True,
               reason_of: Callable[[Path], str | None] | FileDecoder | None = None) -> DatasetSplits:
    """The second half of load_splits (verify, then split); it consumes `tree` (verification drops files from it).
    `reason_of`: instead of decoding, why each file is unusable (None: it is usable), e.g. recorded by an earlier pass, or
    a FileDecoder (data.decode_pool: worker processes when they pay). verify=True decodes in such a FileDecoder."""
    own = None
    if reason_of is None and verify is True:
        reason_of = own = FileDecoder(DecodeSpec())
    elif reason_of is None and callable(verify):
        reason_of = functools.partial(check_image, decode=verify)
    if isinstance(reason_of, FileDecoder):
        reason_of.plan(len(tree.paths), tree.paths)  # one choice for the whole tree, not per split folder
    with own if own is not None else contextlib.nullcontext():
        for scan in tree.scans.values():
            if reason_of is not None:
                _verify(scan, reason_of)
            _check_not_empty(scan)

    root, layout, scans = tree.root, tree.layout, tree.scans
    train = scans["train"]
    if layout is None:
        carve_val, carve_test = val_split, test_split
    else:
        carve_val, carve_test = (0.0 if "val" in scans else val_split), 0.0
    tr, va, te = stratified_split(root, train.paths, train.labels, carve_val, carve_test, seed)
    splits = {"train": _make_split(train.paths, train.labels, tr)}
    splits["val"] = _make_split(scans["val"].paths, scans["val"].labels) if "val" in scans else _make_split(train.paths, train.labels, va)
    splits["test"] = (_make_split(scans["test"].paths, scans["test"].labels) if "test" in scans
                      else _make_split(train.paths, train.labels, te))

    every = [p for scan in scans.values() for p in scan.paths]
    skipped = tuple(item for scan in scans.values() for item in scan.skipped)
    return DatasetSplits(
        root=root,
        classes=tuple(tree.classes),
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        presplit=layout is not None,
        skipped=skipped,
        fingerprint=fingerprint(root, tree.classes, every),
    )
