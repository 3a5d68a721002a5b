"""`edgecls train`: parse options, call edgecls.train, render the result."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgecls.cli.common import print_table, say


def train_command(
    data: Optional[Path] = typer.Option(None, "--data", help="ImageFolder tree: a folder per class, or train/ val/ test/ of them."),
    model: str = typer.Option("efficientnet_lite0", "--model", help="Backbone name (see 'edgecls models')."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="Square input size in pixels [default: the backbone's]."),
    weights: str = typer.Option("auto", "--weights", help="auto | imagenet | none | PATH.weights.h5"),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Width multiplier (MobileNets, plain_cnn)."),
    epochs: int = typer.Option(10, "--epochs", help="Epochs of head training on the frozen backbone."),
    fine_tune_epochs: int = typer.Option(3, "--fine-tune-epochs", help="Epochs with the backbone unfrozen (0: head only)."),
    unfreeze: int = typer.Option(-1, "--unfreeze", help="Top N backbone layers to unfreeze; -1 all. BatchNorm stays frozen."),
    batch: int = typer.Option(32, "--batch"),
    optimizer: str = typer.Option("adam", "--optimizer", help="adam | sgd | rmsprop"),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate of the head phase."),
    fine_tune_lr: Optional[float] = typer.Option(None, "--fine-tune-lr", help="[default: lr / 10]"),
    schedule: str = typer.Option("cosine", "--schedule", help="cosine | step | constant"),
    dropout: float = typer.Option(0.2, "--dropout"),
    label_smoothing: float = typer.Option(0.1, "--label-smoothing"),
    class_weights: str = typer.Option("auto", "--class-weights", help="auto | balanced | none"),
    patience: int = typer.Option(3, "--patience", help="Early stopping patience on val accuracy (0: off)."),
    val_split: float = typer.Option(0.1, "--val-split"),
    test_split: float = typer.Option(0.1, "--test-split"),
    seed: int = typer.Option(0, "--seed"),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Random flip/rotation/zoom/brightness/contrast in training."),
    flip: bool = typer.Option(True, "--flip/--no-flip"),
    rotation: float = typer.Option(0.05, "--rotation", help="Max rotation, fraction of a full turn."),
    zoom: float = typer.Option(0.1, "--zoom"),
    brightness: float = typer.Option(0.1, "--brightness"),
    contrast: float = typer.Option(0.1, "--contrast"),
    feature_cache: bool = typer.Option(True, "--feature-cache/--no-feature-cache", help="Train the head on backbone features computed once."),
    strategy: str = typer.Option("auto", "--strategy", help="auto | default | mirrored (several GPUs)"),
    mixed_precision: str = typer.Option("auto", "--mixed-precision", help="auto (on with a GPU) | on | off"),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder [default: models/MODEL-TIMESTAMP]."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue an interrupted run folder."),
) -> None:
    """Fine-tune a backbone: head on the frozen backbone, then unfreeze and fine-tune."""
    import edgecls
    from edgecls.training.pipeline import AugmentConfig

    augment_config = AugmentConfig(flip, rotation, zoom, brightness, contrast) if augment else None
    options = dict(
        model=model, img_size=img_size, weights=weights, alpha=alpha, epochs=epochs, fine_tune_epochs=fine_tune_epochs,
        unfreeze=unfreeze, batch=batch, optimizer=optimizer, lr=lr, fine_tune_lr=fine_tune_lr, schedule=schedule,
        dropout=dropout, label_smoothing=label_smoothing, class_weights=class_weights, patience=patience,
        val_split=val_split, test_split=test_split, seed=seed, augment=augment_config, feature_cache=feature_cache,
        strategy=strategy, mixed_precision=mixed_precision, out=str(out) if out else None,
    )
    result = edgecls.train(data=data, resume=resume) if resume else edgecls.train(data=data, **options)
    metrics = result.metrics
    rows = [("run folder", str(result.run_dir)), ("wall time", f"{result.seconds:.1f} s"), ("evaluated on", metrics.get("split", "-"))]
    if "accuracy" in metrics:
        rows += [("accuracy", f"{metrics['accuracy']:.4f}"), ("macro F1", f"{metrics['macro']['f1']:.4f}")]
    print_table("Training finished", ["", "value"], rows)
    say(f"run folder: {result.run_dir}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
