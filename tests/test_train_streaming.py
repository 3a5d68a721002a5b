"""Datasets larger than memory: the uint8 cache on disk holds the same pixels as the in-memory path, its tf.data batches
are the in-memory batches, and a streamed run (killed and resumed) ends with the weights of an in-memory run."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.errors import ConfigError
from edgecls.training import disk_cache
from edgecls.training.augment import AugmentConfig
from edgecls.training.disk_cache import CACHE_DIR, SCAN_NAME, cache_images, check_free_space
from edgecls.training.pipeline import DecodedOnDemand, load_images, make_dataset, should_stream
from tests.conftest import assert_clean_error, resume_args, run_cli
from tests.test_resume import _assert_same_run, _kill_when


def _images(folder: Path, count: int = 11) -> list[Path]:
    """Small files of several sizes, modes and formats: what the shared preprocessing has to handle."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        shape = (int(rng.integers(9, 40)), int(rng.integers(9, 40)))
        pixels = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert(["RGB", "L", "RGBA", "P"][i % 4])
        path = folder / f"{i:02d}.{'png' if i % 3 else 'jpg'}"
        image.convert("RGB").save(path) if path.suffix == ".jpg" else image.save(path)
        paths.append(path)
    return paths


def test_training_reads_each_file_once_and_gets_what_separate_passes_get(tmp_path: Path, small_shards: None) -> None:
    """In memory, the verifying pass also decodes and hashes: the same splits, skipped files, pixels and duplicates as
    load_splits + load_images + hashing each file; streamed, the cache holds those pixels too."""
    import hashlib

    from rich.console import Console

    from edgecls.data.check import cross_split_duplicates
    from edgecls.data.folder import load_splits
    from edgecls.training.pipeline import load_training_data

    for label in ("a", "b"):
        _images(tmp_path / "data" / label, 7)
    (tmp_path / "data" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    shutil.copy(tmp_path / "data" / "a" / "01.png", tmp_path / "data" / "b" / "copy.png")  # one file in two classes
    separate = load_splits(tmp_path / "data", val_split=0.3, test_split=0.3, seed=1)
    console = Console(file=open(tmp_path / "console.txt", "w"))  # noqa: SIM115 (closed with the test's tmp files)
    fused = load_training_data(str(tmp_path / "data"), 0.3, 0.3, 1, (12, 12), "auto", tmp_path / "run", console)
    assert not fused.streamed and fused.splits == separate and len(fused.splits.skipped) == 1
    for name, split in separate.splits().items():
        np.testing.assert_array_equal(fused.arrays[name], load_images(list(split.paths), (12, 12)))
    assert fused.digests == {p: hashlib.sha256(p.read_bytes()).hexdigest() for s in separate.splits().values() for p in s.paths}
    assert cross_split_duplicates(fused.splits, fused.digests) == cross_split_duplicates(separate)
    (tmp_path / "run").mkdir()
    streamed = load_training_data(str(tmp_path / "data"), 0.3, 0.3, 1, (12, 12), "on", tmp_path / "run", console)
    assert streamed.streamed and streamed.splits == separate and streamed.digests == fused.digests
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(streamed.arrays[name][:], fused.arrays[name])


@pytest.fixture
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disk_cache, "SHARD_BYTES", 4 * 12 * 12 * 3)  # 4 images of 12x12 per shard: 3 shards for 11
    monkeypatch.setattr(disk_cache, "_CHUNK", 3)  # chunks that straddle shard boundaries


def test_cache_holds_the_same_pixels_as_memory(tmp_path: Path, small_shards: None) -> None:
    paths = _images(tmp_path / "images")
    in_memory = load_images(paths, (12, 12))
    on_disk = cache_images(paths, (12, 12), tmp_path / CACHE_DIR, "train", "key-1")
    assert len(list((tmp_path / CACHE_DIR).glob("train-*.u8"))) == 3
    assert on_disk.shape == in_memory.shape and on_disk.ndim == 4
    np.testing.assert_array_equal(on_disk[:], in_memory)
    order = np.random.default_rng(0).permutation(len(paths))
    np.testing.assert_array_equal(on_disk.gather(np.concatenate([order, order[:2]])), in_memory[np.concatenate([order, order[:2]])])
    np.testing.assert_array_equal(on_disk[3:9][:, :, ::-1], in_memory[3:9, :, ::-1])
    with pytest.raises(IndexError):
        on_disk.gather([len(paths)])


def test_cache_is_reused_only_for_the_same_images(tmp_path: Path, small_shards: None) -> None:
    paths = _images(tmp_path / "images")
    folder = tmp_path / CACHE_DIR
    cache_images(paths, (12, 12), folder, "val", "key-1")
    first = folder / "val-00000.u8"
    stamp = first.stat().st_mtime_ns
    cache_images(paths, (12, 12), folder, "val", "key-1")  # a resumed run: nothing decoded again
    assert first.stat().st_mtime_ns == stamp
    (folder / "val-00000.u8").write_bytes(b"")  # shard damaged, but the manifest still matches: reading says so
    with pytest.raises(ConfigError, match="truncated"):
        cache_images(paths, (12, 12), folder, "val", "key-1")[0]
    rebuilt = cache_images(paths[::-1], (12, 12), folder, "val", "key-2")  # other images: rebuilt
    np.testing.assert_array_equal(rebuilt[:], load_images(paths[::-1], (12, 12)))
    (folder / "val.json").unlink()  # interrupted before the manifest: rebuilt, never read half-written
    np.testing.assert_array_equal(cache_images(paths, (12, 12), folder, "val", "key-1")[:], load_images(paths, (12, 12)))


