"""What every format's metadata says, decided once: names, the pixel contract, the human-readable fields.

Every edgecls model takes RGB pixels 0..255 and, for models made by edgecls, normalises them with a
layer inside the model (`ModelMeta.normalization_baked_in`). Metadata that tells a client how to
prepare pixels must therefore say "mean 0, std 1" for such models: writing meta.json's mean/std there
would make the client normalise a second time. `pixel_normalization` is the one place that decides.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from edgecls.errors import ModelError
from edgecls.meta import ModelMeta

META_KEY = "edgecls_meta"  # the full ModelMeta JSON in every format (TFLite metadata entry, ONNX prop, IR rt_info)
INPUT_NAME = "pixels"  # float32 (batch, h, w, 3) RGB 0..255
OUTPUT_NAME = "probabilities"
LABELS_FILE = "labels.txt"  # TFLite associated file: one label per line, in output order
PIXEL_MIN, PIXEL_MAX = 0.0, 255.0
LAYOUT = "NHWC"
TASK = "classify"
DEFAULT_LICENSE = "not specified (set by the model's owner)"


@dataclass(frozen=True)
class ArtifactInfo:
    """The human-readable fields that every format carries beside the machine-readable contract."""

    name: str
    version: str  # the edgecls version that wrote the artifact
    description: str
    author: str
    license: str
    date: str  # ISO 8601, UTC
    source_run: str  # the run folder the artifact was exported from ("" when unknown)


def edgecls_version() -> str:
    from edgecls import __version__

    return __version__


def artifact_info(meta: ModelMeta, *, name: str | None = None, description: str | None = None, author: str = "edgecls",
                  licence: str | None = None, date: str | None = None, source_run: str | None = None) -> ArtifactInfo:
    """The ArtifactInfo of `meta`, each field overridable; defaults come from the meta itself."""
    version = edgecls_version()
    run = source_run if source_run is not None else str(meta.training.get("run", "") if isinstance(meta.training, dict) else "")
    return ArtifactInfo(
        name=name or f"{meta.architecture} {meta.precision} image classifier",
        version=version,
        description=description or describe(meta, version),
        author=author,
        license=licence or str(meta.training.get("license", DEFAULT_LICENSE) if isinstance(meta.training, dict) else DEFAULT_LICENSE),
        date=date or datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        source_run=run,
    )


def describe(meta: ModelMeta, version: str | None = None) -> str:
    """One paragraph a person reading any metadata viewer understands."""
    mean, std = pixel_normalization(meta)
    height, width = meta.input_size
    shown = ", ".join(meta.labels[:5]) + (", ..." if len(meta.labels) > 5 else "")
    inside = (f"normalisation (mean {_numbers(meta.mean)}, std {_numbers(meta.std)}) is a layer inside the model"
              if meta.normalization_baked_in else f"normalise them first: (pixel - {_numbers(mean)}) / {_numbers(std)}")
    return (f"{meta.architecture} image classifier with {meta.num_classes} classes ({shown}), "
            f"exported by edgecls {version or edgecls_version()} as {meta.format} {meta.precision}. "
            f"Input: {meta.color_order} pixels 0..255, {height}x{width}, {LAYOUT}; {inside}. "
            f"Output '{OUTPUT_NAME}': one {'probability' if meta.output == 'probabilities' else 'logit'} per class.")


def pixel_normalization(meta: ModelMeta) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) that a client applies to RGB pixels 0..255 before the model: none when it is baked in."""
    if meta.normalization_baked_in:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return tuple(float(v) for v in meta.mean), tuple(float(v) for v in meta.std)  # type: ignore[return-value]


def input_range(meta: ModelMeta) -> tuple[list[float], list[float]]:
    """(min, max) per channel of the values that enter the model after the client's normalisation."""
    mean, std = pixel_normalization(meta)
    return ([(PIXEL_MIN - m) / s for m, s in zip(mean, std)], [(PIXEL_MAX - m) / s for m, s in zip(mean, std)])


def labels_text(meta: ModelMeta) -> str:
    """labels.txt: one label per line in output order (the TFLite TENSOR_AXIS_LABELS convention)."""
    for index, label in enumerate(meta.labels):
        if "\n" in label or "\r" in label:
            raise ModelError(f"labels[{index}] {label!r} holds a line break, which a labels file cannot carry",
                             "Rename the class without line breaks and export again")
    return "".join(f"{label}\n" for label in meta.labels)


def meta_json(meta: ModelMeta) -> str:
    """The full ModelMeta as JSON, checked first: no artifact carries a meta that a reader would refuse."""
    meta.check("the meta to embed")
    return json.dumps(meta.to_dict(), ensure_ascii=False)


def meta_from_json(text: str | bytes, source: str) -> ModelMeta:
    """The ModelMeta embedded in an artifact; ModelError naming `source` when it is not readable."""
    try:
        data: Any = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"the edgecls metadata embedded in {source} is not JSON ({exc})", "Export the artifact again") from exc
    if not isinstance(data, dict):
        raise ModelError(f"the edgecls metadata embedded in {source} is not a JSON object", "Export the artifact again")
    return ModelMeta.from_dict(data, source=source)


def _numbers(values: Any) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"
