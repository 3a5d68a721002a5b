"""The head phase on cached backbone features: trained to convergence (bounded, early-stopped on validation), and the
horizontal-flip decision made on the data (a head with and a head without flipped features, judged on validation).

Head epochs on cached features cost seconds, so they do not come out of the fine-tune budget: --epochs is only the
floor when there is no validation split to stop on. Under --time-budget the feature pass may cover a subset of the train
images and the head's epochs stop at a deadline (training/budget.py).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FEATURE_BATCH = 64  # images per forward pass of the feature cache (64 ran faster than 256 on a 2-core CPU)
PROBE_BATCHES = 2  # forward passes timed (after tracing) to measure the backbone's speed
HEAD_MAX_EPOCHS = 60  # bound of the early-stopped head on cached features
FLIP_TOLERANCE = 0.01  # flipped features may cost this much validation accuracy (noise) before flipping counts as harmful


@dataclass
class HeadFit:
    """One head trained on features: the kept epoch's validation score, its weights then, and one history row per epoch."""

    val_accuracy: float
    val_loss: float
    weights: list[np.ndarray]
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class HeadResult:
    fit: HeadFit
    flip: bool | None  # the decision (None: not decided here: flip off in the settings, or no validation split)
    decision: dict[str, Any] = field(default_factory=dict)


def fit_head(head: Any, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray] | None, *, num_classes: int,
             batch: int, lr: float, optimizer: str, loss: Any, seed: int, epochs: int, patience: int,
             class_weight: dict[int, float] | None = None, deadline: float | None = None,
             on_epoch: Callable[[], None] | None = None) -> HeadFit:
    """Train `head` (features -> probabilities) from its current weights; return the kept epoch's weights and score
    (training/best_epoch.py).

    With a validation split: up to max(epochs, HEAD_MAX_EPOCHS) epochs at a constant rate, the rate cut by 3 after
    two epochs without a lower validation loss, stopped after `patience` such epochs. Without: exactly `epochs`.
    `deadline` (time.monotonic()) stops it early, keeping the best weights so far; `on_epoch()` follows every epoch.
    """
    import time

    import keras

    from edgecls.training.best_epoch import EpochScore, keeps_candidate
    from edgecls.training.optimizers import make_optimizer
    from edgecls.training.pipeline import make_dataset

    x, y = train
    steps = max(1, -(-len(x) // batch))
    has_val = val is not None and len(val[0]) > 0
    max_epochs = max(epochs, HEAD_MAX_EPOCHS) if has_val and patience else epochs
    start = head.get_weights()
    head.compile(optimizer=make_optimizer(optimizer, lr, "constant", max_epochs * steps), loss=loss, metrics=["accuracy"])
    train_ds = make_dataset(x, y, num_classes, batch, True, None, seed, (0, max_epochs))
    val_ds = make_dataset(val[0], val[1], num_classes, max(batch, 256), False, None, seed) if has_val and val is not None else None
    best = HeadFit(-1.0, float("inf"), start)
    rows: list[dict[str, Any]] = []

    val_images = len(val[0]) if has_val and val is not None else 0  # the noise of val accuracy: training/best_epoch.py

    class Track(keras.callbacks.Callback):
        wait, top = 0, None

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            nonlocal best
            logs = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            rows.append({"phase": "head", "epoch": epoch + 1, **logs})
            acc = logs.get("val_accuracy", logs.get("accuracy", 0.0))
            loss_value = logs.get("val_loss", logs.get("loss", 0.0))
            kept = EpochScore(best.val_accuracy, best.val_loss) if best.val_accuracy >= 0 else None
            keep, self.top = keeps_candidate(EpochScore(acc, loss_value), kept, self.top, val_images)
            if keep:
                best = HeadFit(acc, loss_value, head.get_weights())
            if has_val and patience:
                self.wait = 0 if loss_value < min((r.get("val_loss", np.inf) for r in rows[:-1]), default=np.inf) else self.wait + 1
                if self.wait and self.wait % 2 == 0:  # plateau: a lower rate
                    head.optimizer.learning_rate.assign(float(head.optimizer.learning_rate) / 3)
                if self.wait >= patience:
                    head.stop_training = True
            if deadline is not None and time.monotonic() > deadline:
                head.stop_training = True
            if on_epoch is not None:
                on_epoch()

    head.fit(train_ds, steps_per_epoch=steps, epochs=max_epochs, validation_data=val_ds, class_weight=class_weight,
             callbacks=[Track()], verbose=0, shuffle=False)
    best.rows = rows
    head.set_weights(best.weights)
    return best


def head_with_flip_decision(head: Any, features: np.ndarray, flipped: np.ndarray | None, labels: np.ndarray,
                            val: tuple[np.ndarray, np.ndarray] | None, **fit_options: Any) -> HeadResult:
    """Train the head without flipped features and, when `flipped` is given, again with them (each image's features
    and its mirror image's, as flip augmentation would show them); keep flipping only when it costs at most
    FLIP_TOLERANCE of validation accuracy. The head left in `head` is the one the decision picked."""
    import time

    initial = head.get_weights()
    deciding = flipped is not None and val is not None and len(val[0]) > 0
    deadline = fit_options.get("deadline")
    if deciding and deadline is not None:  # under a deadline the plain head gets a third, the flipped one (twice the data) the rest
        fit_options = {**fit_options, "deadline": time.monotonic() + (deadline - time.monotonic()) / 3}
    plain = fit_head(head, (features, labels), val, **fit_options)
    if flipped is None or val is None or not deciding:
        return HeadResult(plain, None)
    fit_options = {**fit_options, "deadline": deadline}
    head.set_weights(initial)
    both = fit_head(head, (np.concatenate([features, flipped]), np.concatenate([labels, labels])), val, **fit_options)
    keep_flip = both.val_accuracy >= plain.val_accuracy - FLIP_TOLERANCE
    chosen = both if keep_flip else plain
    head.set_weights(chosen.weights)
    decision = {"flip": keep_flip, "val_accuracy_with_flip": round(both.val_accuracy, 4),
                "val_accuracy_without_flip": round(plain.val_accuracy, 4), "val_images": int(len(val[0]))}
    return HeadResult(chosen, keep_flip, decision)


def feature_extractor(features_model: Any) -> Any:
    """The frozen backbone's features as one tf.function, traced once for any batch size."""
    import tensorflow as tf

    height, width = features_model.inputs[0].shape[1:3]
    return tf.function(lambda x: features_model(x, training=False), input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32)])


