"""The decoding pass in worker processes (edgecls/data/decode_pool.py): the same pixels, sha256 digests, skipped files and
reasons, in the same order, as the serial / threaded path; spawned workers without TensorFlow; Ctrl-C or a failure in
the parent terminates them; a killed worker is one clear error; `edgecls data check` on a tree large enough for processes."""
from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.data import decode_pool
from edgecls.data.decode_pool import DecodeSpec, FileDecoder, decode_file
from edgecls.errors import DataError
from tests.conftest import REPO

SIZE = (12, 12)


def _write_images(folder: Path, count: int, seed: int = 3) -> None:
    """Small files of several sizes, modes and formats (PNG, JPEG, GIF)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shape = (int(rng.integers(9, 40)), int(rng.integers(9, 40)))
        image = Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).convert(["RGB", "L", "RGBA", "P"][i % 4])
        suffix = ("png", "jpg", "gif")[i % 3]
        image.convert("RGB").save(folder / f"{i:04d}.jpg") if suffix == "jpg" else image.save(folder / f"{i:04d}.{suffix}")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Two classes, a pre-split test folder, a corrupt file, an empty one, a truncated JPEG and a copy across classes."""
    root = tmp_path / "data"
    for split in ("train", "test"):
        for label in ("a", "b"):
            _write_images(root / split / label, 9 if split == "train" else 4, seed=len(split) + ord(label))
    (root / "train" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "train" / "b" / "empty.jpg").write_bytes(b"")
    whole = (root / "train" / "a" / "0001.jpg").read_bytes()
    (root / "test" / "b" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    shutil.copy(root / "train" / "a" / "0000.png", root / "train" / "b" / "copy.png")
    return root


def _paths(root: Path) -> list[Path]:
    from edgecls.data.folder import scan_tree

    return scan_tree(root, 0.2, 0.0).paths


def _store(into: dict[Path, tuple[np.ndarray, str]], path: Path, pixels: np.ndarray, digest: str) -> None:
    into[path] = (pixels, digest)


@pytest.mark.parametrize("size", [SIZE, None])
def test_processes_give_what_serial_decoding_gives(tree: Path, size: tuple[int, int] | None) -> None:
    paths = _paths(tree)
    serial = [decode_file(path, DecodeSpec(size)) for path in paths]
    assert sum(reason is not None for reason, _, _ in serial) == 3
    for mode in ("processes", "threads", "serial"):
        got: dict[Path, tuple[np.ndarray, str]] = {}
        advanced: list[int] = []
        with FileDecoder(DecodeSpec(size), functools.partial(_store, got), functools.partial(advanced.append, 1), mode=mode,
                         workers=2, files_per_task=3) as decoder:
            reasons = decoder.reasons(paths)
            assert decoder.used == mode
        assert reasons == [reason for reason, _, _ in serial]
        assert len(advanced) == len(paths)
        usable = [(path, pixels, digest) for path, (reason, pixels, digest) in zip(paths, serial) if reason is None]
        if size is None:
            assert got == {} and all(pixels is None for _, pixels, _ in usable)
            continue
        assert list(got) == [path for path, _, _ in usable]  # in the scan's order
        for path, pixels, digest in usable:
            assert got[path][1] == digest
            assert got[path][0].dtype == np.uint8 and pixels is not None and np.array_equal(got[path][0], pixels)


@pytest.mark.parametrize("stream", ["off", "on"])
def test_training_decodes_the_same_in_processes_and_serially(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            stream: str) -> None:
    """load_training_data, in memory or streamed into its cache on disk: the same splits, skipped files and reasons,
    pixels and digests (and the same cache manifest) either way."""
    from rich.console import Console

    from edgecls.training.disk_cache import CACHE_DIR, SCAN_NAME
    from edgecls.training.pipeline import load_training_data

    results, manifests = {}, {}
    for mode, min_files in (("serial", 10**9), ("processes", 0)):
        monkeypatch.setattr(decode_pool, "MIN_FILES_FOR_PROCESSES", min_files)
        (tmp_path / mode).mkdir()  # the run folder
        results[mode] = load_training_data(str(tree), 0.2, 0.0, 0, SIZE, stream, tmp_path / mode, Console(stderr=True, quiet=True))
        if stream == "on":
            manifests[mode] = json.loads((tmp_path / mode / CACHE_DIR / f"{SCAN_NAME}.json").read_text())
    serial, processes = results["serial"], results["processes"]
    assert processes.splits == serial.splits and len(serial.splits.skipped) == 3
    assert processes.digests == serial.digests and processes.streamed == serial.streamed == (stream == "on")
    for name in ("train", "val", "test"):
        assert np.array_equal(processes.arrays[name][:], serial.arrays[name][:])
    assert manifests.get("processes") == manifests.get("serial")
    if stream == "on":
        assert len(manifests["serial"]["reasons"]) == 3


def test_verify_true_decodes_in_processes_for_a_large_tree(tmp_path: Path) -> None:
    """load_splits(verify=True), as `edgecls data check` calls it, chooses processes for >= MIN_FILES_FOR_PROCESSES small
    images on a machine with 2+ CPUs, and keeps what the per-file decoder (threads) keeps; the real CLI reports the
    broken file."""
    from edgecls.data.folder import load_splits
    from edgecls.preprocess import load_image

    root = tmp_path / "large"
    _write_images(root / "a", 8)
    _write_images(root / "b", 8, seed=4)
    for label in ("a", "b"):  # copies are cheap to make and just as costly to decode
        for i in range(decode_pool.MIN_FILES_FOR_PROCESSES // 2):
            shutil.copy(root / label / f"{i % 8:04d}.{('png', 'jpg', 'gif')[i % 8 % 3]}", root / label / f"x{i:05d}.png")
    (root / "b" / "broken.png").write_bytes(b"not an image")
    chosen = FileDecoder(DecodeSpec()).plan(len(_paths(root)), _paths(root))
    assert chosen == ("processes" if decode_pool.available_cpus() > 1 else "serial")
    assert load_splits(root, 0.1, 0.1, 0, verify=True) == load_splits(root, 0.1, 0.1, 0, verify=load_image)
    check = subprocess.run([sys.executable, "-c", "from edgecls.cli.app import main; main()", "data", "check", str(root)],
                           capture_output=True, text=True, cwd=REPO, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert check.returncode == 0, check.stderr
    assert "broken.png" in check.stdout + check.stderr and "Traceback" not in check.stderr


def test_processes_only_for_many_small_images(tmp_path: Path) -> None:
    """Large images (Pillow and OpenCV release the GIL: threads already use every core) stay in threads; a few small
    ones, or one CPU, are decoded serially (threads only add GIL contention there)."""
    small, large = tmp_path / "small.png", tmp_path / "large.jpg"
    Image.new("RGB", (28, 28)).save(small)
    Image.new("RGB", (224, 224)).save(large)
    many = decode_pool.MIN_FILES_FOR_PROCESSES
    several_cpus = decode_pool.available_cpus() > 1
    assert FileDecoder(DecodeSpec()).plan(many, [small]) == ("processes" if several_cpus else "serial")
    assert FileDecoder(DecodeSpec()).plan(many, [large]) == "threads"
    assert FileDecoder(DecodeSpec()).plan(many - 1, [small]) == "serial"
    assert FileDecoder(DecodeSpec(), workers=1).plan(many, [small]) == "serial"


@pytest.mark.filterwarnings("ignore:resource_tracker")  # the tracker cannot start either, and is relaunched later
def test_workers_that_cannot_start_fall_back_to_threads(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing.spawn

    monkeypatch.setattr(multiprocessing.spawn, "_python_exe", os.fsencode(tree / "no-python-here"))  # as set_executable stores it
    paths = _paths(tree)
    with FileDecoder(DecodeSpec(SIZE), mode="processes", workers=2) as decoder:
        reasons = decoder.reasons(paths)
        assert decoder.used == "threads"
    assert reasons == [decode_file(path, DecodeSpec(SIZE))[0] for path in paths]


def test_workers_are_spawned_without_tensorflow(tree: Path) -> None:
    with FileDecoder(DecodeSpec(SIZE), mode="processes", workers=2) as decoder:
        decoder.reasons(_paths(tree))
        executor = decoder._start()
        loaded = executor.submit(decode_pool._loaded_modules, ("tensorflow", "keras", "torch", "edgecls")).result()
        pids = decoder.worker_pids()
    assert "edgecls.preprocess" in loaded
    assert not [name for name in loaded if name.startswith(("tensorflow", "keras", "torch"))], loaded
    assert len(pids) == min(2, decode_pool.available_cpus()) and os.getpid() not in pids
    _assert_gone(pids)


def test_a_script_without_a_main_guard_is_not_run_again_by_the_workers(tree: Path, tmp_path: Path) -> None:
    """A library caller's script that calls edgecls at top level (no `if __name__ == "__main__":`): spawned workers would
    normally re-run it; they do not."""
    script = tmp_path / "caller.py"
    script.write_text("from pathlib import Path\n"
                      "from edgecls.data.decode_pool import DecodeSpec, FileDecoder\n"
                      "print('caller ran', flush=True)\n"
                      f"paths = sorted(Path({str(tree)!r}).rglob('*.png'))\n"
                      "with FileDecoder(DecodeSpec((8, 8)), mode='processes', workers=2) as decoder:\n"
                      "    print(sum(reason is None for reason in decoder.reasons(paths)), 'usable', flush=True)\n")
    ran = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=REPO, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.count("caller ran") == 1 and "usable" in ran.stdout, ran.stdout + ran.stderr


def _assert_gone(pids: list[int]) -> None:
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # terminated and reaped: no orphan, no zombie
            os.kill(pid, 0)


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_an_interrupt_or_failure_in_the_parent_terminates_the_workers(tree: Path, failure: type[BaseException]) -> None:
    pids: list[int] = []

    def on_decoded(path: Path, pixels: np.ndarray, digest: str) -> None:
        pids.extend(decoder.worker_pids())
        raise failure("stop")

    decoder = FileDecoder(DecodeSpec(SIZE), on_decoded, mode="processes", workers=2, files_per_task=1)
    with pytest.raises(failure), decoder:
        decoder.reasons(_paths(tree))
    assert pids and decoder.worker_pids() == []
    _assert_gone(pids)


def test_an_interrupt_in_threads_cancels_the_files_not_started(tmp_path: Path) -> None:
    """The thread path too: Ctrl-C waits only for the files being decoded, not for the rest of a 4096-file chunk."""
    calls: list[Path] = []

    def reason_of(path: Path) -> str | None:
        calls.append(path)
        time.sleep(0.002)  # a file's work
        if path.name == "0.png":
            raise KeyboardInterrupt
        return None

    paths = [tmp_path / f"{i}.png" for i in range(3000)]
    with pytest.raises(KeyboardInterrupt):
        decode_pool.reasons_of(reason_of, paths)
    assert len(calls) < 1000


def test_a_killed_worker_is_one_clear_error(tree: Path) -> None:
    pids: list[int] = []

    def on_decoded(path: Path, pixels: np.ndarray, digest: str) -> None:
        if not pids:
            pids.extend(decoder.worker_pids())
            for pid in pids:
                os.kill(pid, signal.SIGKILL)  # e.g. the kernel's OOM killer

    decoder = FileDecoder(DecodeSpec(SIZE), on_decoded, mode="processes", workers=2, files_per_task=1)
    with pytest.raises(DataError) as caught, decoder:
        decoder.reasons(_paths(tree) * 4)
    assert "worker process decoding images stopped unexpectedly" in str(caught.value) and "\n" not in str(caught.value)
    _assert_gone(pids)


def test_ctrl_c_during_data_check_leaves_no_process_behind(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole process group: the CLI stops (exit 130, no traceback), the workers with it."""
    root = tmp_path / "many"
    _write_images(root / "a", 3)
    _write_images(root / "b", 3, seed=4)
    for label in ("a", "b"):
        for i in range(3000):
            shutil.copy(root / label / "0000.png", root / label / f"x{i:05d}.png")
    cli = subprocess.Popen([sys.executable, "-c", "from edgecls.cli.app import main; main()", "data", "check", str(root)],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    children = Path(f"/proc/{cli.pid}/task/{cli.pid}/children")
    deadline = time.monotonic() + 120
    while cli.poll() is None and time.monotonic() < deadline and len(children.read_text().split()) < 2:
        time.sleep(0.01)  # until the workers exist
    workers = [int(pid) for pid in children.read_text().split()] if cli.poll() is None else []
    os.killpg(cli.pid, signal.SIGINT)
    _, stderr = cli.communicate(timeout=60)
    assert workers, "the check finished before its workers were seen"
    assert cli.returncode == 130 and "Traceback" not in stderr, stderr
    for _ in range(500):  # the resource tracker exits once its parent has gone
        try:
            os.killpg(cli.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    else:
        pytest.fail(f"processes left in the group: {subprocess.run(['ps', '-g', str(cli.pid)], capture_output=True, text=True).stdout}")


def test_the_size_sample_skips_a_fifo_instead_of_blocking_on_it(tmp_path: Path) -> None:
    """Choosing processes or threads reads a few files' headers: a named pipe among them must not hang the pass."""
    import os
    import threading

    from PIL import Image

    from edgecls.data.decode_pool import _median_pixels

    os.mkfifo(tmp_path / "pipe.png")
    Image.new("RGB", (20, 10)).save(tmp_path / "a.png")
    found: list[int] = []
    worker = threading.Thread(target=lambda: found.append(_median_pixels([tmp_path / "pipe.png", tmp_path / "a.png"])), daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # unblock the thread's open() so the process can exit, then fail
        with open(tmp_path / "pipe.png", "wb"):
            pass
    assert found == [200]
