"""IDX files are unpacked in bounded steps: a gzip bomb (4 MB that unpacks to 4 GiB), from --source or from a mirror,
is refused in one line naming the file, without unpacking past the size its header declares or the Fashion-MNIST limit."""
from __future__ import annotations

import gzip
import struct
import tracemalloc
from pathlib import Path

import pytest

from edgecls.data import fashion_mnist as fm
from edgecls.data.idx import read_idx
from edgecls.errors import DataError
from tests.conftest import assert_clean_error, run_cli
from tests.test_data import fake_fashion_source

TRAIN_IMAGES = "train-images-idx3-ubyte"
_ZEROS_MB = gzip.compress(bytes(1 << 20))  # one gzip member unpacking to 1 MiB of zeros (about 1 KB)


def idx_bomb(path: Path, shape: tuple[int, ...], mebibytes: int) -> Path:
    """A gzip IDX file: a valid uint8 header for `shape`, then `mebibytes` MiB of zeros, as concatenated gzip members
    (built in milliseconds, unpacks to whatever size is asked)."""
    header = struct.pack(">HBB", 0, 0x08, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
    path.write_bytes(gzip.compress(header) + _ZEROS_MB * mebibytes)
    return path


def test_gzip_bomb_with_a_real_header_stops_at_the_declared_size(tmp_path: Path) -> None:
    bomb = idx_bomb(tmp_path / f"{TRAIN_IMAGES}.gz", (60_000, 28, 28), 4096)  # about 4 MB, unpacks to 4 GiB
    assert bomb.stat().st_size < 8_000_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="unpacks to more than 47.0 MB, the size its header declares") as info:
            read_idx(bomb, expect_ndim=3, max_bytes=fm.LARGEST_FILE_BYTES)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(bomb) in str(info.value)
    assert peak < 4 * fm.LARGEST_FILE_BYTES  # bounded by the limit, not by the 4 GiB the file unpacks to


def test_header_declaring_more_than_the_limit_is_refused_before_unpacking(tmp_path: Path) -> None:
    bomb = idx_bomb(tmp_path / "big.gz", (1_000_000, 28, 28), 1)
    with pytest.raises(DataError, match=r"declares shape \(1000000, 28, 28\), 784.0 MB unpacked, more than the 47.0 MB accepted"):
        read_idx(bomb, max_bytes=fm.LARGEST_FILE_BYTES)
    plain = tmp_path / "plain-idx1-ubyte"
    plain.write_bytes(struct.pack(">HBBI", 0, 0x08, 1, 3) + b"abcd")
    with pytest.raises(DataError, match="holds more than 11 bytes, the size its header declares"):
        read_idx(plain)


def test_truncated_bomb_is_a_damaged_gzip(tmp_path: Path) -> None:
    whole = idx_bomb(tmp_path / "whole.gz", (10, 28, 28), 0).read_bytes() + gzip.compress(bytes(10 * 28 * 28))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(whole[:-12])
    with pytest.raises(DataError, match="damaged gzip"):
        read_idx(cut)
    (tmp_path / "ok.gz").write_bytes(whole)  # the same bytes whole read back (multi-member gzip is valid)
    assert read_idx(tmp_path / "ok.gz", expect_ndim=3).shape == (10, 28, 28)


def test_cli_source_with_a_gzip_bomb_is_one_clean_line(tmp_path: Path) -> None:
    source = fake_fashion_source(tmp_path / "src", per_class=2)
    bomb = idx_bomb(source / f"{TRAIN_IMAGES}.gz", (60_000, 28, 28), 4096)
    out = tmp_path / "out"
    result = run_cli("data", "fashion-mnist", out, "--source", source, "--no-download", "--per-class", "1", timeout=120)
    assert_clean_error(result, str(bomb), "unpacks to more than 47.0 MB")
    assert "MemoryError" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no OUT, no temp folder


def test_cli_source_still_works(tmp_path: Path) -> None:
    source = fake_fashion_source(tmp_path / "src", per_class=2)
    out = tmp_path / "out"
    result = run_cli("data", "fashion-mnist", out, "--source", source, "--no-download", "--per-class", "1", timeout=120)
    assert result.returncode == 0, result.output
    assert len(list(out.rglob("*.png"))) == 20


def test_download_of_a_gzip_bomb_is_refused_and_saves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    idx_bomb(mirror / f"{TRAIN_IMAGES}.gz", (60_000, 28, 28), 2048)
    (mirror / f"{TRAIN_IMAGES}.gz").rename(mirror / "bomb.gz")
    for name in fm.CONTENT_SHA256:
        (mirror / f"{name}.gz").symlink_to(mirror / "bomb.gz")
    monkeypatch.setattr(fm, "MIRRORS", (mirror.as_uri() + "/", mirror.as_uri() + "/"))
    target = tmp_path / "cache"
    with pytest.raises(OSError, match="unpacks to more than 47.0 MB") as info:
        fm.download_fashion_mnist(target)
    assert str(info.value).count("unpacks to more than") == 2  # the second mirror was tried too
    assert not target.exists() or not any(target.iterdir())
