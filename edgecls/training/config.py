"""TrainConfig: every knob of `edgecls train`, validated in one place."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecls.errors import ConfigError
from edgecls.training.pipeline import AugmentConfig

OPTIMIZERS = ("adam", "sgd", "rmsprop")
SCHEDULES = ("cosine", "step", "constant")
STRATEGIES = ("auto", "default", "mirrored")
CLASS_WEIGHTS = ("auto", "balanced", "none")


@dataclass
class TrainConfig:
    data: str
    model: str = "efficientnet_lite0"
    img_size: int | None = None  # None: the backbone's default size
    weights: str | None = "auto"  # auto | imagenet | none | PATH.weights.h5
    alpha: float | None = None
    epochs: int = 10  # head epochs on the frozen backbone
    fine_tune_epochs: int = 3  # then the unfrozen backbone at fine_tune_lr
    unfreeze: int = -1  # top N backbone layers to unfreeze; -1: all (BatchNorm stays frozen)
    batch: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    fine_tune_lr: float | None = None  # None: lr / 10
    schedule: str = "cosine"
    dropout: float = 0.2
    label_smoothing: float = 0.1
    class_weights: str = "auto"  # auto: balanced when the largest class is 1.5x the smallest
    patience: int = 3
    val_split: float = 0.1
    test_split: float = 0.1
    seed: int = 0
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    feature_cache: bool = True
    strategy: str = "auto"
    mixed_precision: str = "auto"  # auto: on with a GPU | on | off
    out: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        positive = {"epochs": self.epochs >= 1, "batch": self.batch >= 1, "lr": self.lr > 0}
        for name, ok in positive.items():
            if not ok:
                raise ConfigError(f"--{name} {getattr(self, name)} must be positive", f"Pass a --{name} above 0")
        non_negative = {"fine-tune-epochs": self.fine_tune_epochs, "patience": self.patience, "seed": self.seed}
        for name, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"--{name} {value} is negative", f"Pass --{name} 0 or more")
        if self.img_size is not None and self.img_size < 1:
            raise ConfigError(f"--img-size {self.img_size} must be positive", "Use e.g. --img-size 224")
        if self.fine_tune_lr is not None and self.fine_tune_lr <= 0:
            raise ConfigError(f"--fine-tune-lr {self.fine_tune_lr} must be positive", "Use e.g. --fine-tune-lr 1e-4")
        if self.unfreeze < -1:
            raise ConfigError(f"--unfreeze {self.unfreeze} is invalid", "Use -1 (all), 0 (none) or a layer count")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"--label-smoothing {self.label_smoothing} is outside [0, 1)", "Use e.g. 0.1")
        if self.alpha is not None and self.alpha <= 0:
            raise ConfigError(f"--alpha {self.alpha} must be positive", "Use e.g. --alpha 0.5")
        choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "strategy": STRATEGIES, "class-weights": CLASS_WEIGHTS}
        for name, allowed in choices.items():
            value = getattr(self, name.replace("-", "_"))
            if value not in allowed:
                raise ConfigError(f"--{name} '{value}' is not one of {', '.join(allowed)}", f"Pick one of {', '.join(allowed)}")
        if self.mixed_precision not in ("auto", "on", "off"):
            raise ConfigError(f"--mixed-precision '{self.mixed_precision}' is not auto/on/off", "Pick auto, on or off")
        for name in ("val_split", "test_split"):
            value = getattr(self, name)
            if not 0.0 <= value < 0.9:
                raise ConfigError(f"--{name.replace('_', '-')} {value} is outside [0, 0.9)", "Use a fraction such as 0.1")
        if not Path(self.data).exists():
            raise ConfigError(f"--data '{self.data}' does not exist", "Point --data to an ImageFolder tree (a folder per class)")
        if not Path(self.data).is_dir():  # here, before TensorFlow loads
            raise ConfigError(f"--data '{self.data}' is a file, not a folder", "Point --data to an ImageFolder tree (a folder per class)")

    @property
    def head_lr(self) -> float:
        return self.lr

    @property
    def tune_lr(self) -> float:
        return self.fine_tune_lr if self.fine_tune_lr is not None else self.lr / 10

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["augment"] = self.augment.to_dict() if self.augment else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        augment = data.pop("augment", None)
        return cls(**data, augment=AugmentConfig(**augment) if augment else None)
