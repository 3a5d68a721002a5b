"""Fashion-MNIST as an ImageFolder tree: OUT/{train,test}/<class>/<index>.png (28x28 grayscale).

Where the four IDX files come from, in order:
  1. `--source DIR` when given. It is then the only folder searched: a typo in an explicit path
     must not silently fall back to another copy.
  2. Otherwise the Debian package `dataset-fashion-mnist` (folders from `dpkg -L`, plus the known
     /usr/share/datasets/fashion-mnist), then the download cache (~/.cache/edgecls/fashion-mnist).
  3. If none holds all four files and `download` is on, the official mirrors are tried (short
     timeout); files land in the cache and are checked against the SHA-256 of their content.

Subsets: with `per_class=N`, N images per class are drawn (seeded, without replacement) from train
and N per class from test (test holds 1000 per class, so the cap rarely bites). Using the same cap
keeps the held-out set as large as the training set, so accuracy on small subsets is not noise.
File names are the image's index in the IDX file, so every PNG traces back to its source.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from edgecls.data.idx import read_idx, unpack_idx
from edgecls.errors import ConfigError, DataError
from edgecls.fsutil import atomic_dir, atomic_path, check_outputs, has_marker

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot",
)
SPLITS = ("train", "test")
# split -> (images file, labels file), names without the .gz suffix
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# SHA-256 of the uncompressed content (gzip headers differ between mirrors and Debian)
CONTENT_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # S3 website endpoints are http only
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
DOWNLOAD_TIMEOUT_S = 10.0
_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
# Unpacked size of the largest of the four files (train images: 16-byte header + 60,000 28x28 images, 47 MB): no
# file, downloaded or from --source, is unpacked past it (the first mirror is plain http; a gzip bomb stops here).
LARGEST_FILE_BYTES = 16 + 60_000 * 28 * 28
_NOT_FOUND_HINT = "apt-get install dataset-fashion-mnist, or pass --source DIR with the four IDX files"

Progress = Callable[[int, int], None]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgecls" / "fashion-mnist"


def _debian_dirs() -> list[Path]:
    """Folders holding the Debian package's IDX files, from `dpkg -L` when dpkg exists."""
    found: list[Path] = []
    if shutil.which("dpkg"):
        try:
            listing = subprocess.run(
                ["dpkg", "-L", DEBIAN_PACKAGE], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in listing.splitlines():
            if line.strip().endswith(("-ubyte", "-ubyte.gz")):
                folder = Path(line.strip()).parent
                if folder not in found:
                    found.append(folder)
    if DEBIAN_DIR not in found:
        found.append(DEBIAN_DIR)
    return found


def candidate_dirs(source: Path | None) -> list[Path]:
    """The folders searched, in order (see the module docstring)."""
    if source is not None:
        return [Path(source)]
    return [*_debian_dirs(), cache_dir()]


def _files_in(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """(found name -> path, missing names) for the four IDX files in one folder."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in CONTENT_SHA256:
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            missing.append(name)
    return found, missing


def _describe_search(dirs: list[Path]) -> str:
    parts = []
    for folder in dirs:
        if not folder.is_dir():
            parts.append(f"'{folder}' (no such folder)")
            continue
        found, missing = _files_in(folder)
        parts.append(f"'{folder}' (lacks {', '.join(missing)})" if found else f"'{folder}'")
    return ", ".join(parts)


def find_fashion_mnist(source: Path | None = None) -> Path:
    """The first folder holding all four Fashion-MNIST IDX files (gzipped or not).

    Raises DataError listing the folders searched when none does (no download here).
    """
    if source is not None and Path(source).exists() and not Path(source).is_dir():
        raise DataError(f"--source '{source}' is a file, not a folder", "Pass the folder holding the four IDX files")
    dirs = candidate_dirs(source)
    for folder in dirs:
        if folder.is_dir() and not _files_in(folder)[1]:
            return folder
    raise DataError(f"Fashion-MNIST IDX files not found in {_describe_search(dirs)}", _NOT_FOUND_HINT)


def _download_one(url: str, name: str, target: Path) -> None:
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310 (fixed https/http URLs)
        raw = response.read(_MAX_DOWNLOAD_BYTES + 1)
    if len(raw) > _MAX_DOWNLOAD_BYTES:
        raise OSError(f"{url} is larger than {_MAX_DOWNLOAD_BYTES} bytes")
    content = unpack_idx(io.BytesIO(raw), url, LARGEST_FILE_BYTES)
    if hashlib.sha256(content).hexdigest() != CONTENT_SHA256[name]:
        raise OSError(f"{url} does not match the known SHA-256")
    with atomic_path(target) as tmp:
        tmp.write_bytes(raw)


def download_fashion_mnist(folder: Path | None = None) -> tuple[Path, str]:
    """Download the four files into `folder` (default: the cache); returns (folder, mirror used).

    Files already there are kept. Raises OSError listing each mirror's failure when all fail.
    """
    folder = folder or cache_dir()
    errors: list[str] = []
    for mirror in MIRRORS:
        try:
            for name in CONTENT_SHA256:
                target = folder / f"{name}.gz"
                if not target.is_file():
                    _download_one(mirror + f"{name}.gz", name, target)
            return folder, mirror
        except (OSError, DataError, http.client.HTTPException, ConfigError) as exc:  # try the next mirror
            reason = getattr(exc, "reason", None) or exc  # URLError wraps the socket error
            errors.append(f"{urllib.parse.urlsplit(mirror).netloc}: {reason}")
    raise OSError("; ".join(errors))


def locate_or_download(source: Path | None, download: bool = True) -> tuple[Path, bool]:
    """(folder holding the IDX files, whether they were downloaded now)."""
    try:
        return find_fashion_mnist(source), False
    except DataError as exc:
        searched = exc.message
        if not download:
            raise DataError(f"{searched} (download disabled by --no-download)", _NOT_FOUND_HINT) from exc
    try:
        folder, _ = download_fashion_mnist()
    except (OSError, ConfigError) as exc:
        raise DataError(f"{searched} and the download failed ({exc})", _NOT_FOUND_HINT) from exc
    return folder, True


def load_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels uint8 (N,)) for 'train' or 't10k' data in `folder`."""
    found, missing = _files_in(folder)
    if missing:
        raise DataError(f"'{folder}' lacks {', '.join(missing)}", _NOT_FOUND_HINT)
    images_name, labels_name = FILES[split]
    images = read_idx(found[images_name], expect_ndim=3, max_bytes=LARGEST_FILE_BYTES)
    labels = read_idx(found[labels_name], expect_ndim=1, max_bytes=LARGEST_FILE_BYTES)
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
        raise DataError(f"'{found[images_name]}' holds {images.dtype} images of shape {images.shape[1:]}, expected uint8 28x28",
                        "Pass the Fashion-MNIST files, not another IDX dataset")
    if labels.dtype != np.uint8 or len(labels) != len(images):
        raise DataError(f"'{found[labels_name]}' holds {len(labels)} {labels.dtype} labels for {len(images)} images",
                        "Use the labels file that belongs to the images file")
    if len(labels) and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"'{found[labels_name]}' has label {int(labels.max())}, expected 0 to 9", "Pass the Fashion-MNIST files")
    return images, labels


def select_indices(labels: np.ndarray, per_class: int | None, seed: int, stream: int = 0) -> np.ndarray:
    """Sorted indices of a seeded per-class subset (all indices when per_class is None)."""
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng([seed, stream])
    picks = []
    for label in range(len(FASHION_MNIST_CLASSES)):
        pool = np.flatnonzero(labels == label)
        picks.append(rng.choice(pool, size=min(per_class, len(pool)), replace=False))
    return np.sort(np.concatenate(picks))


def _check_out(out: Path) -> None:
    """Refuse to replace anything but an empty folder or a folder edgecls made (a tree of the same shape without the
    marker may hold a user's own images)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"output '{out}' is a file", "Pass a folder path for OUT")
    if not has_marker(out) and any(out.iterdir()):
        raise ConfigError(
            f"output folder '{out}' already exists and holds other files",
            "Pass a new OUT path, or remove that folder first",
        )


def check_sources(out: Path, source: Path | None) -> None:
    """Refuse an OUT that is, lies inside or contains a folder the IDX files are read from (or downloaded to)."""
    for folder in candidate_dirs(source):
        check_outputs({"OUT": out}, {"--source" if source is not None else "the Fashion-MNIST copy": folder})


def _write_pngs(jobs: list[tuple[np.ndarray, Path]], progress: Progress | None, done: int, total: int) -> int:
    """Save 28x28 grayscale PNGs in this thread: a thread pool measured slower (the GIL-bound PIL
    overhead dominates such small files); 70,000 files take about 10 s."""
    for number, (pixels, path) in enumerate(jobs, 1):
        Image.fromarray(pixels).save(path, format="PNG")
        if progress and (number % 500 == 0 or number == len(jobs)):
            progress(done + number, total)
    return done + len(jobs)


def write_fashion_mnist(
    out: Path,
    per_class: int | None = None,
    source: Path | None = None,
    seed: int = 0,
    download: bool = True,
    progress: Progress | None = None,
) -> dict:
    """Write OUT/{train,test}/<class>/<index>.png atomically; returns a JSON-ready summary.

    per_class=None writes all 70,000 images; per_class=N writes N per class per split (seeded).
    `progress(done, total)` is called while PNGs are written.
    """
    out = Path(out)
    if per_class is not None and per_class < 1:
        raise ConfigError(f"--per-class must be at least 1, got {per_class}", "Pass --per-class 1 or more, or leave it out for all images")
    if seed < 0:
        raise ConfigError(f"--seed must be 0 or more, got {seed}", "Pass a non-negative seed")
    _check_out(out)
    check_sources(out, source)
    folder, downloaded = locate_or_download(source, download)

    data = {split: load_split(folder, split) for split in SPLITS}
    picks = {split: select_indices(data[split][1], per_class, seed, stream) for stream, split in enumerate(SPLITS)}
    total = sum(len(p) for p in picks.values())
    counts: dict[str, dict[str, int]] = {}
    done = 0
    with atomic_dir(out, inputs={"the IDX folder": folder}, command="data fashion-mnist") as tmp:
        for split in SPLITS:
            images, labels = data[split]
            for name in FASHION_MNIST_CLASSES:
                (tmp / split / name).mkdir(parents=True)
            index = picks[split]
            jobs = [(images[i], tmp / split / FASHION_MNIST_CLASSES[labels[i]] / f"{i:05d}.png") for i in index]
            done = _write_pngs(jobs, progress, done, total)
            per = np.bincount(labels[index], minlength=len(FASHION_MNIST_CLASSES))
            counts[split] = {name: int(n) for name, n in zip(FASHION_MNIST_CLASSES, per)}
    return {
        "out": str(out),
        "source": str(folder),
        "downloaded": downloaded,
        "per_class": per_class,
        "seed": seed,
        "classes": list(FASHION_MNIST_CLASSES),
        "counts": counts,
        "total": {split: sum(c.values()) for split, c in counts.items()},
    }
