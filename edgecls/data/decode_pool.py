"""Decoding many image files once, in parallel: the pass that verifies a tree (data.folder.split_tree), and for training
decodes, resizes and hashes every file as well.

A small image (e.g. a 28x28 PNG) costs ~0.4 ms of Python and Pillow overhead that holds the GIL, so threads do not help
(on 2 cores they are slower than one thread): many small files are decoded in worker processes, a few serially. A
larger one (224 px and up) spends its time in Pillow's and OpenCV's C code, which releases the GIL, so threads already
use every core and stay (processes measured no faster: bench/decode_pool.py, docs/benchmarks.md). Either way each
file's result is the one `decode_file` gives in this process: the same pixels, sha256 and reason, in the same order.

The workers are spawned, never forked (TensorFlow may be loaded in the parent), import only numpy, Pillow, OpenCV and
edgecls.preprocess, ignore Ctrl-C (the parent stops them), and are terminated when the parent fails or is interrupted.
"""
from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import stat
import sys
import types
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import DataError, ImageError
from edgecls.preprocess import load_for_model_and_digest, load_image

# Measured on 2 cores (docs/benchmarks.md): starting the workers takes ~0.5 s (their imports); a small file costs ~0.42 ms
# serially, ~0.65 ms in threads and ~0.25 ms in 2 processes once started, so processes pay from ~2500 files.
MIN_FILES_FOR_PROCESSES = 4000
SMALL_IMAGE_PIXELS = 128 * 128  # median of a sample at most this: small images (processes or serial), else threads
MAX_WORKERS = 16  # each worker holds its own numpy/Pillow/OpenCV (~60 MB)
FILES_PER_TASK = 32  # files sent to a worker at a time (fewer round trips than one per file)
TASKS_IN_FLIGHT_PER_WORKER = 4  # bounded: at most this many tasks per worker submitted and not collected yet
THREAD_CHUNK = 4096  # files per batch of thread-pool tasks (a tree of millions of files never holds a task per file)

Result = tuple[str | None, np.ndarray | None, str | None]  # (reason the file is unusable, pixels, sha256)


@dataclass(frozen=True)
class DecodeSpec:
    """What a worker does with each file: `size` None only checks that it decodes (load_image, nothing sent back);
    else decode, resize to `size` (load_for_model_and_digest) and hash it."""

    size: tuple[int, int] | None = None
    crop_fraction: float = 1.0
    interpolation: str = "bicubic"


def _short_reason(exc: ImageError, path: Path) -> str:
    message = exc.message
    prefix = f"'{path}' "
    if message.startswith(prefix):
        message = message[len(prefix):].removeprefix("is ")
    return message.replace(str(path), path.name)


def check_image(path: Path, decode: Callable[[Path], object] = load_image) -> str | None:
    """None when the file decodes (with the decoder training uses, or `decode`, which raises ImageError the same way), else
    the reason it does not."""
    try:
        info = path.stat()
        if stat.S_ISREG(info.st_mode) and info.st_size == 0:
            return "empty file (0 bytes)"
    except OSError as exc:
        return f"cannot read: {exc.strerror}"
    try:
        decode(path)
    except ImageError as exc:
        return _short_reason(exc, path)
    return None


def decode_file(path: Path, spec: DecodeSpec) -> Result:
    """One file's result (reason, pixels, sha256): the same in a worker process, a thread or serially."""
    decoded: list[Any] = [None, None]

    def decode(file: Path) -> None:
        if spec.size is None:
            load_image(file)
        else:
            decoded[:] = load_for_model_and_digest(file, spec.size, spec.crop_fraction, spec.interpolation)

    reason = check_image(path, decode)
    return (reason, None, None) if reason is not None else (None, decoded[0], decoded[1])


def _decode_task(paths: list[Path], spec: DecodeSpec) -> list[Result]:
    """A worker's task: several files."""
    return [decode_file(path, spec) for path in paths]


def _init_worker() -> None:
    """Ctrl-C reaches the whole process group: the parent decides (it was blocked from the worker's start, see
    _sigint_blocked; ignoring a blocked pending signal discards it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _loaded_modules(prefixes: tuple[str, ...]) -> list[str]:
    """The modules a worker has imported that start with one of `prefixes` (tests: no TensorFlow there)."""
    return sorted(name for name in sys.modules if name.startswith(prefixes))


def available_cpus() -> int:
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    return max(1, min(affinity, os.cpu_count() or 1))


def _median_pixels(paths: Sequence[Path], sample: int = 9) -> int:
    """Median width x height of up to `sample` files spread over `paths`, from their headers (unreadable ones ignored)."""
    from PIL import Image

    step = max(1, len(paths) // sample)
    sizes = []
    for path in paths[::step][:sample]:
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # opening a FIFO would block forever
                continue
            with Image.open(path) as image:
                sizes.append(image.width * image.height)
        except Exception:  # noqa: BLE001 - only a hint; the decoding pass reports unreadable files
            continue
    return int(np.median(sizes)) if sizes else 0


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Spawned workers re-run the parent's __main__ script unless it is hidden while they start: a user's script without
    a main guard would run again in every worker (and the workers need nothing from it)."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def reasons_of(reason_of: Callable[[Path], str | None] | FileDecoder, paths: Sequence[Path]) -> list[str | None]:
    """Each file's reason it is unusable (None: usable), in order: from a FileDecoder, or `reason_of(path)` in threads."""
    if isinstance(reason_of, FileDecoder):
        return reason_of.reasons(paths)
    return list(_in_threads(reason_of, paths, min(8, available_cpus())))


