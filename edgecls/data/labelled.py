"""One reader for a labelled ImageFolder tree scored against a model's labels (evaluate --data, bench --data).

TF-free: folder scanning, decode checks and stratified sampling only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecls.data.folder import check_image, scan_class_folders
from edgecls.data.sampling import stratified_sample
from edgecls.errors import DataError


@dataclass
class LabelledImages:
    """Readable image files, their class index in the model's labels, the folder read and what was skipped."""

    paths: list[Path]
    labels: np.ndarray
    folder: Path
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def read_labelled_folder(root: str | Path, labels: list[str], limit: int | None = None, seed: int = 0,
                         option: str = "--data") -> LabelledImages:
    """Images of an ImageFolder tree (its test/ split when pre-split), mapped onto the model's `labels`.

    With `limit`, a stratified seeded sample of at most `limit` images is drawn before decoding, so a large
    dataset is not decoded in full. Unreadable images are skipped and listed in `skipped`. Raises DataError when
    `root` is not a folder, holds a class the model does not know, or yields no readable image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{option} '{root}' is not a folder", "Pass a labelled ImageFolder tree (a folder per class)")
    test_dirs = [p for p in root.iterdir() if p.is_dir() and p.name.lower() == "test"]
    folder = test_dirs[0] if test_dirs else root
    names, all_paths, indices = scan_class_folders(folder)
    unknown = sorted(set(names) - set(labels))
    if unknown:
        raise DataError(f"classes {unknown} in '{folder}' are not among the model's labels",
                        f"Use folders named like the model's labels: {', '.join(labels[:10])}")
    truth = np.asarray([labels.index(names[i]) for i in indices], dtype=np.int64)
    order = stratified_sample(truth, min(limit, len(all_paths)), seed) if limit is not None else list(range(len(all_paths)))
    reasons = [(i, check_image(all_paths[i])) for i in order]
    kept = [i for i, reason in reasons if reason is None]
    skipped = [(all_paths[i], reason) for i, reason in reasons if reason is not None]
    if not kept:
        raise DataError(f"no readable labelled images in '{folder}' ({len(all_paths)} image files, {len(skipped)} unreadable)",
                        "Pass a folder per class holding images")
    return LabelledImages([all_paths[i] for i in kept], truth[kept], folder, skipped)
