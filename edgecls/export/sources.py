"""What an export reads: the Keras model and meta (a run folder or a zoo model), its calibration set, the
held-out images that JUDGE every artifact and the separate TUNING images the INT8 fallback chooses its
float layers on. No image plays two of these parts:

- run folder: calibration = a sample of the train split; judge = the test split; tune = the val split
  (a run with only one of them splits it by file, stratified, into a tuning and a judging half), topped
  up with training images to TUNING_MIN (a small val split alone makes the fallback's choices noisy);
- zoo model: the built-in photos split BY PHOTO: alternate photos calibrate (and tune, agreement only),
  the others judge; `--calib-size` caps the calibration crops.

TensorFlow is imported only when a model is loaded."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError
from edgecls.export.validate import Holdout
from edgecls.fsutil import check_outputs
from edgecls.meta import META_FILENAME, ModelMeta

MODEL_FILE = "model.keras"  # in a run folder, beside meta.json
ZOO_EXPORTS = Path("models")  # a zoo model exports to models/<name>-imagenet/export unless --out says otherwise


@dataclass
class Source:
    model: Any
    meta: ModelMeta
    run: Path | None  # None for a zoo model
    name: str


def is_run_path(model: str | Path) -> bool:
    """A path that exists is a run folder (load_source says clearly when it is not); anything else names a zoo model."""
    return Path(model).exists()


def export_root(model: str | Path, out: str | Path | None) -> Path:
    """The folder the artifacts go into: --out, RUN/export, or models/<zoo name>-imagenet/export.

    Refused (ConfigError) before any work: an empty --out, and an --out that is the run folder or holds it (a folder
    inside the run, like the default RUN/export, is fine; the data the run was trained on is checked by source_inputs)."""
    if out is None:
        return Path(model) / "export" if is_run_path(model) else ZOO_EXPORTS / f"{model}-imagenet" / "export"
    if str(out).strip() == "":
        raise ConfigError("--out is empty", "Pass a folder path, or leave --out out for RUN/export")
    root = Path(out)
    if is_run_path(model):
        _check_not_the_run(root, Path(model))
    return root


def _check_not_the_run(root: Path, run: Path) -> None:
    """An --out that holds the run's model file is the run folder or a folder above it."""
    try:
        check_outputs({"--out": root}, {"MODEL": run / MODEL_FILE})
    except ConfigError:
        relation = "is" if root.exists() and root.samefile(run) else "holds"
        raise ConfigError(f"--out '{root}' {relation} the run folder '{run}'",
                          "Leave --out out (RUN/export), or pass a folder inside the run or outside it") from None


def source_inputs(model: str | Path, calib: str | Path | None) -> dict[str, Path | None]:
    """What an export reads (for the output-vs-input check): the run's model and meta, the data it was trained on
    (its held-out and calibration images), and --calib."""
    run = Path(model) if is_run_path(model) else None
    return {
        "MODEL": run / MODEL_FILE if run is not None else None,
        "MODEL meta": run / META_FILENAME if run is not None else None,
        "MODEL's training data": _data_root(run) if run is not None else None,
        "--calib": Path(calib) if calib is not None else None,
    }


def _data_root(run: Path) -> Path | None:
    """The data folder the run was trained on: splits.json's root, else meta.json's dataset root; None when neither
    names a folder that exists (a malformed file is load_source's to report)."""
    from edgecls.run_folder import SPLITS_FILE

    for file, keys in ((SPLITS_FILE, ("root",)), (META_FILENAME, ("dataset", "root"))):
        try:
            value: Any = json.loads((run / file).read_text(encoding="utf-8"))
            for key in keys:
                value = value[key]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            continue
        if isinstance(value, str) and value and Path(value).is_dir():
            return Path(value)
    return None


def load_source(model: str | Path) -> Source:
    from edgecls.run_folder import load_run

    path = Path(model)
    if is_run_path(path):
        keras_model, meta = load_run(path)  # raises a clear ModelError for anything that isn't a run
        return Source(keras_model, meta, path, path.name)
    from edgecls.predictor import load_classifier

    classifier = load_classifier(str(model))
    return Source(classifier.model, classifier.meta, None, str(model))


def load_run_meta(model: str | Path) -> Source | None:
    """A run folder's Source without its Keras model (None for a zoo name): the checks and meta.json load_run starts with,
    in its order, without TensorFlow. Enough for the calibration set and the held-out hashes."""
    if not is_run_path(model):
        return None
    from edgecls.run_folder import require_run_folder

    run = require_run_folder(model)
    return Source(None, ModelMeta.load(run), run, run.name)


def calibration_set(source: Source, calib: Path | None, size: int, seed: int, exclude: set[str]) -> Any:
    from edgecls.quantize import calibration as cal

    if calib is not None:
        return cal.from_folder(Path(calib), source.meta, size, exclude, seed)
    if source.run is not None:
        return cal.from_run_train_split(source.run, source.meta, size, seed)
    return cal.builtin_photo_split(source.meta, size, seed)[0]


