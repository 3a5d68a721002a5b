"""Keras callbacks: a rich progress bar, per-epoch history rows, and checkpoints for --resume."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from edgecls.fsutil import write_json
from edgecls.training.run_folder import LAST_FILE, STATE_FILE, save_model


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


class ResumeCheckpoint(keras.callbacks.Callback):
    """After each epoch: last.keras (the whole classifier) and state.json, both written atomically."""

    def __init__(self, run: Path, full_model: Any, phase: str, state: dict[str, Any]) -> None:
        super().__init__()
        self.run, self.full_model, self.phase, self.state = run, full_model, phase, state

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        save_model(self.full_model, self.run / LAST_FILE)
        self.state.update({"phase": self.phase, "epochs_done": epoch + 1})
        write_json(self.run / STATE_FILE, self.state)
