"""A streamed run reads each file once: the pass that verifies the files decodes, resizes and hashes them and writes the
pixels straight into the cache on disk (training/disk_cache.py ScanCache). It gives what the earlier two passes gave
(load_splits decoding every file to verify it, then cache_images decoding it again per split): the same splits,
skipped files and reasons, pixels, digests, duplicate report and batches; the run's check comes before the cache is
trusted; a killed run's cache is never reused, a finished one is reused by a resumed run without reading any image."""
from __future__ import annotations

import collections
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecls import preprocess
from edgecls.errors import ConfigError
from edgecls.training import disk_cache
from edgecls.training.disk_cache import CACHE_DIR, SCAN_NAME, ScanCache
from tests.test_train_streaming import _images

SIZE = (12, 12)
SPLITS = ("train", "val", "test")


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two classes of small PNG/JPEG files of several modes, a corrupt file, an empty one and a file in both classes;
    shards of 4 images, so the splits' rows straddle shard boundaries."""
    monkeypatch.setattr(disk_cache, "SHARD_BYTES", 4 * SIZE[0] * SIZE[1] * 3)
    root = tmp_path / "data"
    for label in ("a", "b"):
        _images(root / label, 7)
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "b" / "empty.jpg").write_bytes(b"")
    shutil.copy(root / "a" / "01.png", root / "b" / "copy.png")
    return root


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[Path]]:
    """How many times each file is opened for decoding (every decode goes through preprocess._load)."""
    counter: collections.Counter[Path] = collections.Counter()
    real = preprocess._load

    def counted(path: Path, hashed: bool) -> Any:
        counter[Path(path)] += 1
        return real(path, hashed)

    monkeypatch.setattr(preprocess, "_load", counted)
    yield counter


def _load(root: Path, run: Path, check: Any = lambda splits: None) -> Any:
    from rich.console import Console

    from edgecls.training.pipeline import load_training_data

    run.mkdir(exist_ok=True)
    console = Console(file=open(run.parent / "console.txt", "a"))  # noqa: SIM115 (closed with the test's tmp files)
    return load_training_data(str(root), 0.3, 0.3, 1, SIZE, "on", run, console, check)


