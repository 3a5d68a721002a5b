"""`edgecls train`: parse options, call edgecls.train, render the result.

Every option's default and help text come from TrainConfig / AugmentConfig (edgecls/training/config.py,
augment.py): declared once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from edgecls.cli.common import format_value, print_table, say
from edgecls.training.augment import AugmentConfig
from edgecls.training.config import TrainConfig, knobs

_TRAIN = knobs(TrainConfig)
_AUGMENT = knobs(AugmentConfig)
_RESUME_HELP = "Continue an interrupted run folder from its last completed epoch, with its own settings (other options are ignored)."


def _option(name: str, flag: str) -> Any:
    """A typer option whose default and help are TrainConfig's (or AugmentConfig's) field `name`."""
    default, help_text = _TRAIN[name] if name in _TRAIN else _AUGMENT[name]
    return typer.Option(default, flag, help=help_text)


def train_command(
    data: Path | None = typer.Option(None, "--data", help=_TRAIN["data"][1]),
    model: str = _option("model", "--model"),
    img_size: int | None = _option("img_size", "--img-size"),
    weights: str = _option("weights", "--weights"),
    alpha: float | None = _option("alpha", "--alpha"),
    epochs: int = _option("epochs", "--epochs"),
    fine_tune_epochs: int = _option("fine_tune_epochs", "--fine-tune-epochs"),
    unfreeze: int = _option("unfreeze", "--unfreeze"),
    batch: int = _option("batch", "--batch"),
    optimizer: str = _option("optimizer", "--optimizer"),
    lr: float | None = _option("lr", "--lr"),
    fine_tune_lr: float | None = _option("fine_tune_lr", "--fine-tune-lr"),
    schedule: str = _option("schedule", "--schedule"),
    dropout: float = _option("dropout", "--dropout"),
    label_smoothing: float = _option("label_smoothing", "--label-smoothing"),
    class_weights: str = _option("class_weights", "--class-weights"),
    patience: int = _option("patience", "--patience"),
    val_split: float = _option("val_split", "--val-split"),
    test_split: float = _option("test_split", "--test-split"),
    seed: int = _option("seed", "--seed"),
    augment: bool | None = typer.Option(None, "--augment/--no-augment", help=_TRAIN["augment"][1]),  # None: default (auto)
    flip: bool = _option("flip", "--flip/--no-flip"),
    rotation: float = _option("rotation", "--rotation"),
    zoom: float = _option("zoom", "--zoom"),
    brightness: float = _option("brightness", "--brightness"),
    contrast: float = _option("contrast", "--contrast"),
    feature_cache: bool = _option("feature_cache", "--feature-cache/--no-feature-cache"),
    strategy: str = _option("strategy", "--strategy"),
    mixed_precision: str = _option("mixed_precision", "--mixed-precision"),
    time_budget: str | None = _option("time_budget", "--time-budget"),
    stream: str = _option("stream", "--stream"),
    out: Path | None = _option("out", "--out"),
    resume: Path | None = typer.Option(None, "--resume", help=_RESUME_HELP),
) -> None:
    """Fine-tune a backbone: head on the frozen backbone, then unfreeze and fine-tune."""
    import edgecls

    if resume:
        result = edgecls.train(resume=resume)
    else:
        augment_config = AugmentConfig(flip, rotation, zoom, brightness, contrast, auto=augment is None) if augment is not False else None
        result = edgecls.train(
            data=data, model=model, img_size=img_size, weights=weights, alpha=alpha, epochs=epochs, fine_tune_epochs=fine_tune_epochs,
            unfreeze=unfreeze, batch=batch, optimizer=optimizer, lr=lr, fine_tune_lr=fine_tune_lr, schedule=schedule,
            dropout=dropout, label_smoothing=label_smoothing, class_weights=class_weights, patience=patience,
            val_split=val_split, test_split=test_split, seed=seed, augment=augment_config, feature_cache=feature_cache,
            strategy=strategy, mixed_precision=mixed_precision, time_budget=time_budget, stream=stream, out=str(out) if out else None,
        )
    metrics = result.metrics
    rows = [("run folder", str(result.run_dir)), ("wall time", f"{result.seconds:.1f} s"), ("evaluated on", metrics.get("split", "-"))]
    if "accuracy" in metrics:
        rows += [("accuracy", format_value(metrics["accuracy"])), ("macro F1", format_value(metrics["macro"]["f1"]))]
    print_table("Training finished", ["", "value"], rows)
    say(f"run folder: {result.run_dir}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