def _in_threads(function: Callable[[Path], Any], paths: Sequence[Path], workers: int) -> Generator[Any, None, None]:
    """function(path) for each path, in order, in threads, THREAD_CHUNK files submitted at a time; on Ctrl-C or an error
    the files not started yet are cancelled (only the ones being decoded are waited for)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            for start in range(0, len(paths), THREAD_CHUNK):
                yield from pool.map(function, paths[start : start + THREAD_CHUNK])
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread while it starts the workers, which inherit the mask: a Ctrl-C while a worker starts
    up does not print that worker's traceback. In the parent it is only delayed (delivered when unblocked), not lost."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class FileDecoder:
    """Decodes files for split_tree (`reasons`), in worker processes when that pays, else in threads; `on_decoded(path,
    pixels, sha256)` receives each usable file's result in this process (with spec.size), `on_skipped(path, reason)` each
    unusable file's reason, and `advance()` runs once per file. Use it as a context manager: the workers live until
    close(), across the splits of a tree."""

    def __init__(self, spec: DecodeSpec, on_decoded: Callable[[Path, np.ndarray, str], None] | None = None,
                 advance: Callable[[], None] | None = None, mode: str = "auto", workers: int | None = None,
                 files_per_task: int = FILES_PER_TASK, on_skipped: Callable[[Path, str], None] | None = None) -> None:
        if mode not in ("auto", "processes", "threads", "serial"):
            raise ValueError(f"mode {mode!r}")
        self.spec, self.on_decoded, self.on_skipped, self.advance, self.mode = spec, on_decoded, on_skipped, advance, mode
        self.workers = max(1, min(workers or MAX_WORKERS, available_cpus()))
        self.files_per_task = max(1, files_per_task)
        self.used: str | None = None  # "processes", "threads" or "serial" once decided
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> FileDecoder:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self.close(failed=kind is not None)

    def plan(self, total: int, sample: Sequence[Path]) -> str:
        """Choose processes or threads for `total` files like those in `sample` (once; mode 'auto')."""
        if self.used is None:
            if self.mode != "auto":
                self.used = self.mode
            elif _median_pixels(sample) > SMALL_IMAGE_PIXELS:
                self.used = "threads"
            else:
                self.used = "processes" if self.workers > 1 and total >= MIN_FILES_FOR_PROCESSES else "serial"
        return self.used

    def reasons(self, paths: Sequence[Path]) -> list[str | None]:
        """Each file's reason it is unusable (None: usable, its result already given to on_decoded), in order."""
        if not paths:
            return []
        if self.plan(len(paths), paths) == "processes" and self._executor is None:
            try:
                self._start()
            except (OSError, BrokenProcessPool):  # no worker could start (a sandbox, no interpreter to spawn): threads, as before
                self.close(failed=True)
                self.used = "threads"
        if self.used in ("threads", "serial"):
            return self._threaded(paths)
        try:
            return self._in_processes(paths)
        except BaseException:
            self.close(failed=True)
            raise

    def _take(self, path: Path, result: Result) -> str | None:
        reason, pixels, digest = result
        try:
            if reason is None and self.on_decoded is not None and pixels is not None and digest is not None:
                self.on_decoded(path, pixels, digest)
            elif reason is not None and self.on_skipped is not None:
                self.on_skipped(path, reason)
        finally:
            if self.advance is not None:
                self.advance()
        return reason

    def _threaded(self, paths: Sequence[Path]) -> list[str | None]:
        decode = functools.partial(decode_file, spec=self.spec)
        if self.used == "serial":
            return [self._take(path, decode(path)) for path in paths]
        results = _in_threads(decode, paths, min(8, self.workers))
        try:
            return [self._take(path, result) for path, result in zip(paths, results)]
        finally:
            results.close()  # an exception in _take: the files not started yet are cancelled

    def _start(self) -> ProcessPoolExecutor:
        if self._executor is None:
            with _main_module_hidden(), _sigint_blocked():  # every worker starts here (one per task while fewer are idle)
                executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
                self._executor = executor
                started = [executor.submit(int) for _ in range(self.workers)]
            for task in started:
                task.result()
        return self._executor

    def _in_processes(self, paths: Sequence[Path]) -> list[str | None]:
        executor = self._start()
        tasks = (list(paths[start : start + self.files_per_task]) for start in range(0, len(paths), self.files_per_task))
        pending: deque[tuple[list[Path], Future[list[Result]]]] = deque()
        reasons: list[str | None] = []
        try:
            for task in tasks:
                pending.append((task, executor.submit(_decode_task, task, self.spec)))
                if len(pending) >= self.workers * TASKS_IN_FLIGHT_PER_WORKER:
                    reasons += self._collect(*pending.popleft())
            while pending:
                reasons += self._collect(*pending.popleft())
        except BrokenProcessPool as exc:
            near = paths[min(len(reasons), len(paths) - 1)]
            raise DataError(f"a worker process decoding images stopped unexpectedly (killed, e.g. out of memory) near '{near}'",
                            "Run the command again; if it happens again, free memory or check that file") from exc
        return reasons

    def _collect(self, task: list[Path], future: Future[list[Result]]) -> list[str | None]:
        return [self._take(path, result) for path, result in zip(task, future.result())]

    def close(self, failed: bool = False) -> None:
        """Stop the workers: after a failure or an interrupt, at once (terminated; no process is left behind)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if not failed:
            executor.shutdown(wait=True)
            return
        workers = list((getattr(executor, "_processes", None) or {}).values())  # read before shutdown forgets them
        executor.shutdown(wait=False, cancel_futures=True)
        for process in workers:
            process.terminate()
        for process in workers:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)

    def worker_pids(self) -> list[int]:
        """The running workers' process ids (tests)."""
        return list(getattr(self._executor, "_processes", None) or {})
