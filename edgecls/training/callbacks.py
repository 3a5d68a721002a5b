"""Keras callbacks: a rich progress bar, history rows, best-epoch tracking, early stopping and the resume checkpoint.

Every piece of state these keep lives in a checkpoint.Progress, so a resumed run continues it exactly.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import keras
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from edgecls.training.best_epoch import EpochScore, keeps_candidate
from edgecls.training.budget import planned_epochs
from edgecls.training.checkpoint import Progress as RunProgress


class RichProgress(keras.callbacks.Callback):
    """One bar per phase, counting batches across epochs, with the latest metrics."""

    def __init__(self, phase: str, epochs: int, steps: int) -> None:
        super().__init__()
        self.phase, self.total = phase, max(1, epochs * steps)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"),
            transient=False,
        )
        self.task: Any = None
        self.epoch = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.progress.start()
        self.task = self.progress.add_task(self.phase, total=self.total, metrics="")

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        text = f"epoch {self.epoch} loss {loss:.3f}" if isinstance(loss, float) and math.isfinite(loss) else f"epoch {self.epoch}"
        self.progress.update(self.task, advance=1, metrics=text)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        parts = [f"{key} {value:.3f}" for key, value in logs.items() if key in ("loss", "accuracy", "val_loss", "val_accuracy")]
        self.progress.console.print(f"  {self.phase} epoch {epoch + 1}: " + ", ".join(parts))

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.progress.update(self.task, completed=self.total)
        self.progress.stop()


class HistoryRows(keras.callbacks.Callback):
    """Appends {phase, epoch, metrics...} rows to a shared list."""

    def __init__(self, phase: str, rows: list[dict[str, Any]], epoch_offset: int = 0) -> None:
        super().__init__()
        self.phase, self.rows, self.offset = phase, rows, epoch_offset

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        row = {"phase": self.phase, "epoch": self.offset + epoch + 1}
        row.update({key: float(value) for key, value in (logs or {}).items() if isinstance(value, (int, float))})
        self.rows.append(row)


class BestWeights:
    """Keeps the weights of the best epoch across both phases (training/best_epoch.py: the lowest val loss among the
    epochs within one standard error of the best val accuracy on `val_images` images)."""

    def __init__(self, model: Any, progress: RunProgress, val_images: int = 0) -> None:
        self.model, self.progress, self.val_images = model, progress, val_images
        self.weights: list[Any] | None = None

    def callback(self) -> keras.callbacks.Callback:
        return _TrackBest(self)

    def update(self, logs: dict[str, Any]) -> None:
        has_val = "val_accuracy" in logs
        candidate = EpochScore(float(logs.get("val_accuracy", logs.get("accuracy", 0.0))),
                               float(logs.get("val_loss", logs.get("loss", 0.0))))
        progress, best = self.progress, self.progress.best_score
        kept = EpochScore(best[0], -best[1]) if best is not None else None
        keep, progress.top_accuracy = keeps_candidate(candidate, kept, progress.top_accuracy, self.val_images if has_val else 0)
        if keep:
            progress.best_score, self.weights = [candidate.accuracy, -candidate.loss], self.model.get_weights()

    def restore(self) -> None:
        if self.weights is not None:
            self.model.set_weights(self.weights)


class _TrackBest(keras.callbacks.Callback):
    def __init__(self, tracker: BestWeights) -> None:
        super().__init__()
        self.tracker = tracker

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.tracker.update(logs or {})


class EarlyStop(keras.callbacks.Callback):
    """keras' EarlyStopping (mode max, min_delta 0), with its state in Progress.stop so that it survives a resume."""

    def __init__(self, monitor: str, patience: int, progress: RunProgress) -> None:
        super().__init__()
        self.monitor, self.patience, self.progress = monitor, patience, progress

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        stop = self.progress.stop
        if stop.best is None or float(value) > stop.best:
            stop.best, stop.wait = float(value), 0
            return
        stop.wait += 1
        if stop.wait >= self.patience:
            stop.stopped = True
            self.model.stop_training = True


class EpochCheckpoint(keras.callbacks.Callback):
    """After each epoch (and after every other callback has updated its state): save(epochs done in this phase)."""

    def __init__(self, save: Callable[[int], None]) -> None:
        super().__init__()
        self.save = save

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.save(epoch + 1)


class BudgetedSchedule(keras.callbacks.Callback):
    """Warm-up + cosine learning rate over the planned fine-tune steps, re-planned from each epoch's measured time;
    stops training when the next epoch would not end before `deadline` (time.monotonic())."""

    def __init__(self, lr: float, steps: int, warmup_steps: int, epochs: int, deadline: float, plan: dict[str, Any]) -> None:
        super().__init__()
        self.lr, self.steps, self.warmup = lr, steps, warmup_steps
        self.deadline, self.plan = deadline, plan  # plan: the run's decisions["time_plan"] (saved in checkpoints)
        self.plan["fine_tune_epochs"] = max(1, epochs)
        self.epoch_started = 0.0

    def rate(self, step: int) -> float:
        total = max(1, self.plan["fine_tune_epochs"] * self.steps)
        if step < self.warmup:
            return self.lr / 20 + (self.lr - self.lr / 20) * step / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, total - self.warmup))
        return self.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        optimizer = self.model.optimizer
        optimizer.learning_rate.assign(self.rate(int(optimizer.iterations.numpy())))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch_started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        seconds = time.monotonic() - self.epoch_started
        self.plan["epoch_seconds"] = round(seconds, 2)  # the latest epoch: the first one also paid for tracing
        done = epoch + 1
        self.plan["fine_tune_epochs"] = max(1, planned_epochs(self.deadline - time.monotonic(), seconds, done))
        if done >= self.plan["fine_tune_epochs"]:
            self.model.stop_training = True


class Deadline(keras.callbacks.Callback):
    """Stops training when another epoch, as long as the last one, would not end before `deadline` (time.monotonic()),
    and ends the running epoch at the deadline (its validation and checkpoint still run): one epoch of a large dataset
    trained from scratch can take hours."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline, self.epoch_started = deadline, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch_started = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if time.monotonic() > self.deadline:
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if time.monotonic() + (time.monotonic() - self.epoch_started) > self.deadline:
            self.model.stop_training = True