def forward_speed(extract: Any, images: Any) -> tuple[float, float]:
    """(images per second, seconds of tracing) of `extract` on the first FEATURE_BATCH `images`: traced first (timed),
    called once more, then PROBE_BATCHES timed."""
    import time

    probe = np.asarray(images[:FEATURE_BATCH], np.float32)
    started = time.perf_counter()
    extract(probe)
    trace = time.perf_counter() - started
    extract(probe)  # the first call after tracing is slow too (allocation): not timed
    started = time.perf_counter()
    for _ in range(PROBE_BATCHES):
        extract(probe)
    return PROBE_BATCHES * len(probe) / max(time.perf_counter() - started, 1e-6), trace


def backbone_features(extract: Any, images: Any, name: str, console: Any, mirror: bool = False,
                      chosen: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(features of `images` or of `images[chosen]` (mirrored with `mirror`), images per second): batches of
    FEATURE_BATCH, with a progress bar. `images`: a uint8 array or a DiskImages."""
    import time

    from rich.progress import Progress

    count = len(images) if chosen is None else len(chosen)
    chunks = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"backbone features ({name})", total=count)
        started = time.perf_counter()
        for start in range(0, count, FEATURE_BATCH):
            chunk = images[start : start + FEATURE_BATCH] if chosen is None else images[chosen[start : start + FEATURE_BATCH]]
            chunks.append(np.asarray(extract(chunk[:, :, ::-1 if mirror else 1].astype(np.float32)), dtype=np.float32))
            progress.advance(task, len(chunk))
        seconds = time.perf_counter() - started
    if not chunks:
        return np.zeros((0, int(extract.get_concrete_function().output_shapes[-1])), np.float32), 0.0
    return np.concatenate(chunks), count / max(seconds, 1e-6)
