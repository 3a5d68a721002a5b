"""--time-budget: a wall-clock budget for the whole run, planned from the run's own timings.

The head on cached features gets at most HEAD_SHARE of the budget; the fine-tune gets as many epochs as fit in what
is left (less a reserve for the final evaluation and saving), re-planned after every epoch from the measured epoch
time. Its learning rate follows warm-up + cosine over the *planned* steps, so the last planned epoch ends at the
lowest rate whatever the count turns out to be. The run keeps the best epoch's weights, as every run does.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from edgecls.training.config import parse_duration

__all__ = ["TimeBudget", "parse_duration", "plan_fine_tune", "planned_epochs"]

HEAD_SHARE = 0.2  # the most of the budget the head phase (features, flip decision, head) may take
MAX_BUDGET_FINE_TUNE_EPOCHS = 30
FORWARD_TO_TRAIN_RATIO = 4.0  # a training step costs ~4x a forward pass (measured: 1039 vs 225 images/s, Lite0 at 96 px)


@dataclass
class TimeBudget:
    seconds: float
    started: float  # time.monotonic() when the run began
    forward_images_per_second: float = 200.0  # a guess until the run measures its backbone's forward speed

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def head_deadline(self) -> float:
        """Head on cached features (features, flip decision, head): at most HEAD_SHARE of the budget from the
        start, or of what is left when setting up (decoding, building) took longer than that."""
        return max(self.started + HEAD_SHARE * self.seconds, time.monotonic() + HEAD_SHARE * self.left())

    def scratch_head_deadline(self, fine_tune_follows: bool) -> float:
        """A trainable backbone's first phase: 60% of the budget when a fine-tune follows, else all of it."""
        return self.started + (0.6 if fine_tune_follows else 1.0) * self.seconds - self.final_seconds(0)

    def fine_tune_deadline(self, test_images: int) -> float:
        return self.started + self.seconds - self.final_seconds(test_images)

    def forward_seconds(self, images: int) -> float:
        return images / self.forward_images_per_second

    def final_seconds(self, test_images: int) -> float:
        """What a run needs after its last epoch: restoring, saving and the final evaluation, with a margin."""
        return 5.0 + 1.5 * self.forward_seconds(test_images)

    def fine_tune_epoch_estimate(self, train_images: int, val_images: int) -> float:
        """Seconds of one fine-tune epoch before one is measured: training steps plus the validation pass."""
        return FORWARD_TO_TRAIN_RATIO * self.forward_seconds(train_images) + self.forward_seconds(val_images)


def planned_epochs(seconds_left: float, epoch_seconds: float, done: int = 0) -> int:
    """Epochs (counting `done`) that fit: done + floor(left / epoch time), within [done, MAX_BUDGET_FINE_TUNE_EPOCHS]."""
    if epoch_seconds <= 0:
        return MAX_BUDGET_FINE_TUNE_EPOCHS
    return max(done, min(MAX_BUDGET_FINE_TUNE_EPOCHS, done + math.floor(max(0.0, seconds_left) / epoch_seconds)))


def plan_fine_tune(budget: TimeBudget, plan: dict[str, Any], train: int, val: int, test: int) -> tuple[int, float, float]:
    """(fine-tune epochs planned, estimated seconds of one, deadline): a resumed run keeps the plan it saved."""
    deadline, estimate = budget.fine_tune_deadline(test), budget.fine_tune_epoch_estimate(train, val)
    if "fine_tune_epochs" in plan:
        return int(plan["fine_tune_epochs"]), estimate, deadline
    return planned_epochs(deadline - time.monotonic(), estimate), estimate, deadline