def _batches(images: Any, labels: np.ndarray, training: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    from edgecls.training.augment import AugmentConfig
    from edgecls.training.pipeline import make_dataset

    dataset = make_dataset(images, labels, 2, 4, training, AugmentConfig() if training else None, 5, (0, 2) if training else (0, 1))
    return [(np.asarray(x), np.asarray(y)) for x, y in dataset]


def test_one_read_per_file_gives_what_the_two_passes_gave(tree: Path, tmp_path: Path, reads: collections.Counter[Path]) -> None:
    from edgecls.data.check import cross_split_duplicates
    from edgecls.data.folder import load_splits
    from edgecls.training.disk_cache import cache_images

    separate = load_splits(tree, val_split=0.3, test_split=0.3, seed=1)  # the two passes: verify by decoding ...
    separate_digests: dict[Path, str] = {}
    two_pass = {name: cache_images(list(split.paths), SIZE, tmp_path / "two-pass", name, "key", digests=separate_digests)
                for name, split in separate.splits().items()}  # ... then decode again into the cache
    reads.clear()
    checked: list[bool] = []
    loaded = _load(tree, tmp_path / "run", lambda splits: checked.append((tmp_path / "run" / CACHE_DIR / f"{SCAN_NAME}.json").exists()))
    every = sorted(p for p in tree.rglob("*") if p.is_file() and p.name != "empty.jpg")  # an empty file is refused unread
    assert sorted(reads) == every and set(reads.values()) == {1}  # the corrupt file too: once
    assert checked == [False]  # the check ran, before the cache was trusted
    assert loaded.streamed and loaded.splits == separate
    assert sorted((p.name, why) for p, why in loaded.splits.skipped) == sorted((p.name, why) for p, why in separate.skipped)
    assert {p.name for p, _ in loaded.splits.skipped} == {"broken.png", "empty.jpg"}
    assert loaded.digests == separate_digests
    duplicates = cross_split_duplicates(loaded.splits, loaded.digests)
    assert duplicates and duplicates == cross_split_duplicates(separate)
    for name in SPLITS:
        np.testing.assert_array_equal(loaded.arrays[name][:], two_pass[name][:])
    labels = np.asarray(separate.train.labels)
    for (got_x, got_y), (want_x, want_y) in zip(_batches(loaded.arrays["train"], labels, True), _batches(two_pass["train"], labels, True),
                                                strict=True):
        np.testing.assert_array_equal(got_x, want_x)
        np.testing.assert_array_equal(got_y, want_y)
    val_labels = np.asarray(separate.val.labels)
    for (got_x, _), (want_x, _) in zip(_batches(loaded.arrays["val"], val_labels, False), _batches(two_pass["val"], val_labels, False),
                                       strict=True):
        np.testing.assert_array_equal(got_x, want_x)


def test_a_resumed_run_reuses_the_cache_without_reading_an_image(tree: Path, tmp_path: Path, reads: collections.Counter[Path]) -> None:
    first = _load(tree, tmp_path / "run")
    reads.clear()
    checked: list[str] = []
    again = _load(tree, tmp_path / "run", lambda splits: checked.append(splits.fingerprint))
    assert not reads and checked == [first.splits.fingerprint]
    assert again.splits == first.splits and again.digests == first.digests
    for name in SPLITS:
        np.testing.assert_array_equal(again.arrays[name][:], first.arrays[name][:])
    (tree / "a" / "00.jpg").write_bytes((tree / "a" / "02.png").read_bytes())  # a file changed: rebuilt, every file read again
    changed = _load(tree, tmp_path / "run")
    assert len(reads) == sum(1 for p in tree.rglob("*") if p.is_file() and p.name != "empty.jpg")
    np.testing.assert_array_equal(changed.arrays["train"][:][list(changed.splits.train.paths).index(tree / "a" / "00.jpg")],
                                  preprocess.load_for_model(tree / "a" / "02.png", SIZE))


def test_a_refused_check_leaves_no_cache(tree: Path, tmp_path: Path, reads: collections.Counter[Path]) -> None:
    """A resumed run on changed data is refused by the check; the cache it began is removed, not trusted later."""
    def refuse(splits: Any) -> None:
        raise ConfigError("the images in --data changed", "Restore them")

    with pytest.raises(ConfigError, match="changed"):
        _load(tree, tmp_path / "run", refuse)
    assert not (tmp_path / "run" / CACHE_DIR).exists()


def test_a_killed_run_leaves_no_cache_a_later_run_trusts(tree: Path, tmp_path: Path, reads: collections.Counter[Path]) -> None:
    """Killed while decoding (some rows written, no manifest): the next run decodes everything again."""
    from edgecls.data.decode_pool import DecodeSpec, decode_file
    from edgecls.data.folder import scan_tree

    scan = scan_tree(tree, 0.3, 0.3)
    (tmp_path / "run").mkdir()
    killed = ScanCache(tmp_path / "run" / CACHE_DIR, tree, scan.paths, SIZE)
    killed.start()
    for path in scan.paths[:5]:  # as the decoding pass stores them; no commit: what SIGKILL leaves
        why, pixels, digest = decode_file(path, DecodeSpec(SIZE))
        if why is not None:
            killed.skip(path, why)
        elif pixels is not None and digest is not None:
            killed.store(path, pixels, digest)
    assert not ScanCache(tmp_path / "run" / CACHE_DIR, tree, scan.paths, SIZE).reused
    reads.clear()
    loaded = _load(tree, tmp_path / "run")
    assert len(reads) == len(scan.paths) - 1  # all but the empty file
    fresh = _load(tree, tmp_path / "fresh")
    for name in SPLITS:
        np.testing.assert_array_equal(loaded.arrays[name][:], fresh.arrays[name][:])
    (tmp_path / "run" / CACHE_DIR / f"{SCAN_NAME}-00001.u8").unlink()  # a shard lost: not trusted either
    assert not ScanCache(tmp_path / "run" / CACHE_DIR, tree, scan.paths, SIZE).reused


def test_no_space_for_the_cache_is_refused_before_decoding(tree: Path, tmp_path: Path, reads: collections.Counter[Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(disk_cache.shutil, "disk_usage", lambda path: usage._replace(free=100))
    with pytest.raises(ConfigError, match="GiB is free there"):
        _load(tree, tmp_path / "run")
    assert not reads and not (tmp_path / "run" / CACHE_DIR).exists()
