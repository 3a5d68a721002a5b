"""The resume checkpoint: one file, written atomically at every epoch end, that holds all a run needs to go on.

checkpoint.npz (numpy's zip of .npy arrays, read with allow_pickle=False) holds every model variable (weights,
BatchNorm statistics and the dropout seed-generator state), the optimizer's variables (its iteration counter,
which drives the learning-rate schedule, and its moments), the best epoch's weights, and the progress as
JSON: phase, epochs done, history rows, best score and early-stopping state. The data order and augmentation
of each epoch are a pure function of (seed, epoch) (pipeline.make_dataset), so nothing about them needs saving.
One file, replaced in one rename, means a SIGKILL at any moment leaves either the previous epoch's checkpoint
or this one, never a mix.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ModelError
from edgecls.fsutil import atomic_path
from edgecls.run_folder import check_archive

CHECKPOINT_VERSION = 1
_FIX = "Start a new run with --out; this one cannot be resumed"


@dataclass
class EarlyStopState:
    """Early stopping within one phase: the best monitored value so far and the epochs since it improved."""

    best: float | None = None
    wait: int = 0
    stopped: bool = False


@dataclass
class Progress:
    """Where a run stands after its last completed epoch."""

    phase: str = "head"  # head | fine_tune | done
    epochs_done: int = 0  # completed epochs of `phase`
    rows: list[dict[str, Any]] = field(default_factory=list)  # history, one row per epoch of both phases
    best_score: list[float] | None = None  # (val accuracy, -val loss) of the epoch whose weights the run keeps
    top_accuracy: float | None = None  # the best val accuracy of any epoch so far (training/best_epoch.py)
    stop: EarlyStopState = field(default_factory=EarlyStopState)
    decisions: dict[str, Any] = field(default_factory=dict)  # made on the data during the run (flip: training/head.py; time plan)

    def start_phase(self, phase: str) -> None:
        self.phase, self.epochs_done, self.stop = phase, 0, EarlyStopState()


@dataclass
class Checkpoint:
    progress: Progress
    model_values: list[np.ndarray]
    optimizer_values: list[np.ndarray]  # empty between phases (the next phase starts a fresh optimizer)
    best_weights: list[np.ndarray] | None


def save_checkpoint(path: Path, progress: Progress, model: Any, optimizer: Any, best_weights: list[np.ndarray] | None) -> None:
    """Write the checkpoint atomically: `model.variables`, `optimizer.variables` (when built), the best weights."""
    text = json.dumps({"version": CHECKPOINT_VERSION, **asdict(progress)})
    arrays: dict[str, np.ndarray] = {"progress": np.frombuffer(text.encode("utf-8"), np.uint8)}
    arrays.update({f"model_{i:05d}": np.asarray(v) for i, v in enumerate(model.variables)})
    if optimizer is not None and optimizer.built:
        arrays.update({f"optimizer_{i:05d}": np.asarray(v) for i, v in enumerate(optimizer.variables)})
    for i, weight in enumerate(best_weights or []):
        arrays[f"best_{i:05d}"] = weight
    with atomic_path(path, suffix=".npz") as tmp, tmp.open("wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by save_checkpoint, or ModelError saying why it cannot be used."""
    check_archive(path, ratio=2)  # numpy stores arrays uncompressed: any real compression means a crafted file
    try:
        with np.load(path, allow_pickle=False) as archive:
            groups: dict[str, list[np.ndarray]] = {"model": [], "optimizer": [], "best": []}
            for name in sorted(archive.files):
                if name == "progress":
                    continue
                group = name.split("_", 1)[0]
                if group not in groups:
                    raise ValueError(f"unexpected member {name!r}")
                _check_npy_header(archive.zip, name + ".npy")
                groups[group].append(archive[name])
            data = json.loads(bytes(archive["progress"]).decode("utf-8"))
        if data.pop("version", None) != CHECKPOINT_VERSION:
            raise ValueError("another checkpoint version")
        progress = Progress(**{**data, "stop": EarlyStopState(**data["stop"])})
        if progress.phase not in ("head", "fine_tune") or not isinstance(progress.epochs_done, int) or progress.epochs_done < 0:
            raise ValueError(f"phase {progress.phase!r}, epochs_done {progress.epochs_done!r}")
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, MemoryError) as exc:
        raise ModelError(f"checkpoint '{path}' is unreadable or not an edgecls checkpoint ({type(exc).__name__}: {exc})", _FIX) from exc
    return Checkpoint(progress, groups["model"], groups["optimizer"], groups["best"] or None)


def checkpoint_to_resume(path: Path, resume_state: dict[str, Any] | None) -> Checkpoint | None:
    """The checkpoint a run resumes from: None for a new run, or one interrupted before its first epoch ended."""
    if resume_state is None:
        return None
    if path.is_file():
        return load_checkpoint(path)
    if resume_state["phase"] == "head" and resume_state["epochs_done"] == 0:
        return None  # stopped before the first checkpoint: start again from the beginning
    raise ModelError(f"'{path.parent}' has no {path.name} to resume from (made by an older edgecls?)",
                     "Start a new run with --out; this one cannot be resumed")


def _check_npy_header(archive: zipfile.ZipFile, member: str) -> None:
    """Refuse an array whose header claims more data than its member holds (numpy would allocate it first)."""
    with archive.open(member) as handle:
        version = np.lib.format.read_magic(handle)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"member {member!r} has .npy format {version}")
        shape, _, dtype = readers[version](handle)
    if dtype.hasobject or int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > archive.getinfo(member).file_size:
        raise ValueError(f"member {member!r} claims {shape} {dtype}, more than it holds")


def assign_values(variables: list[Any], values: list[np.ndarray], what: str, path: Path) -> None:
    """Restore variables saved in a checkpoint; a count or shape mismatch means another model or edgecls version."""
    if len(variables) != len(values) or any(tuple(v.shape) != a.shape for v, a in zip(variables, values)):
        raise ModelError(f"checkpoint '{path}' does not match the model being resumed ({what}: {len(values)} saved arrays, "
                         f"{len(variables)} variables)", _FIX)
    for variable, value in zip(variables, values):
        variable.assign(value)


def progress_json(progress: Progress) -> dict[str, Any]:
    """The progress as state.json shows it (a copy for people and for old readers; the checkpoint is what counts)."""
    return {"phase": progress.phase, "epochs_done": progress.epochs_done, "rows": progress.rows, "decisions": progress.decisions}


__all__ = ["Checkpoint", "EarlyStopState", "Progress", "assign_values", "load_checkpoint", "progress_json", "save_checkpoint"]
