"""ModelMeta: the input contract and labels that travel with every model and artifact (numpy-free)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgecls.errors import ModelError
from edgecls.fsutil import write_json

META_FILENAME = "meta.json"
META_VERSION = 1


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of a tensor: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int
    dtype: str  # "int8" | "uint8"


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
    crop_fraction: float = 1.0  # centre square crop of this fraction of the short side, then resize
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

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "meta.json") -> "ModelMeta":
        known = {f.name for f in fields(cls)}
        missing = [name for name in ("architecture", "input_size", "labels") if name not in data]
        if missing:
            raise ModelError(f"{source} lacks {', '.join(missing)}", "Re-create it with 'edgecls train' or 'edgecls export'")
        version = data.get("meta_version", META_VERSION)
        if not isinstance(version, int) or version > META_VERSION:
            raise ModelError(
                f"{source} has meta_version {version!r}, newer than this edgecls understands ({META_VERSION})",
                "Upgrade edgecls: pip install -U edgecls",
            )
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            height, width = (int(v) for v in kwargs["input_size"])
            kwargs["input_size"] = (height, width)
            if not isinstance(kwargs["labels"], list):  # a string would become one label per character
                raise TypeError(f"labels must be a list, not {type(kwargs['labels']).__name__}")
            kwargs["labels"] = [str(label) for label in kwargs["labels"]]
            for key in ("mean", "std"):
                if key in kwargs:
                    kwargs[key] = tuple(float(v) for v in kwargs[key])
            for key in ("input_quantization", "output_quantization"):
                if kwargs.get(key) is not None:
                    kwargs[key] = Quantization(**kwargs[key])
            meta = cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{source} is malformed: {exc}", "Re-create it with 'edgecls train' or 'edgecls export'") from exc
        if height < 1 or width < 1 or not meta.labels:
            raise ModelError(f"{source} has input_size {meta.input_size} and {len(meta.labels)} labels", "Re-create it")
        return meta

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.is_dir():
            path = path / META_FILENAME
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "ModelMeta":
        path = Path(path)
        if path.is_dir():
            path = path / META_FILENAME
        if not path.is_file():
            raise ModelError(f"no {META_FILENAME} at '{path}'", "Point to a run folder made by 'edgecls train' or an exported artifact")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read '{path}': {exc}", "Re-create it with 'edgecls train' or 'edgecls export'") from exc
        if not isinstance(data, dict):
            raise ModelError(f"'{path}' does not hold a JSON object", "Re-create it")
        return cls.from_dict(data, source=str(path))
