"""The run folder that `edgecls train` writes and every later command reads."""
from __future__ import annotations

import csv
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ModelError
from edgecls.fsutil import atomic_path, write_json
from edgecls.meta import ModelMeta

MODEL_FILE = "model.keras"
CHECKPOINT_FILE = "checkpoint.npz"  # training/checkpoint.py: what --resume continues from
STATE_FILE = "state.json"
SPLITS_FILE = "splits.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"

# Zip archives (.keras models, checkpoints) are checked from their directory before anything parses them.
SMALL_MEMBERS = ("config.json", "metadata.json")  # JSON that Keras reads whole into memory
SMALL_MEMBER_LIMIT = 8 * 1024**2
ARCHIVE_SLACK = 64 * 1024**2  # uncompressed bytes allowed beyond `ratio` x the archive size
ARCHIVE_CAP = 8 * 1024**3  # uncompressed bytes, whatever the archive size


@dataclass(frozen=True)
class SplitFiles:
    """Image paths and labels of one split, as recorded in splits.json."""

    paths: list[Path]
    labels: np.ndarray


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and (path / MODEL_FILE).is_file() and (path / "meta.json").is_file()


def require_run_folder(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ModelError(f"run folder '{path}' does not exist", "Pass a folder made by 'edgecls train'")
    if not path.is_dir():
        raise ModelError(f"'{path}' is a file, not a run folder", "Pass the folder that holds model.keras and meta.json")
    if not is_run_folder(path):
        raise ModelError(f"'{path}' holds no {MODEL_FILE} and meta.json",
                         "Pass a folder made by 'edgecls train' (training may not have finished)")
    return path


def save_model(model: Any, path: Path) -> None:
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def load_model(path: str | Path) -> Any:
    """Load a .keras file written by edgecls, with its custom layers registered.

    Refused before Keras parses anything: a file that is no zip, a zip bomb (judged from the zip directory's
    sizes), members named outside the archive, and configs that ask for marshalled Python.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):  # keras says "File not found" for a truncated file
        raise ModelError(f"'{path}' is not a .keras model (truncated or corrupt: no zip archive)", "Re-train or restore the file")
    check_archive(path)
    if _holds_python_code(path):  # keras' safe_mode refuses it too, but with a message about from_config()
        raise ModelError(f"'{path}' holds serialized Python code (a Lambda layer or function), which edgecls never runs",
                         "Rebuild the model from registered Keras layers, without Lambda")
    import keras

    from edgecls.zoo import layers  # noqa: F401  (registers InputNormalization)

    try:  # safe_mode (the default) refuses Lambda layers and other serialized Python code
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # keras raises many types for corrupt or foreign files
        text = " ".join(str(exc).split())
        if len(text) > 200:
            text = text[: text.rfind(". ", 0, 200) + 1 or 200]
        raise ModelError(f"cannot load model '{path}': {type(exc).__name__}: {text}", "Re-train or restore the file") from exc


def check_archive(path: Path, ratio: int = 20) -> None:
    """Refuse a zip archive from its directory alone: members named outside it, a config.json/metadata.json over
    SMALL_MEMBER_LIMIT, or more uncompressed bytes than `ratio` x its size (+ ARCHIVE_SLACK, at most ARCHIVE_CAP)."""
    fix = "Re-train or restore the file; edgecls does not unpack archives this large"
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
        size = path.stat().st_size
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelError(f"'{path}' is not a readable zip archive ({type(exc).__name__}: {exc})", "Re-train or restore the file") from exc
    total = 0
    for member in members:
        name = member.filename
        if name.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", name) or re.match(r"^[A-Za-z]:", name):
            raise ModelError(f"'{path}' holds a member named {name!r}, outside the archive", "Re-train or restore the file")
        if name in SMALL_MEMBERS and member.file_size > SMALL_MEMBER_LIMIT:
            raise ModelError(f"'{path}': its {name} unpacks to {_size(member.file_size)} (limit {_size(SMALL_MEMBER_LIMIT)})", fix)
        total += member.file_size
    limit = min(ARCHIVE_CAP, ratio * size + ARCHIVE_SLACK)
    if total > limit:
        raise ModelError(f"'{path}' unpacks to {_size(total)} from {_size(size)} (limit {_size(limit)}): a zip bomb or a corrupt file", fix)


def _size(count: int) -> str:
    return f"{count / 1024**3:.1f} GiB" if count >= 1024**3 else f"{count / 1024**2:.1f} MiB"


def _holds_python_code(path: Path) -> bool:
    """Whether a .keras archive's config asks for marshalled Python (keras' `__lambda__` / `Lambda`)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("config.json") as handle:
            config = handle.read(SMALL_MEMBER_LIMIT + 1).decode("utf-8", "replace")  # bounded, whatever the directory says
    except (KeyError, OSError, zipfile.BadZipFile):
        return False  # no config: keras reports the broken file
    return '"__lambda__"' in config or '"class_name": "Lambda"' in config


def load_run(run: str | Path) -> tuple[Any, ModelMeta]:
    """(keras model, meta) of a run folder, checked against each other."""
    run = require_run_folder(run)
    meta = ModelMeta.load(run)
    model = load_model(run / MODEL_FILE)
    check_model_matches_meta(model, meta, str(run))
    return model, meta


def check_model_matches_meta(model: Any, meta: ModelMeta, where: str) -> None:
    in_shape = tuple(model.inputs[0].shape[1:3])
    out_classes = int(model.outputs[0].shape[-1])
    if in_shape != tuple(meta.input_size):
        raise ModelError(f"{where}: model input {in_shape} differs from meta.json input_size {tuple(meta.input_size)}",
                         "Re-create meta.json with 'edgecls train'")
    if out_classes != meta.num_classes:
        raise ModelError(f"{where}: model has {out_classes} outputs but meta.json lists {meta.num_classes} labels",
                         "Re-create meta.json with 'edgecls train'")


def write_splits(run: Path, root: Path, classes: list[str], splits: dict[str, Any]) -> None:
    """Record which files went into train/val/test, relative to the data root as the scan found them under it: a linked
    file or folder keeps its place in the tree (and is read through its link again); none is resolved one by one, which
    cost 70,000 Fashion-MNIST files ~7 s and refused a file linked from outside the tree."""
    data: dict[str, Any] = {"root": str(root.resolve()), "classes": classes}
    for name, split in splits.items():
        data[name] = [[str(Path(p).relative_to(root)), int(y)] for p, y in zip(split.paths, split.labels)]
    write_json(run / SPLITS_FILE, data)


def read_split(run: Path, name: str) -> SplitFiles:
    """One split of a run's splits.json, with absolute paths."""
    path = run / SPLITS_FILE
    if not path.is_file():
        raise ModelError(f"'{run}' has no {SPLITS_FILE}", "Pass --data DIR with labelled images")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        root = Path(data["root"])
        rows = data.get(name, [])
        return SplitFiles([root / rel for rel, _ in rows], np.asarray([int(label) for _, label in rows], dtype=np.int64))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        raise ModelError(f"'{path}' is unreadable or not an edgecls splits file ({type(exc).__name__}: {exc})",
                         "Pass --data DIR with labelled images, or re-train the run") from exc


def write_history(run: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(run / HISTORY_FILE) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def read_history(run: Path) -> list[dict[str, Any]]:
    path = run / HISTORY_FILE
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
