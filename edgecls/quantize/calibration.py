"""Calibration sets: which images INT8 quantization sees, recorded in a reproducible manifest.

Default source: a stratified, seeded per-class sample of the run's TRAINING split (never val or
test). `--calib DIR` takes the user's own images instead; any that are also in the run's val/test
splits (same content) are dropped, so calibration never sees the images validation scores.
The manifest goes beside the exports (`RUN/export/calibration/manifest.json`), never into the current folder.

Also the one definition of what a writer accepts as calibration pixels (`check_calibration`).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.data.folder import check_image, is_junk
from edgecls.data.sampling import stratified_sample
from edgecls.errors import ConfigError, DataError
from edgecls.fsutil import write_json
from edgecls.meta import ModelMeta
from edgecls.preprocess import IMAGE_SUFFIXES, load_for_model, resize

MIN_CALIBRATION_IMAGES = 10
MANIFEST_FOLDER = "calibration"  # inside the export folder (RUN/export or --out)
MANIFEST = "manifest.json"


@dataclass
class CalibrationSet:
    """uint8 (N, h, w, 3) images resized exactly as the runtime resizes, plus where they came from."""

    images: np.ndarray
    source: str
    files: list[str]
    manifest: Path | None = None
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_pixels(images: Any, size: tuple[int, int], what: str) -> np.ndarray:
    """`images` as uint8 (N, h, w, 3) resized RGB pixels, or ConfigError naming what is wrong."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (*size, 3):
        got = f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}".strip()
        raise ConfigError(f"{what} must be uint8 (N, {size[0]}, {size[1]}, 3), got {got}",
                          "Load them with edgecls' preprocessing at the model's input size")
    return images


def check_calibration(images: Any, size: tuple[int, int], fmt: str) -> np.ndarray:
    """What every INT8 writer needs: at least MIN_CALIBRATION_IMAGES uint8 (N, h, w, 3) images at the model's size."""
    if images is None:
        raise ConfigError(f"int8 {fmt} export needs calibration images, got none",
                          "Pass --calib DIR or export from a run folder with training images")
    images = check_pixels(images, size, "calibration images")
    if len(images) < MIN_CALIBRATION_IMAGES:
        raise ConfigError(f"{len(images)} calibration images is below the minimum of {MIN_CALIBRATION_IMAGES}",
                          "Use --calib-size 300 (the default) or a --calib folder with more images")
    return images


def images_in(folder: Path) -> list[Path]:
    """Every image below `folder` (class sub-folders optional), junk and hidden files skipped."""
    if not folder.is_dir():
        raise DataError(f"--calib '{folder}' is not a folder", "Pass a folder of representative images")
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") or is_junk(part) for part in p.relative_to(folder).parts)
    )


def from_files(paths: Sequence[Path], meta: ModelMeta, source: str) -> CalibrationSet:
    images = np.stack([load_for_model(p, meta.input_size, meta.crop_fraction, meta.interpolation) for p in paths])
    return CalibrationSet(images, source, [str(p) for p in paths])


def check_calib_size(size: int) -> None:
    if size < MIN_CALIBRATION_IMAGES:
        raise ConfigError(f"--calib-size {size} is below the minimum of {MIN_CALIBRATION_IMAGES}", "Use --calib-size 300 (the default)")


def from_run_train_split(run: Path, meta: ModelMeta, size: int, seed: int = 0) -> CalibrationSet:
    from edgecls.run_folder import read_split

    check_calib_size(size)
    split = read_split(run, "train")
    usable = [i for i, path in enumerate(split.paths) if path.is_file()]  # positions in the full split
    picked = stratified_sample(split.labels[usable], min(size, len(usable)), seed) if usable else []  # positions in `usable`
    chosen = [split.paths[usable[j]] for j in picked]
    chosen = [p for p in chosen if check_image(p) is None]
    if len(chosen) < MIN_CALIBRATION_IMAGES:
        raise DataError(
            f"the training split of '{run}' has only {len(chosen)} readable images for calibration (need {MIN_CALIBRATION_IMAGES})",
            "Pass --calib DIR with at least 10 representative images",
        )
    return from_files(chosen, meta, f"train split of {run}")


def from_folder(folder: Path, meta: ModelMeta, size: int, exclude_hashes: set[str], seed: int = 0) -> CalibrationSet:
    check_calib_size(size)
    candidates = images_in(folder)
    broken = [p for p in candidates if check_image(p) is not None]
    readable = [p for p in candidates if p not in set(broken)]
    overlapping = [p for p in readable if sha256_file(p) in exclude_hashes]
    usable = [p for p in readable if p not in set(overlapping)]
    if len(usable) < MIN_CALIBRATION_IMAGES:
        detail = f"{len(candidates)} image files, {len(broken)} unreadable"
        if overlapping:
            detail += f", {len(overlapping)} also in the run's val/test splits"
        raise DataError(
            f"--calib '{folder}' has {len(usable)} usable images ({detail}); at least {MIN_CALIBRATION_IMAGES} are needed",
            "Add representative images (a few hundred is best) that are not in the validation or test split",
        )
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.permutation(len(usable))[: min(size, len(usable))].tolist())
    result = from_files([usable[i] for i in chosen], meta, str(folder))
    result.skipped = {"unreadable": [str(p) for p in broken], "in_val_or_test": [str(p) for p in overlapping]}
    return result