def holdout_set(source: Source, size: int, seed: int) -> Holdout:
    """The JUDGING held-out images (at most `size`, stratified by class) with Keras' probabilities."""
    if source.run is None:
        held = _builtin_split(source, seed)[1]
        images = held.images[:size]
        return _holdout(source, images, None,
                        f"{held.source} ({len(images)} crops of photos that did not calibrate, unlabelled: agreement only)")
    name, files = _run_splits(source.run, seed)[0]
    return _labelled(source, files, size, seed, f"{name} of {source.run}")


def tuning_set(source: Source, size: int, seed: int) -> Holdout | None:
    """The TUNING images the INT8 fallback chooses its float layers on: never judging images (None: the run has none)."""
    if source.run is None:
        calibration = _builtin_split(source, seed)[0]
        return _holdout(source, calibration.images, None,
                        f"{calibration.source} ({len(calibration)} crops of the calibration photos, unlabelled)")
    name, files = _run_splits(source.run, seed)[1]
    return _labelled(source, files, size, seed, f"{name} of {source.run}") if len(files.paths) else None


def _builtin_split(source: Source, seed: int) -> tuple[Any, Any]:
    from edgecls.quantize.calibration import builtin_photo_split

    return builtin_photo_split(source.meta, BUILTIN_TUNING_CROPS, seed)


BUILTIN_TUNING_CROPS = 300  # crops of the calibration photos the fallback may tune on (all of them)


TUNING_MIN = 200  # tuning images a run folder's val split is topped up to from its training split


def _run_splits(run: Path, seed: int) -> tuple[tuple[str, Files], tuple[str, Files]]:
    """((judging name, files), (tuning name, files)): test judges, val (+ training images) tunes; one split is halved."""
    from edgecls.data.sampling import stratified_sample
    from edgecls.run_folder import read_split

    test, val = _files(read_split(run, "test")), _files(read_split(run, "val"))
    if not test.paths and not val.paths:
        raise ConfigError(f"run '{run}' has no val or test images to validate exports on", "Re-train with --val-split 0.1")
    if test.paths and val.paths:
        judge, tune = ("test split", test), ("val split", val)
    else:
        split, both = ("test", test) if test.paths else ("val", val)
        half = stratified_sample(both.labels, len(both.paths) // 2, seed + 1) if len(both.paths) >= 4 else []
        rest = [i for i in range(len(both.paths)) if i not in set(half)]
        judge = (f"{split} split (the half that never tunes)", _subset(both, rest))
        tune = (f"{split} split (tuning half)", _subset(both, half))
    name, files = tune
    if len(files.paths) < TUNING_MIN:
        train = _files(read_split(run, "train"))
        present = [i for i, path in enumerate(train.paths) if path.is_file()]
        wanted = TUNING_MIN - len(files.paths)
        picked = [present[j] for j in stratified_sample(train.labels[present], wanted, seed + 2)] if present else []
        if picked:
            extra = _subset(train, picked)
            files = Files([*files.paths, *extra.paths], np.concatenate([files.labels, extra.labels]))
            name = f"{name} + {len(picked)} train images"
    return judge, (name, files)


@dataclass
class Files:
    """Image paths and their labels (the shape of run_folder.SplitFiles)."""

    paths: list[Path]
    labels: np.ndarray


def _files(split: Any) -> Files:
    return Files(list(split.paths), np.asarray(split.labels))


def _subset(files: Files, indices: list[int]) -> Files:
    return Files([files.paths[i] for i in indices], files.labels[np.asarray(indices, dtype=int)])


def _labelled(source: Source, files: Any, size: int, seed: int, where: str) -> Holdout:
    from edgecls.data.sampling import stratified_sample
    from edgecls.training.pipeline import load_images

    meta = source.meta
    chosen = stratified_sample(files.labels, min(size, len(files.paths)), seed)
    images = load_images([files.paths[i] for i in chosen], meta.input_size, meta.crop_fraction, meta.interpolation)
    return _holdout(source, images, files.labels[chosen], f"{where} ({len(chosen)} images)")


def _holdout(source: Source, images: np.ndarray, labels: np.ndarray | None, where: str) -> Holdout:
    from edgecls.training.evaluate import predict_arrays

    return Holdout(images, labels, predict_arrays(source.model, images), where)


def holdout_hashes(source: Source) -> set[str]:
    """Content hashes of the run's val and test images: a --calib folder must not calibrate on them."""
    from edgecls.quantize.calibration import sha256_file
    from edgecls.run_folder import read_split

    if source.run is None:
        return set()
    paths = [*read_split(source.run, "val").paths, *read_split(source.run, "test").paths]
    return {sha256_file(p) for p in paths if p.is_file()}
