"""ModelMeta: the input contract and labels that travel with every model and artifact (numpy-free).

Read from JSON it is checked for meaning, not only shape (`check_meta`): a std of 0, a two-value mean or a
crop of 0 would otherwise give NaN inputs and a confident label. Each problem is one line naming the field,
the value and the fix. The label count against the model's outputs is checked where the model is loaded
(runtime backends, run folders), since only the model knows it.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgecls.errors import ModelError
from edgecls.fsutil import write_json

META_FILENAME = "meta.json"
META_VERSION = 1
MIN_INPUT_SIZE = 8  # pixels per side; height and width may differ
MAX_INPUT_SIZE = 4096
COLOR_ORDERS = ("RGB", "BGR")  # the channel order the model takes its pixels in
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "area")
OUTPUT_KINDS = ("probabilities", "logits")
QUANTIZED_DTYPES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}
_RECREATE = "Re-create it with 'edgecls train' or 'edgecls export'"


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of a tensor: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int
    dtype: str  # "int8" | "uint8" (| "int16" for 16x8 models)


@dataclass
class ModelMeta:
    """Everything a runtime needs to feed a model and read its output."""

    architecture: str
    input_size: tuple[int, int]  # (height, width)
    labels: list[str]
    color_order: str = "RGB"
    # Pixels enter the model as float 0..255; mean/std normalisation is a layer inside the model.
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    normalization_baked_in: bool = True
    crop_fraction: float = 1.0  # centre crop of this fraction of the target-aspect box, then resize
    interpolation: str = "bicubic"
    output: str = "probabilities"  # "probabilities" | "logits"
    format: str = "keras"
    precision: str = "fp32"
    input_quantization: Quantization | None = None
    output_quantization: Quantization | None = None
    training: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    meta_version: int = META_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        return data

    def check(self, source: str = "meta.json") -> ModelMeta:
        """Raise ModelError naming the first field whose value makes no sense; returns self."""
        check_meta(self, source)
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "meta.json") -> ModelMeta:
        known = {f.name for f in fields(cls)}
        missing = [name for name in ("architecture", "input_size", "labels") if name not in data]
        if missing:
            raise ModelError(f"{source} lacks {', '.join(missing)}", _RECREATE)
        version = data.get("meta_version", META_VERSION)
        if not isinstance(version, int) or version > META_VERSION:
            raise ModelError(
                f"{source} has meta_version {version!r}, newer than this edgecls understands ({META_VERSION})",
                "Upgrade edgecls: pip install -U edgecls",
            )
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            height, width = (_whole(v) for v in kwargs["input_size"])
            kwargs["input_size"] = (height, width)
            if not isinstance(kwargs["labels"], list):  # a string would become one label per character
                raise TypeError(f"labels must be a list, not {type(kwargs['labels']).__name__}")
            for key in ("input_quantization", "output_quantization"):
                if kwargs.get(key) is not None:
                    kwargs[key] = Quantization(**kwargs[key])
            meta = cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{source} is malformed: {exc}", _RECREATE) from exc
        meta.labels = _labels(meta.labels, source)
        meta.mean = _three_numbers(meta.mean, "mean", source)
        meta.std = _three_numbers(meta.std, "std", source)
        return meta.check(source)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.is_dir():
            path = path / META_FILENAME
        self.check(str(path))  # never write a meta.json that a reader would refuse
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ModelMeta:
        path = Path(path)
        if path.is_dir():
            path = path / META_FILENAME
        if not path.is_file():
            raise ModelError(f"no {META_FILENAME} at '{path}'", "Point to a run folder made by 'edgecls train' or an exported artifact")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read '{path}': {exc}", _RECREATE) from exc
        if not isinstance(data, dict):
            raise ModelError(f"'{path}' does not hold a JSON object", "Re-create it")
        return cls.from_dict(data, source=str(path))


# --- meaning checks ----------------------------------------------------------------------------------

def _bad(source: str, name: str, value: Any, problem: str, fix: str) -> ModelError:
    return ModelError(f"{source}: {name} {_show(value)} {problem}", f"Fix it in {source} ({fix}), or re-export the model")


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if isinstance(value, (list, tuple, dict, str)) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _whole(value: Any) -> int:
    """An input size side: an int, or a float with no fraction (JSON writers sometimes emit 224.0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"input_size must be two whole numbers [height, width], got {_show(value)} in it")
    return int(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _three_numbers(value: Any, name: str, source: str) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_is_number(v) for v in value):
        raise _bad(source, name, value, "must be 3 numbers, one per channel (R, G, B)", f"e.g. \"{name}\": [127.0, 127.0, 127.0]")
    return (float(value[0]), float(value[1]), float(value[2]))


