"""TrainConfig: every knob of `edgecls train`, its default and its help text, declared once and validated in one place.

The CLI (edgecls/cli/train.py) reads each option's default and help from these fields.
"""
from __future__ import annotations

import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgecls.errors import ConfigError
from edgecls.training.augment import AugmentConfig

OPTIMIZERS = ("adam", "sgd", "rmsprop")
SCHEDULES = ("cosine", "step", "constant")
STRATEGIES = ("auto", "default", "mirrored", "multi-worker")
CLASS_WEIGHTS = ("auto", "balanced", "none")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
BUDGET_FINE_TUNE_LR_RATIO = 0.3  # default fine-tune rate under --time-budget, a multiple of --lr (else --lr / 10)
DEFAULT_LR = 1e-3
NO_BATCH_NORM_SCRATCH_LR = 1e-4  # VGG16 from scratch at 1e-3 dies after one epoch (constant output); at 1e-4 it learns


def _knob(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass
class TrainConfig:
    data: str = field(metadata={"help": "ImageFolder tree: a folder per class, or train/ val/ test/ folders of them."})
    model: str = _knob("efficientnet_lite0", "Backbone name (see 'edgecls models').")
    img_size: int | None = _knob(None, "Square input size in pixels; default: the backbone's.")
    weights: str | None = _knob("auto", "auto (ImageNet where the backbone has it) | imagenet | none | PATH.weights.h5.")
    alpha: float | None = _knob(None, "Width multiplier (MobileNets, plain_cnn); default 1.0.")
    epochs: int = _knob(10, "Epochs of head training on the frozen backbone.")
    fine_tune_epochs: int = _knob(3, "Epochs with the backbone unfrozen, at --fine-tune-lr (0: head only).")
    unfreeze: int = _knob(-1, "Top N backbone layers to unfreeze for fine-tuning; -1: all, 0: none. BatchNorm stays frozen.")
    batch: int = _knob(32, "Images per training batch: the global batch, split across the replicas (--strategy mirrored, multi-worker).")
    optimizer: str = _knob("adam", "adam | sgd (Nesterov momentum 0.9) | rmsprop.")
    lr: float | None = _knob(None, "Learning rate of the head phase (of the whole network from scratch); default 1e-3, "
                             "1e-4 for a backbone without BatchNorm trained from scratch (vgg16).")
    fine_tune_lr: float | None = _knob(None, "Learning rate of the fine-tune phase; default: --lr / 10 (--lr * 0.3 with --time-budget).")
    schedule: str = _knob("cosine", "Learning-rate schedule over each phase: cosine | step | constant.")
    dropout: float = _knob(0.2, "Dropout before the classification layer, in [0, 1).")
    label_smoothing: float = _knob(0.1, "Label smoothing of the cross-entropy loss, in [0, 1).")
    class_weights: str = _knob("auto", "auto (balanced when the largest class is 1.5x the smallest) | balanced | none.")
    patience: int = _knob(3, "Early stopping: epochs without a better val accuracy before a phase stops (0: off); a --time-budget's "
                               "shorter fine-tune epochs count as their fraction of a pass.")
    val_split: float = _knob(0.1, "Fraction of the images held out for validation (ignored when --data has val/).")
    test_split: float = _knob(0.1, "Fraction of the images held out for the test report (ignored when --data has test/).")
    seed: int = _knob(0, "Seed of the split, initial weights, data order and augmentation: same seed, same weights.")
    augment: AugmentConfig | None = field(default_factory=AugmentConfig,
                                          metadata={"help": "Random flip/rotation/zoom/brightness/contrast in training "
                                                            "(default: on, except a --time-budget too short for a few passes "
                                                            "over the train images; --augment: always)."})
    feature_cache: bool = _knob(True, "Train the head on frozen-backbone features computed once (pretrained backbones).")
    strategy: str = _knob("auto", "auto | default | mirrored (several GPUs) | multi-worker (several machines: "
                          "MultiWorkerMirroredStrategy configured by TF_CONFIG; the same command and --out on every worker).")
    mixed_precision: str = _knob("auto", "float16 compute: auto (on with a GPU) | on | off.")
    time_budget: str | None = _knob(None, "Wall-clock budget of the whole run, e.g. 3m, 10m, 90s or 600 (seconds): the head and fine-tune "
                                    "epochs are planned to fit, from the run's own timings; the best epoch's weights are kept.")
    stream: str = _knob("auto", "Read the decoded images from a uint8 cache on disk (in the run folder) instead of memory: auto (when "
                        "they would need more than 6 GiB or half the RAM) | on | off. Same pixels, same batches.")
    out: str | None = _knob(None, "Run folder to create (default: models/MODEL-TIMESTAMP); never inside --data.")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        positive = {"epochs": self.epochs >= 1, "batch": self.batch >= 1, "lr": self.lr is None or self.lr > 0}
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
        if self.stream not in ("auto", "on", "off"):
            raise ConfigError(f"--stream '{self.stream}' is not auto/on/off", "Pick auto, on or off")
        if self.mixed_precision not in ("auto", "on", "off"):
            raise ConfigError(f"--mixed-precision '{self.mixed_precision}' is not auto/on/off", "Pick auto, on or off")
        for name in ("val_split", "test_split"):
            value = getattr(self, name)
            if not 0.0 <= value < 0.9:
                raise ConfigError(f"--{name.replace('_', '-')} {value} is outside [0, 0.9)", "Use a fraction such as 0.1")
        if self.time_budget is not None:
            parse_duration(self.time_budget)
        if not Path(self.data).exists():
            raise ConfigError(f"--data '{self.data}' does not exist", "Point --data to an ImageFolder tree (a folder per class)")
        if not Path(self.data).is_dir():  # here, before TensorFlow loads
            raise ConfigError(f"--data '{self.data}' is a file, not a folder", "Point --data to an ImageFolder tree (a folder per class)")

    @property
    def head_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR

    @property
    def tune_lr(self) -> float:
        """--fine-tune-lr, else --lr / 10; under --time-budget --lr * 0.3: its fine-tune is a short cosine that must get
        far in few steps (Fashion-MNIST, 3 minutes at 48 px: 0.865 test accuracy at 3e-4, 0.852 at 1e-4)."""
        if self.fine_tune_lr is not None:
            return self.fine_tune_lr
        return self.head_lr * (BUDGET_FINE_TUNE_LR_RATIO if self.time_budget else 0.1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["augment"] = self.augment.to_dict() if self.augment else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        augment = data.pop("augment", None)
        return cls(**data, augment=AugmentConfig(**augment) if augment else None)


def knobs(config_class: type) -> dict[str, tuple[Any, str]]:
    """{field: (default, help)} of TrainConfig or AugmentConfig: the one declaration the CLI options read."""
    found = {}
    for item in fields(config_class):
        default = item.default_factory() if item.default_factory is not MISSING else item.default
        found[item.name] = (None if default is MISSING else default, item.metadata.get("help", ""))
    return found


def parse_duration(text: str) -> float:
    """'3m', '10min', '90s', '1.5h', '600' (seconds) -> seconds; ConfigError naming the value otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*", str(text).lower())
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"--time-budget '{text}' is not a positive duration", "Use e.g. --time-budget 3m, 90s, 1.5h or 600 (seconds)")
    return float(match.group(1)) * _UNITS[match.group(2) or ""]