BUILTIN_SOURCE = "built-in photos (scikit-image, scikit-learn)"
CROPS_PER_PHOTO = 8


def _photos() -> list[tuple[str, np.ndarray]]:
    """The distinct real photos scikit-image and scikit-learn ship (skimage's `cat` is `chelsea`: kept once)."""
    photos: list[tuple[str, np.ndarray]] = []
    try:
        from skimage import data as skdata

        for name in ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry", "hubble_deep_field", "motorcycle_left"):
            if hasattr(skdata, name):
                try:
                    image = getattr(skdata, name)()
                except Exception:  # noqa: BLE001  (some need pooch downloads in older releases; any failure skips that photo)
                    continue
                photos.append((f"skimage.data.{name}", image if image.ndim == 3 else np.stack([image] * 3, -1)))
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        for name, image in zip(("china.jpg", "flower.jpg"), load_sample_images().images):
            photos.append((f"sklearn {name}", image))
    except ImportError:
        pass
    if not photos:
        raise DataError("no built-in calibration photos (scikit-image / scikit-learn not installed)",
                        "Pass --calib DIR with representative images")
    distinct, seen = [], set()
    for name, photo in photos:
        photo = np.ascontiguousarray(photo[..., :3].astype(np.uint8))
        digest = hashlib.sha256(photo.tobytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            distinct.append((name, photo))
    return distinct


def _crops(photos: list[tuple[str, np.ndarray]], meta: ModelMeta, crops_per_photo: int) -> tuple[list[np.ndarray], list[str]]:
    images, files = [], []
    for name, photo in photos:
        height, width = photo.shape[:2]
        for k in range(crops_per_photo):  # centre, then shifted crops of 44-100% of the short side
            fraction = 1.0 - 0.08 * k
            side = int(min(height, width) * fraction)
            top, left = (height - side) * (k % 2) // 2, (width - side) * ((k + 1) % 3) // 2
            crop = photo[top : top + side, left : left + side]
            images.append(resize(crop, meta.input_size, 1.0, meta.interpolation))
            files.append(f"{name}#crop{k}")
    return images, files


def builtin_photos(meta: ModelMeta, crops_per_photo: int = CROPS_PER_PHOTO) -> CalibrationSet:
    """Offline images for zoo models: real photos shipped by scikit-image and scikit-learn, several crops each."""
    images, files = _crops(_photos(), meta, crops_per_photo)
    return CalibrationSet(np.stack(images), BUILTIN_SOURCE, files)


def builtin_photo_split(meta: ModelMeta, calib_size: int, seed: int = 0) -> tuple[CalibrationSet, CalibrationSet]:
    """(calibration, held-out) from the built-in photos, split BY PHOTO: no held-out image is a crop of a calibration
    photo. Alternate photos calibrate (at most `calib_size` of their crops, a seeded pick) and validate."""
    check_calib_size(calib_size)
    photos = _photos()
    if len(photos) < 2:
        raise DataError(f"only {len(photos)} built-in photo: calibration and validation need different photos",
                        "Pass --calib DIR with representative images")
    calib_photos, held_photos = photos[0::2], photos[1::2]  # the list interleaves animals, objects and textures
    images, files = _crops(calib_photos, meta, CROPS_PER_PHOTO)
    if len(images) > calib_size:
        keep = sorted(np.random.default_rng(seed).permutation(len(images))[:calib_size].tolist())
        images, files = [images[i] for i in keep], [files[i] for i in keep]
    held_images, held_files = _crops(held_photos, meta, CROPS_PER_PHOTO)
    names = ", ".join(name for name, _ in calib_photos)
    calibration = CalibrationSet(np.stack(images), f"{BUILTIN_SOURCE}: {names}", files)
    held = CalibrationSet(np.stack(held_images), f"{BUILTIN_SOURCE}: {', '.join(name for name, _ in held_photos)}", held_files)
    return calibration, held


def manifest_path(export_root: Path) -> Path:
    """Where an export records its calibration set: beside the artifacts, e.g. RUN/export/calibration/manifest.json."""
    return Path(export_root) / MANIFEST_FOLDER / MANIFEST


def write_manifest(calibration: CalibrationSet, path: Path, meta: ModelMeta, seed: int) -> Path:
    """The manifest at `path`: the files and their content hashes, so the set can be rebuilt and inspected."""
    entries = [{"file": name, "sha256": sha256_file(Path(name)) if Path(name).is_file() else None} for name in calibration.files]
    manifest = write_json(path, {
        "source": calibration.source, "count": len(calibration), "seed": seed,
        "input_size": list(meta.input_size), "crop_fraction": meta.crop_fraction, "interpolation": meta.interpolation,
        "files": entries,
    })
    calibration.manifest = manifest
    return manifest
