"""edgecls.data: IDX reader, Fashion-MNIST export, ImageFolder scanning and splits, dataset check,
and the real `edgecls data` CLI in a subprocess."""
from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.data import fashion_mnist as fm
from edgecls.data.check import check_dataset
from edgecls.data.folder import load_splits, scan_class_folders, split_counts
from edgecls.data.idx import parse_idx, read_idx
from edgecls.errors import ConfigError, DataError
from tests.conftest import assert_clean_error, run_cli

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
needs_debian = pytest.mark.skipif(
    not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(), reason="Debian package dataset-fashion-mnist not installed"
)


# ----------------------------------------------------------------------------- helpers

def idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D,
             np.dtype(">f8"): 0x0E}
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = struct.pack(">HBB", 0, codes[big.dtype], array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + big.tobytes()


def save_image(path: Path, seed: int = 0, mode: str = "RGB", size: tuple[int, int] = (8, 6)) -> Path:
    """A small image with random (so distinct) content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def make_tree(root: Path, counts: dict[str, int], start: int = 0) -> Path:
    seed = start
    for name, n in counts.items():
        for i in range(n):
            seed += 1
            save_image(root / name / f"img{i:03d}.png", seed)
    return root


def rel(paths, root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


# ----------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_idx_roundtrip_all_dtypes(dtype: str) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    decoded = parse_idx(idx_bytes(array))
    assert decoded.shape == (2, 3, 4) and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, array)


def test_read_idx_gzipped_or_plain(tmp_path: Path) -> None:
    array = np.arange(60, dtype=np.uint8).reshape(5, 3, 4)
    (tmp_path / "plain-idx3-ubyte").write_bytes(idx_bytes(array))
    (tmp_path / "zipped.gz").write_bytes(gzip.compress(idx_bytes(array)))
    (tmp_path / "zipped-no-suffix").write_bytes(gzip.compress(idx_bytes(array)))  # detected by content
    for name in ("plain-idx3-ubyte", "zipped.gz", "zipped-no-suffix"):
        np.testing.assert_array_equal(read_idx(tmp_path / name, expect_ndim=3), array)


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"\x00\x00", "only 2 bytes"),
        (b"\x01\x02\x08\x01\x00\x00\x00\x01\x00", "bad magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX dtype"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x02", "header needs 12 bytes"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x04\x01\x02", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "unexpected bytes"),
    ],
)
def test_idx_garbage_raises_data_error_naming_the_file(data: bytes, fragment: str) -> None:
    with pytest.raises(DataError, match=fragment) as info:
        parse_idx(data, "some-file")
    assert "some-file" in str(info.value)


def test_truncated_gzip_and_wrong_rank(tmp_path: Path) -> None:
    raw = gzip.compress(idx_bytes(np.zeros((10, 28, 28), np.uint8)))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="damaged gzip") as info:
        read_idx(cut)
    assert str(cut) in str(info.value)
    whole = tmp_path / "whole.gz"
    whole.write_bytes(raw)
    with pytest.raises(DataError, match="3 dimensions, expected 1"):
        read_idx(whole, expect_ndim=1)
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "missing")


# ----------------------------------------------------------------------------- Fashion-MNIST (library)

def fake_fashion_source(folder: Path, per_class: int = 3) -> Path:
    """Four IDX files in the Fashion-MNIST layout, with per_class images of each label."""
    folder.mkdir(parents=True, exist_ok=True)
    for images_name, labels_name in fm.FILES.values():
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        images = (np.arange(len(labels), dtype=np.uint8)[:, None, None] * np.ones((1, 28, 28), np.uint8))
        (folder / f"{images_name}.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / labels_name).write_bytes(idx_bytes(labels))  # one uncompressed on purpose
    return folder


def test_select_indices_seeded_per_class() -> None:
    labels = np.repeat(np.arange(10), 50)
    a = fm.select_indices(labels, 4, seed=1)
    assert np.array_equal(a, fm.select_indices(labels, 4, seed=1))
    assert not np.array_equal(a, fm.select_indices(labels, 4, seed=2))
    assert np.bincount(labels[a], minlength=10).tolist() == [4] * 10
    assert np.all(np.diff(a) > 0)
    assert len(fm.select_indices(labels, None, seed=0)) == 500
    assert len(fm.select_indices(labels, 80, seed=0)) == 500  # capped by what exists


def test_write_fashion_mnist_from_source(tmp_path: Path) -> None:
    source = fake_fashion_source(tmp_path / "src", per_class=3)
    out = tmp_path / "out"
    calls = []
    summary = fm.write_fashion_mnist(out, per_class=2, source=source, seed=0, download=False, progress=lambda d, t: calls.append((d, t)))
    assert summary["total"] == {"train": 20, "test": 20} and summary["source"] == str(source) and not summary["downloaded"]
    assert calls[-1] == (40, 40)
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(fm.FASHION_MNIST_CLASSES)
    for split in ("train", "test"):
        for name in fm.FASHION_MNIST_CLASSES:
            assert len(list((out / split / name).glob("*.png"))) == 2
    with Image.open(next((out / "train" / "Bag").glob("*.png"))) as image:
        assert image.size == (28, 28) and image.mode == "L"
    # a previous export may be replaced; a folder with other files may not
    fm.write_fashion_mnist(out, per_class=1, source=source, download=False)
    assert len(list(out.rglob("*.png"))) == 20
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="holds other files"):
        fm.write_fashion_mnist(tmp_path / "mine", per_class=1, source=source, download=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_fashion_mnist_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--per-class must be at least 1"):
        fm.write_fashion_mnist(tmp_path / "o", per_class=0, source=tmp_path)
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    with pytest.raises(DataError, match="lacks train-labels-idx1-ubyte, t10k-images") as info:
        fm.find_fashion_mnist(tmp_path / "partial")
    assert "apt-get install dataset-fashion-mnist" in str(info.value)
    with pytest.raises(DataError, match="download disabled"):
        fm.write_fashion_mnist(tmp_path / "o", per_class=1, source=tmp_path / "partial", download=False)
    assert not (tmp_path / "o").exists()


@needs_debian
def test_download_falls_back_to_next_mirror_and_checks_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(fm, "MIRRORS", ((tmp_path / "nowhere").as_uri() + "/", DEBIAN.as_uri() + "/"))
    folder, downloaded = fm.locate_or_download(tmp_path, download=True)  # tmp_path has no IDX files
    assert downloaded and folder == fm.cache_dir() and not fm._files_in(folder)[1]
    bad = fake_fashion_source(tmp_path / "bad")
    monkeypatch.setattr(fm, "MIRRORS", (bad.as_uri() + "/",))
    with pytest.raises(OSError, match="does not match the known SHA-256"):
        fm.download_fashion_mnist(tmp_path / "other")
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").glob("*.gz"))


# ----------------------------------------------------------------------------- ImageFolder splits

def test_flat_tree_stratified_seeded_split(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ds", {"cats": 20, "dogs": 10, "owls": 3, "rare": 2})
    data = load_splits(root, val_split=0.1, test_split=0.1, seed=0)
    assert data.classes == ("cats", "dogs", "owls", "rare") and not data.presplit
    counts = data.counts()
    assert counts["val"] == {"cats": 2, "dogs": 1, "owls": 1, "rare": 0}
    assert counts["test"] == {"cats": 2, "dogs": 1, "owls": 1, "rare": 0}
    assert counts["train"] == {"cats": 16, "dogs": 8, "owls": 1, "rare": 2}
    everything = set(data.train.paths) | set(data.val.paths) | set(data.test.paths)
    assert len(everything) == 35 == len(data.train) + len(data.val) + len(data.test)
    assert data.train.labels.dtype == np.int64
    for split in data.splits().values():  # labels match the class folder
        assert [data.classes[label] for label in split.labels] == [p.parent.name for p in split.paths]
    again = load_splits(root, val_split=0.1, test_split=0.1, seed=0)
    assert again.train == data.train and again.val == data.val and again.fingerprint == data.fingerprint
    other = load_splits(root, val_split=0.1, test_split=0.1, seed=7)
    assert other.val != data.val and other.counts() == counts


def test_split_counts_rules() -> None:
    assert split_counts(3, 0.1, 0.1) == (1, 1)
    assert split_counts(2, 0.1, 0.1) == (0, 0)
    assert split_counts(1, 0.5, 0.4) == (0, 0)
    assert split_counts(100, 0.15, 0.0) == (15, 0)
    assert split_counts(4, 0.45, 0.45) == (2, 1)  # one training image always remains


def test_presplit_layouts(tmp_path: Path) -> None:
    full = tmp_path / "full"
    make_tree(full / "train", {"a": 6, "b": 6})
    make_tree(full / "validation", {"a": 2, "b": 2}, start=100)
    make_tree(full / "test", {"a": 3, "b": 1}, start=200)
    data = load_splits(full)
    assert data.presplit and data.classes == ("a", "b")
    assert data.counts() == {"train": {"a": 6, "b": 6}, "val": {"a": 2, "b": 2}, "test": {"a": 3, "b": 1}}
    assert rel(data.val.paths, full)[0] == "validation/a/img000.png"

    no_val = tmp_path / "no_val"
    make_tree(no_val / "train", {"a": 10, "b": 10})
    make_tree(no_val / "test", {"a": 2, "b": 2}, start=100)
    data = load_splits(no_val, val_split=0.2)
    assert data.counts()["val"] == {"a": 2, "b": 2} and data.counts()["train"] == {"a": 8, "b": 8}
    assert all(p.is_relative_to(no_val / "train") for p in data.val.paths)
    assert len(data.test) == 4

    no_test = tmp_path / "no_test"
    make_tree(no_test / "train", {"a": 5, "b": 5})
    make_tree(no_test / "val", {"a": 1, "b": 1}, start=100)
    data = load_splits(no_test)
    assert len(data.test) == 0 and len(data.train) == 10 and data.test.labels.dtype == np.int64

    # a flat tree may have a class called "train"
    flat = make_tree(tmp_path / "flat", {"train": 3, "bus": 3})
    assert not load_splits(flat).presplit


def test_junk_hidden_and_other_files_ignored(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ds", {"cats": 3, "dogs": 3})
    (root / "cats" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / "cats" / "._img000.png").write_bytes(b"AppleDouble")
    (root / "cats" / "Thumbs.db").write_bytes(b"junk")
    (root / "cats" / "desktop.ini").write_text("[x]")
    (root / "cats" / "notes.txt").write_text("hi")
    save_image(root / "cats" / ".hidden" / "h.png", 90)
    save_image(root / "__MACOSX" / "cats" / "m.png", 91)
    save_image(root / ".git" / "objects" / "o.png", 92)
    save_image(root / "dogs" / "nested" / "deeper" / "UPPER.JPG", 93)
    data = load_splits(root)
    assert data.classes == ("cats", "dogs") and not data.skipped
    names = {p.name for s in data.splits().values() for p in s.paths}
    assert names == {"img000.png", "img001.png", "img002.png", "UPPER.JPG"}
    classes, paths, labels = scan_class_folders(root)
    assert classes == ["cats", "dogs"] and len(paths) == 7 and labels == [0, 0, 0, 1, 1, 1, 1]
    assert rel(paths, root)[3] == "dogs/img000.png"  # sorted by path within a class
    assert rel(paths, root)[6] == "dogs/nested/deeper/UPPER.JPG"


def test_symlink_loops_are_safe(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ds", {"cats": 3, "dogs": 3})
    os.symlink(root / "cats", root / "cats" / "self")
    os.symlink(root, root / "cats" / "up")
    os.symlink(root / "dogs" / "missing.png", root / "dogs" / "broken.png")
    os.symlink("b", root / "dogs" / "a")
    os.symlink("a", root / "dogs" / "b")
    classes, paths, labels = scan_class_folders(root)
    assert classes == ["cats", "dogs"] and labels == [0, 0, 0, 1, 1, 1]
    data = load_splits(root)
    assert [(p.name, r) for p, r in data.skipped] == [("broken.png", "broken symlink")]


def test_corrupt_files_skipped_with_reasons(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ds", {"cats": 4, "dogs": 4})
    (root / "cats" / "empty.png").write_bytes(b"")
    (root / "cats" / "text.jpg").write_text("not an image")
    whole = save_image(tmp_path / "whole.png", 5, size=(64, 64)).read_bytes()
    (root / "dogs" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    data = load_splits(root)
    reasons = {p.name: r for p, r in data.skipped}
    assert set(reasons) == {"empty.png", "text.jpg", "truncated.png"}
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert "not a readable image" in reasons["text.jpg"] and "truncated" in reasons["truncated.png"]
    assert len(data.train) + len(data.val) + len(data.test) == 8
    unverified = load_splits(root, verify=False)
    assert not unverified.skipped and len(unverified.train) + len(unverified.val) + len(unverified.test) == 11


def test_image_modes_accepted(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    save_image(root / "a" / "gray.png", 1, mode="L")
    save_image(root / "a" / "rgba.png", 2, mode="RGBA")
    save_image(root / "a" / "palette.gif", 3, mode="P")
    save_image(root / "b" / "photo.jpeg", 4)
    save_image(root / "b" / "bitmap.bmp", 5)
    save_image(root / "b" / "lossless.webp", 6)
    deep = np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000
    Image.fromarray(deep).save(root / "b" / "sixteen.png")
    assert Image.open(root / "b" / "sixteen.png").mode.startswith("I")
    data = load_splits(root, val_split=0.0, test_split=0.0)
    assert not data.skipped and len(data.train) == 7


def test_fingerprint_tracks_content(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ds", {"a": 3, "b": 3})
    first = load_splits(root).fingerprint
    assert len(first) == 16 and load_splits(root).fingerprint == first
    save_image(root / "a" / "new.png", 99)
    assert load_splits(root).fingerprint != first


def test_structural_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_splits(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_splits(tmp_path / "file.txt")

    one = make_tree(tmp_path / "one", {"cats": 4})
    with pytest.raises(DataError, match="a classifier needs at least 2 classes; found 1: 'cats'"):
        load_splits(one)

    loose = tmp_path / "loose"
    save_image(loose / "x.png")
    with pytest.raises(DataError, match="holds images but no class folders"):
        load_splits(loose)

    empty = make_tree(tmp_path / "empty", {"cats": 3, "dogs": 3})
    (empty / "birds").mkdir()
    (empty / "birds" / "readme.txt").write_text("todo")
    (empty / "birds" / "bad.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"class folder '.*birds' has no usable images \(1 unreadable") as info:
        load_splits(empty)
    assert "1 file(s) without an image suffix" in str(info.value)

    mismatch = tmp_path / "mismatch"
    make_tree(mismatch / "train", {"cats": 3, "dogs": 3})
    make_tree(mismatch / "val", {"cats": 1}, start=50)
    make_tree(mismatch / "test", {"cats": 1, "dogs": 1, "birds": 1}, start=60)
    with pytest.raises(DataError, match="val/ lacks 'dogs'; test/ has extra 'birds'"):
        load_splits(mismatch)

    no_train = tmp_path / "no_train"
    make_tree(no_train / "val", {"a": 1, "b": 1})
    with pytest.raises(DataError, match="no train/ folder"):
        load_splits(no_train)


@pytest.mark.parametrize("val, test", [(-0.1, 0.1), (1.0, 0.0), (0.5, 0.5), (float("nan"), 0.1), (0.1, 1.2)])
def test_bad_fractions(tmp_path: Path, val: float, test: float) -> None:
    with pytest.raises(ConfigError, match="split"):
        load_splits(tmp_path, val_split=val, test_split=test)


# ----------------------------------------------------------------------------- check

def dirty_tree(root: Path) -> Path:
    make_tree(root / "train", {"cats": 6, "dogs": 2})
    make_tree(root / "test", {"cats": 1, "dogs": 1}, start=100)
    (root / "test" / "cats" / "copy.png").write_bytes((root / "train" / "cats" / "img002.png").read_bytes())
    (root / "train" / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    save_image(root / "train" / "dogs" / "big.png", 7, size=(40, 30))
    return root


def test_check_dataset_report(tmp_path: Path) -> None:
    report = check_dataset(dirty_tree(tmp_path / "ds"))
    json.dumps(report)  # JSON-serialisable
    assert report["classes"] == ["cats", "dogs"] and report["presplit"]
    assert report["totals"]["test"] == 3
    assert report["imbalance_ratio"] == report["counts"]["train"]["cats"] / report["counts"]["train"]["dogs"]
    assert report["image_size"]["width"] == {"min": 8, "median": 8, "max": 40}
    assert [u["path"] for u in report["unreadable"]] == ["train/dogs/broken.jpg"]
    [group] = report["duplicates"]
    assert {f["path"] for f in group["files"]} == {"train/cats/img002.png", "test/cats/copy.png"}
    assert group["cross_split"] and not group["cross_class"]
    assert any("more than one split" in w for w in report["warnings"])


# ----------------------------------------------------------------------------- the real CLI

@needs_debian
def test_cli_fashion_mnist_subset(tmp_path: Path) -> None:
    out = tmp_path / "fmnist"
    result = run_cli("data", "fashion-mnist", out, "--per-class", "3", "--no-download")
    assert result.returncode == 0, result.output
    assert str(out) in result.stdout and "Traceback" not in result.output
    for split in ("train", "test"):
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(fm.FASHION_MNIST_CLASSES)
        files = sorted((out / split).rglob("*.png"))
        assert len(files) == 30
        for path in files[::7]:
            with Image.open(path) as image:
                assert image.size == (28, 28) and image.mode in ("L", "RGB")
    assert [p.name for p in tmp_path.iterdir()] == ["fmnist"]  # no temp folders left
    data = load_splits(out)
    assert data.presplit and len(data.classes) == 10 and len(data.test) == 30


def test_cli_fashion_mnist_missing_source(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    result = run_cli("data", "fashion-mnist", out, "--source", empty, "--no-download", "--per-class", "2")
    assert_clean_error(result, "Fashion-MNIST IDX files not found", str(empty), "apt-get install dataset-fashion-mnist")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["empty"]
    bad = run_cli("data", "fashion-mnist", out, "--per-class", "0")
    assert_clean_error(bad, "--per-class must be at least 1")


def test_cli_check_json_and_tables(tmp_path: Path) -> None:
    root = dirty_tree(tmp_path / "ds")
    result = run_cli("data", "check", root, "--json")
    assert result.returncode == 0, result.output
    report = json.loads(result.stdout)  # stdout holds only JSON
    assert report["unreadable"][0]["path"] == "train/dogs/broken.jpg"
    assert report["duplicates"][0]["cross_split"]
    screen = run_cli("data", "check", root)
    assert screen.returncode == 0, screen.output
    assert "images per class" in screen.stdout and "copy.png" in screen.stdout and "broken.jpg" in screen.stdout
    missing = run_cli("data", "check", tmp_path / "nope")
    assert_clean_error(missing, "does not exist")
