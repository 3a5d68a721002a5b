"""What an export reads: the Keras model and meta (a run folder or a zoo model), its calibration set and
the held-out images that validate every artifact. TensorFlow is imported only when a model is loaded."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecls.errors import ConfigError
from edgecls.export.validate import Holdout
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
    """The folder the artifacts go into: --out, RUN/export, or models/<zoo name>-imagenet/export."""
    if out is not None:
        return Path(out)
    return Path(model) / "export" if is_run_path(model) else ZOO_EXPORTS / f"{model}-imagenet" / "export"


def source_inputs(model: str | Path, calib: str | Path | None) -> dict[str, Path | None]:
    """The files an export reads (for the output-vs-input check): the run's model and meta, and --calib."""
    run = Path(model) if is_run_path(model) else None
    return {
        "MODEL": run / MODEL_FILE if run is not None else None,
        "MODEL meta": run / META_FILENAME if run is not None else None,
        "--calib": Path(calib) if calib is not None else None,
    }


def load_source(model: str | Path) -> Source:
    from edgecls.training.run_folder import load_run

    path = Path(model)
    if is_run_path(path):
        keras_model, meta = load_run(path)  # raises a clear ModelError for anything that isn't a run
        return Source(keras_model, meta, path, path.name)
    from edgecls.predictor import load_classifier

    classifier = load_classifier(str(model))
    return Source(classifier.model, classifier.meta, None, str(model))


def calibration_set(source: Source, calib: Path | None, size: int, seed: int, exclude: set[str]) -> Any:
    from edgecls.quantize import calibration as cal

    if calib is not None:
        return cal.from_folder(Path(calib), source.meta, size, exclude, seed)
    if source.run is not None:
        return cal.from_run_train_split(source.run, source.meta, size, seed)
    photos = cal.builtin_photos(source.meta)
    return cal.CalibrationSet(photos.images[0::2], photos.source, photos.files[0::2])


def holdout_set(source: Source, size: int, seed: int, calib_from_builtin: bool) -> Holdout:
    from edgecls.data.sampling import stratified_sample
    from edgecls.quantize.calibration import builtin_photos
    from edgecls.training.evaluate import predict_arrays
    from edgecls.training.pipeline import load_images
    from edgecls.training.run_folder import read_split

    meta = source.meta
    if source.run is not None:
        split_name = "test"
        files = read_split(source.run, "test")
        if not files.paths:
            split_name, files = "val", read_split(source.run, "val")
        if not files.paths:
            raise ConfigError(f"run '{source.run}' has no val or test images to validate exports on", "Re-train with --val-split 0.1")
        chosen = stratified_sample(files.labels, min(size, len(files.paths)), seed)
        images = load_images([files.paths[i] for i in chosen], meta.input_size, meta.crop_fraction, meta.interpolation)
        labels, where = files.labels[chosen], f"{split_name} split of {source.run} ({len(chosen)} images)"
    else:
        photos = builtin_photos(meta)
        images = photos.images[1::2] if calib_from_builtin else photos.images
        labels, where = None, f"built-in photos ({len(images)} crops, unlabelled: agreement only)"
    return Holdout(images, labels, predict_arrays(source.model, images), where)


def holdout_hashes(source: Source) -> set[str]:
    """Content hashes of the run's val and test images: a --calib folder must not calibrate on them."""
    from edgecls.quantize.calibration import sha256_file
    from edgecls.training.run_folder import read_split

    if source.run is None:
        return set()
    paths = [*read_split(source.run, "val").paths, *read_split(source.run, "test").paths]
    return {sha256_file(p) for p in paths if p.is_file()}
