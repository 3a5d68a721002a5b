"""Splits larger than memory: a one-time uint8 cache at the model's size, sharded on disk, read batch by batch.

The cache holds exactly what `load_images` would hold in memory (the same `edgecls.preprocess.load_for_model` output),
so a streamed run sees the same pixels, in the same order, as an in-memory one. A training run's cache (ScanCache) is
written by the pass that verifies the files: each file is read and decoded once, its pixels written at its place in the
scan (os.pwrite), and each split is a view of those rows. Rows are read with os.pread (no mmap): the pages stay in the
kernel's page cache, not in the process's RSS.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError
from edgecls.fsutil import write_json
from edgecls.preprocess import load_for_model_and_digest

CACHE_DIR = "stream_cache"  # inside the run folder; removed when the run finishes
SCAN_NAME = "images"  # a streamed run's cache: images-00000.u8, ... and images.json (ScanCache)
SHARD_BYTES = 512 * 1024**2  # one shard file holds up to this many bytes of images
_CHUNK = 256  # decoding tasks submitted at a time while cache_images writes (bounded memory)
_MANIFEST_VERSION = 1


class DiskImages:
    """A read-only uint8 array (N, h, w, 3) on disk: len(), .shape, .ndim, slicing and integer-array indexing."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, folder: Path, name: str, count: int, size: tuple[int, int], shard_images: int,
                 rows: np.ndarray | None = None) -> None:
        self.folder, self.name, self.count, self.size, self.shard_images = folder, name, count, size, shard_images
        self.rows = rows  # this array's images: these rows of the cache files (None: all `count`, in order)
        self.image_bytes = size[0] * size[1] * 3
        self._fds: dict[int, int] = {}

    def view(self, rows: Sequence[int] | np.ndarray) -> DiskImages:
        """Those rows of this array (in that order) as an array of their own, still on disk."""
        chosen = np.asarray(rows, np.int64).reshape(-1)
        if len(chosen) and (chosen.min() < 0 or chosen.max() >= len(self)):
            raise IndexError(f"rows {int(chosen.min())}..{int(chosen.max())} are outside 0..{len(self) - 1}")
        return DiskImages(self.folder, self.name, self.count, self.size, self.shard_images,
                          chosen if self.rows is None else self.rows[chosen])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), self.size[0], self.size[1], 3)

    def __len__(self) -> int:
        return self.count if self.rows is None else len(self.rows)

    def shard_path(self, shard: int) -> Path:
        return self.folder / f"{self.name}-{shard:05d}.u8"

    def _fd(self, shard: int) -> int:
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._fds[shard] = os.open(self.shard_path(shard), os.O_RDONLY)
        return fd

    def gather(self, indices: Any) -> np.ndarray:
        """The images at `indices` (any order, repeats allowed) as one uint8 array; safe from several threads."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(indices), self.size[0], self.size[1], 3), np.uint8)
        length = len(self)
        for row, index in enumerate(indices.tolist()):
            if not 0 <= index < length:
                raise IndexError(f"image {index} is outside 0..{length - 1}")
            shard, offset = divmod(index if self.rows is None else int(self.rows[index]), self.shard_images)
            data = os.pread(self._fd(shard), self.image_bytes, offset * self.image_bytes)
            if len(data) != self.image_bytes:
                raise ConfigError(f"the streaming cache '{self.shard_path(shard)}' is truncated",
                                  "Delete the run's stream_cache folder and resume: it is rebuilt")
            out[row] = np.frombuffer(data, np.uint8).reshape(out.shape[1:])
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            return self.gather(np.arange(len(self))[key])
        if isinstance(key, (int, np.integer)):
            return self.gather([key])[0]
        return self.gather(key)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except (OSError, TypeError):  # already closed, or interpreter shutdown
            pass


def _manifest(name: str, count: int, size: tuple[int, int], shard_images: int, key: str) -> dict[str, Any]:
    return {"version": _MANIFEST_VERSION, "name": name, "count": count, "size": list(size), "shard_images": shard_images, "key": key}


def _shard_images(size: tuple[int, int]) -> int:
    return max(1, SHARD_BYTES // (size[0] * size[1] * 3))


class CacheWriter:
    """The shard files of a new cache, created at their final (sparse) size; rows are written in any order, from several
    threads (os.pwrite at each row's offset): a decoder writes an image the moment it has it."""

    def __init__(self, folder: Path, name: str, count: int, size: tuple[int, int]) -> None:
        self.images = DiskImages(folder, name, count, size, _shard_images(size))
        folder.mkdir(parents=True, exist_ok=True)
        self._fds: list[int] = []
        try:
            for shard in range(-(-count // self.images.shard_images)):  # a link planted where a shard goes is not followed
                fd = os.open(self.images.shard_path(shard), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
                self._fds.append(fd)
                os.ftruncate(fd, min(self.images.shard_images, count - shard * self.images.shard_images) * self.images.image_bytes)
        except BaseException:
            self.close()
            raise

    def write(self, row: int, pixels: np.ndarray) -> None:
        shard, offset = divmod(row, self.images.shard_images)
        data = memoryview(np.ascontiguousarray(pixels, np.uint8).tobytes())
        if len(data) != self.images.image_bytes:
            raise ValueError(f"image of {len(data)} bytes for a cache of {self.images.image_bytes}-byte images")
        position = offset * self.images.image_bytes
        while len(data):
            done = os.pwrite(self._fds[shard], data, position)
            data, position = data[done:], position + done

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def cache_images(paths: Sequence[Path], size: tuple[int, int], folder: Path, name: str, key: str,
                 crop_fraction: float = 1.0, interpolation: str = "bicubic", progress: Callable[[], None] | None = None,
                 workers: int = 8, digests: dict[Path, str] | None = None) -> DiskImages:
    """Decode `paths` once into shard files under `folder` (or reuse a complete cache with the same manifest `key`).

    `key` names what was cached (e.g. the dataset fingerprint and split): a cache written for other images is rebuilt.
    The manifest is written last, so a cache interrupted halfway is never read. `digests`: filled with the sha256 of
    each file read (none when the cache is reused).
    """
    shard_images = _shard_images(size)
    expected = _manifest(name, len(paths), size, shard_images, key)
    manifest_path = folder / f"{name}.json"
    images = DiskImages(folder, name, len(paths), size, shard_images)
    if manifest_path.is_file():
        try:
            if json.loads(manifest_path.read_text(encoding="utf-8")) == expected:
                shards = -(-len(paths) // shard_images)
                if all(images.shard_path(s).is_file() for s in range(shards)):
                    return images
        except (OSError, ValueError):
            pass
        manifest_path.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{name}-*.u8"):
        stale.unlink()
    writer = CacheWriter(folder, name, len(paths), size)

    def load(row: int) -> int:
        pixels, digest = load_for_model_and_digest(paths[row], size, crop_fraction, interpolation)
        writer.write(row, pixels)
        if digests is not None:
            digests[paths[row]] = digest
        return row

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(paths), _CHUNK):  # bounded: a task per image of this chunk only
                for _ in pool.map(load, range(start, min(len(paths), start + _CHUNK))):
                    if progress is not None:
                        progress()
    finally:
        writer.close()
    write_json(manifest_path, expected)
    return images


class ScanCache:
    """A streamed run's cache, written by the pass that verifies the files (data.folder.split_tree's `reason_of`): each
    file is read once, decoded, resized and hashed, and its pixels go straight to the cache row of its place in the scan
    (only the images being decoded are in memory). The splits are then views of those rows.

    The manifest is written last (commit, after the run's own checks), with the listing the cache was made from (path,
    size and mtime of every file found) and each file's verdict and sha256: a resumed run with the same listing reuses
    it without reading any image; anything else (another listing, no manifest: a killed run) rebuilds it.
    """

    def __init__(self, folder: Path, root: Path, paths: Sequence[Path], size: tuple[int, int], crop_fraction: float = 1.0,
                 interpolation: str = "bicubic") -> None:
        self.folder, self.size, self.crop_fraction, self.interpolation = folder, size, crop_fraction, interpolation
        self.rows = {path: row for row, path in enumerate(paths)}
        key = _listing_key(root, paths, size, crop_fraction, interpolation)
        self.expected = _manifest(SCAN_NAME, len(paths), size, _shard_images(size), key)
        self.reasons: dict[int, str] = {}  # row -> why that file is left out
        self.digests = [""] * len(paths)  # row -> sha256 of the file's bytes ("": not read, or unusable)
        self.writer: CacheWriter | None = None
        self.reused = self._read_manifest()

    def _read_manifest(self) -> bool:
        path = self.folder / f"{SCAN_NAME}.json"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            if {key: manifest.get(key) for key in self.expected} != self.expected or len(manifest["digests"]) != len(self.rows):
                return False
            images = DiskImages(self.folder, SCAN_NAME, len(self.rows), self.size, _shard_images(self.size))
            if not all(images.shard_path(s).is_file() for s in range(-(-len(self.rows) // images.shard_images))):
                return False
            self.reasons = {int(row): str(why) for row, why in manifest["reasons"].items()}
            self.digests = [str(digest) for digest in manifest["digests"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        return True

    def start(self) -> None:
        """A new cache (unless reused): any other one removed, the disk space checked, the shard files created."""
        if self.reused:
            return
        shutil.rmtree(self.folder, ignore_errors=True)
        check_free_space(self.folder, len(self.rows) * self.size[0] * self.size[1] * 3)
        self.writer = CacheWriter(self.folder, SCAN_NAME, len(self.rows), self.size)

    def reason(self, path: Path) -> str | None:
        """A reused cache's verdict on `path` from its manifest: None when usable (its pixels are in the cache), else why
        not. A new cache is filled by data.decode_pool.FileDecoder through `store` and `skip`."""
        assert self.reused, "a new cache is filled through store/skip"
        return self.reasons.get(self.rows[path])

    def store(self, path: Path, pixels: np.ndarray, digest: str) -> None:
        """A usable file's pixels and sha256 (data.decode_pool.FileDecoder's on_decoded)."""
        assert self.writer is not None, "ScanCache.start() first"
        row = self.rows[path]
        self.writer.write(row, pixels)
        self.digests[row] = digest

    def skip(self, path: Path, why: str) -> None:
        """An unusable file's reason (FileDecoder's on_skipped), kept in the manifest."""
        self.reasons[self.rows[path]] = why

    def commit(self) -> None:
        """Make a new cache trusted: the manifest, written last."""
        if self.writer is None:
            return
        self.writer.close()
        self.writer = None
        write_json(self.folder / f"{SCAN_NAME}.json", {**self.expected, "reasons": {str(row): why for row, why in self.reasons.items()},
                                                        "digests": self.digests})

    def discard(self) -> None:
        """A new cache abandoned before commit (e.g. a resumed run's data changed): its files removed."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            shutil.rmtree(self.folder, ignore_errors=True)

    def images(self, paths: Sequence[Path]) -> DiskImages:
        return DiskImages(self.folder, SCAN_NAME, len(self.rows), self.size, _shard_images(self.size)).view([self.rows[p] for p in paths])

    def digests_of(self, paths: Sequence[Path]) -> dict[Path, str]:
        return {path: self.digests[self.rows[path]] for path in paths}


def _listing_key(root: Path, paths: Sequence[Path], size: tuple[int, int], crop_fraction: float, interpolation: str) -> str:
    """sha256 of what the cache is made from: the settings, and each file's place, relative path, size and mtime."""
    digest = hashlib.sha256(f"{size[0]}x{size[1]}\t{crop_fraction}\t{interpolation}\n".encode())
    for path in paths:
        try:
            info = path.stat()
            stamp = f"{info.st_size}\t{info.st_mtime_ns}"
        except OSError:
            stamp = "-"
        digest.update(os.fsencode(f"{path.relative_to(root).as_posix()}\t{stamp}\n"))
    return digest.hexdigest()


def check_free_space(folder: Path, needed: int) -> None:
    """ConfigError before any decoding when the cache (less what a resumed run already has) cannot fit on that disk."""
    existing = sum(path.stat().st_size for path in folder.glob("*.u8")) if folder.is_dir() else 0
    probe = folder if folder.is_dir() else folder.parent
    free = shutil.disk_usage(probe).free
    if needed - existing > free:
        raise ConfigError(f"streaming needs {(needed - existing) / 1024**3:.1f} GiB for its cache in '{folder}', "
                          f"but only {free / 1024**3:.1f} GiB is free there",
                          "Free disk space, pass --out on a larger disk, a smaller --img-size, or --stream off if it fits in memory")


def remove_cache(run_dir: Path) -> None:
    shutil.rmtree(run_dir / CACHE_DIR, ignore_errors=True)
