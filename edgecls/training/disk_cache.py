"""Splits larger than memory: a one-time uint8 cache at the model's size, sharded on disk, read batch by batch.

The cache holds exactly what `load_images` would hold in memory (the same `edgecls.preprocess.load_for_model` output,
decoded once with the same thread pool), so a streamed run sees the same pixels, in the same order, as an in-memory
one. Rows are read with os.pread (no mmap): the pages stay in the kernel's page cache, not in the process's RSS.
"""
from __future__ import annotations

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
SHARD_BYTES = 512 * 1024**2  # one shard file holds up to this many bytes of images
_CHUNK = 256  # images decoded at a time while the cache is written (bounded memory)
_MANIFEST_VERSION = 1


class DiskImages:
    """A read-only uint8 array (N, h, w, 3) on disk: len(), .shape, .ndim, slicing and integer-array indexing."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, folder: Path, name: str, count: int, size: tuple[int, int], shard_images: int) -> None:
        self.folder, self.name, self.count, self.size, self.shard_images = folder, name, count, size, shard_images
        self.image_bytes = size[0] * size[1] * 3
        self._fds: dict[int, int] = {}

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.count, self.size[0], self.size[1], 3)

    def __len__(self) -> int:
        return self.count

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
        for row, index in enumerate(indices.tolist()):
            if not 0 <= index < self.count:
                raise IndexError(f"image {index} is outside 0..{self.count - 1}")
            shard, offset = divmod(index, self.shard_images)
            data = os.pread(self._fd(shard), self.image_bytes, offset * self.image_bytes)
            if len(data) != self.image_bytes:
                raise ConfigError(f"the streaming cache '{self.shard_path(shard)}' is truncated",
                                  "Delete the run's stream_cache folder and resume: it is rebuilt")
            out[row] = np.frombuffer(data, np.uint8).reshape(out.shape[1:])
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            return self.gather(np.arange(self.count)[key])
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


def cache_images(paths: Sequence[Path], size: tuple[int, int], folder: Path, name: str, key: str,
                 crop_fraction: float = 1.0, interpolation: str = "bicubic", progress: Callable[[], None] | None = None,
                 workers: int = 8, digests: dict[Path, str] | None = None) -> DiskImages:
    """Decode `paths` once into shard files under `folder` (or reuse a complete cache with the same manifest `key`).

    `key` names what was cached (e.g. the dataset fingerprint and split): a cache written for other images is rebuilt.
    The manifest is written last, so a cache interrupted halfway is never read. `digests`: filled with the sha256 of
    each file read (none when the cache is reused).
    """
    image_bytes = size[0] * size[1] * 3
    shard_images = max(1, SHARD_BYTES // image_bytes)
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
    buffer = np.empty((min(_CHUNK, max(1, len(paths))), size[0], size[1], 3), np.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), _CHUNK):
            chunk = paths[start : start + _CHUNK]

            def load(row: int, chunk: Sequence[Path] = chunk) -> int:
                buffer[row], digest = load_for_model_and_digest(chunk[row], size, crop_fraction, interpolation)
                if digests is not None:
                    digests[chunk[row]] = digest
                return row

            for _ in pool.map(load, range(len(chunk))):
                if progress is not None:
                    progress()
            _write_rows(images, start, buffer[: len(chunk)])
    write_json(manifest_path, expected)
    return images


def _write_rows(images: DiskImages, start: int, rows: np.ndarray) -> None:
    """Append rows (images start..) to their shard files, splitting at shard boundaries."""
    done = 0
    while done < len(rows):
        shard, offset = divmod(start + done, images.shard_images)
        take = min(len(rows) - done, images.shard_images - offset)
        with images.shard_path(shard).open("r+b" if offset else "wb") as handle:
            handle.seek(offset * images.image_bytes)
            handle.write(np.ascontiguousarray(rows[done : done + take]).tobytes())
        done += take


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