def _batches(dataset: object) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(x), np.asarray(y)) for x, y in dataset]  # type: ignore[attr-defined]


def test_streamed_batches_are_the_in_memory_batches(tmp_path: Path, small_shards: None) -> None:
    """Same order (a function of seed and epoch), same augmentation, same pixels: training and evaluation."""
    paths = _images(tmp_path / "images")
    labels = np.arange(len(paths)) % 3
    in_memory = load_images(paths, (12, 12))
    on_disk = cache_images(paths, (12, 12), tmp_path / CACHE_DIR, "train", "key")
    for training, augment, epochs in ((True, AugmentConfig(), (1, 3)), (True, None, (0, 1)), (False, None, (0, 1))):
        expected = _batches(make_dataset(in_memory, labels, 3, 4, training, augment, 7, epochs, ramp_from=1))
        got = _batches(make_dataset(on_disk, labels, 3, 4, training, augment, 7, epochs, ramp_from=1))
        assert len(got) == len(expected) == 3 * (epochs[1] - epochs[0])
        for (gx, gy), (ex, ey) in zip(got, expected):
            np.testing.assert_array_equal(gx, ex)
            np.testing.assert_array_equal(gy, ey)


def test_evaluation_reads_the_same_pixels_from_disk_or_file_by_file(tmp_path: Path, small_shards: None) -> None:
    """The final evaluation of a streamed run (its cache) and `edgecls eval` over the budget (decoded batch by batch)."""
    import keras

    from edgecls.training.evaluate import predict_arrays

    paths = _images(tmp_path / "images")
    in_memory = load_images(paths, (12, 12))
    on_demand = DecodedOnDemand(paths, (12, 12))
    assert len(on_demand) == len(paths) and on_demand.ndim == 4
    np.testing.assert_array_equal(on_demand[2:7], in_memory[2:7])
    inputs = keras.Input((12, 12, 3))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs)))
    expected = predict_arrays(model, in_memory, batch=4)
    for images in (on_demand, cache_images(paths, (12, 12), tmp_path / CACHE_DIR, "test", "key")):
        np.testing.assert_array_equal(predict_arrays(model, images, batch=4), expected)  # type: ignore[arg-type]


def test_when_to_stream() -> None:
    assert not should_stream("auto", 100, 100) and should_stream("auto", 101, 100)
    assert should_stream("on", 1, 100) and not should_stream("off", 100, 100)
    with pytest.raises(ConfigError, match="--stream auto"):
        should_stream("off", 101, 100)


def test_bad_stream_value_is_one_clean_line(fmnist_tree: Path, tmp_path: Path) -> None:
    result = run_cli("train", "--data", fmnist_tree, "--stream", "sometimes", "--out", tmp_path / "run")
    assert result.returncode != 0
    assert_clean_error(result, "--stream 'sometimes'")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_streamed_run_killed_and_resumed_ends_as_the_in_memory_run(fmnist_tree: Path, resume_baseline: Path, tmp_path: Path) -> None:
    """Feature-cache head on streamed images, then fine-tuning on streamed augmented batches; SIGKILL in the head
    phase, resume (the cache on disk is reused), and the weights equal those of the same run held in memory
    (conftest's resume_baseline, `--stream off`, shared with test_resume.py)."""
    args = resume_args(fmnist_tree, resume_baseline / "backbone.weights.h5")
    run = tmp_path / "streamed"
    _kill_when([*args, "--stream", "on", "--out", str(run)], run, "head", 2)
    assert (run / CACHE_DIR / f"{SCAN_NAME}.json").is_file()
    result = run_cli("train", "--resume", run)
    assert result.returncode == 0, result.output
    assert "streaming from disk" in result.stderr
    _assert_same_run(run, resume_baseline / "uninterrupted")
    assert not (run / CACHE_DIR).exists()  # derived data: removed when the run finishes


def test_a_cache_that_cannot_fit_on_disk_is_refused_before_decoding(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    check_free_space(tmp_path / CACHE_DIR, 1024)
    with pytest.raises(ConfigError, match="GiB is free there"):
        check_free_space(tmp_path / CACHE_DIR, free * 4)
    assert not (tmp_path / CACHE_DIR).exists()


def test_a_file_over_the_read_once_size_is_decoded_and_hashed_from_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training reads a file once for decoding and hashing only up to READ_ONCE_BYTES: a bigger one (a junk file of
    gigabytes named .jpg) never sits in memory whole; the pixels and the digest are the same either way."""
    import hashlib

    from edgecls import preprocess
    from edgecls.errors import ImageError

    path = _images(tmp_path / "images", 2)[1]
    small = preprocess.load_image_and_digest(path)
    monkeypatch.setattr(preprocess, "READ_ONCE_BYTES", 16)
    large = preprocess.load_image_and_digest(path)
    np.testing.assert_array_equal(large[0], small[0])
    assert large[1] == small[1] == hashlib.sha256(path.read_bytes()).hexdigest()
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image" * 100)
    with pytest.raises(ImageError, match="not a readable image"):
        preprocess.load_image_and_digest(junk)