def _labels(value: list[Any], source: str) -> list[str]:
    labels = []
    for index, label in enumerate(value):
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise _bad(source, f"labels[{index}]", label, "is not a string", "one class name per output, in output order")
        labels.append(str(label))
    return labels


def check_meta(meta: ModelMeta, source: str = "meta.json") -> None:
    """The meaning checks (see the module docstring); the first problem found is raised."""
    if not isinstance(meta.architecture, str) or not meta.architecture.strip():
        raise _bad(source, "architecture", meta.architecture, "is empty", "the backbone name, e.g. \"efficientnet_lite0\"")
    size = tuple(meta.input_size)
    if len(size) != 2 or not all(isinstance(s, int) and MIN_INPUT_SIZE <= s <= MAX_INPUT_SIZE for s in size):
        raise _bad(source, "input_size", list(size), f"must be [height, width], each {MIN_INPUT_SIZE}..{MAX_INPUT_SIZE} pixels",
                   "the size the model was trained at, e.g. [224, 224]")
    _check_labels(meta.labels, source)
    _check_channels(meta, source)
    crop = meta.crop_fraction
    if not _is_number(crop) or not math.isfinite(crop) or not 0 < crop <= 1:
        raise _bad(source, "crop_fraction", crop, "must be a number in (0, 1]", "1.0 keeps the whole centred box, 0.875 is ImageNet's")
    for name, value, allowed in (("color_order", meta.color_order, COLOR_ORDERS), ("interpolation", meta.interpolation, INTERPOLATIONS),
                                 ("output", meta.output, OUTPUT_KINDS)):
        if value not in allowed:
            raise _bad(source, name, value, f"is not one of {', '.join(allowed)}", f"use one of: {', '.join(allowed)}")
    if not isinstance(meta.normalization_baked_in, bool):
        raise _bad(source, "normalization_baked_in", meta.normalization_baked_in, "must be true or false", "true for edgecls models")
    for name in ("input_quantization", "output_quantization"):
        _check_quantization(getattr(meta, name), name, source)


# Control characters (Unicode category Cc: C0, DEL, C1) and the bidi embeddings, overrides and isolates that make a
# name read as another. Other format characters (e.g. the zero-width non-joiner of Persian words) are text.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def has_control_characters(label: str) -> bool:
    """True when a class name holds one of CONTROL_CHARACTERS (a newline or an escape sequence would reach terminals,
    overlays and other programs' metadata)."""
    return CONTROL_CHARACTERS.search(label) is not None


def _check_labels(labels: Any, source: str) -> None:
    if not isinstance(labels, list) or not labels:
        raise _bad(source, "labels", labels, "must be a non-empty list of class names", "one name per model output, in output order")
    seen: dict[str, int] = {}
    for index, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise _bad(source, f"labels[{index}]", label, "is empty", "give every class a name")
        if has_control_characters(label):
            raise _bad(source, f"labels[{index}]", label, "holds a control character", "use printable class names")
        if label in seen:
            raise _bad(source, f"labels[{index}]", label, f"repeats labels[{seen[label]}]", "every class needs its own name")
        seen[label] = index


def _check_channels(meta: ModelMeta, source: str) -> None:
    for name in ("mean", "std"):
        values = getattr(meta, name)
        if not isinstance(values, (list, tuple)) or len(values) != 3 or not all(_is_number(v) and math.isfinite(v) for v in values):
            raise _bad(source, name, values, "must be 3 finite numbers, one per channel (R, G, B)", f'e.g. "{name}": [127.0, 127.0, 127.0]')
    if not all(v > 0 for v in meta.std):
        raise _bad(source, "std", meta.std, "must be above 0 for each channel (it divides the pixels)", 'e.g. "std": [128.0, 128.0, 128.0]')


def _check_quantization(quant: Quantization | None, name: str, source: str) -> None:
    if quant is None:
        return
    if quant.dtype not in QUANTIZED_DTYPES:
        raise _bad(source, f"{name}.dtype", quant.dtype, f"is not one of {', '.join(QUANTIZED_DTYPES)}", "the dtype of the model's tensor")
    if not _is_number(quant.scale) or not math.isfinite(quant.scale) or quant.scale <= 0:
        raise _bad(source, f"{name}.scale", quant.scale, "must be a finite number above 0", "the scale of the model's tensor")
    low, high = QUANTIZED_DTYPES[quant.dtype]
    if isinstance(quant.zero_point, bool) or not isinstance(quant.zero_point, int) or not low <= quant.zero_point <= high:
        raise _bad(source, f"{name}.zero_point", quant.zero_point, f"must be a whole number in {low}..{high} for {quant.dtype}",
                   "the zero point of the model's tensor")
