"""--time-budget: a wall-clock budget for the whole run (decoding to final evaluation), planned from the run's own timings.

The plan (all in the run's decisions["time_plan"]):
1. A reserve for what follows the last epoch (saving, the final evaluation of the test split at the backbone's measured
   forward speed, the process's exit) is set aside.
2. The head phase on cached features gets HEAD_SHARE of what is left (all of it when the rest is too short for a
   fine-tune: head_share). The backbone's forward speed is measured on a
   small probe first; the feature pass then covers only as many (random) train images as fit in that share, and the
   head's epochs stop at its end; it covers at most MAX_HEAD_IMAGES_PER_CLASS per class (the rest of the share goes to
   the fine-tune). The flip decision's second (mirrored) pass is made only when both passes fit with at least
   FLIP_MIN_IMAGES each (plan_head). Default augmentation is turned off when the fine-tune is expected to see each
   train image fewer than AUGMENT_MIN_PASSES times (augmentation_decision).
3. The fine-tune gets the rest, in "epochs" of at most one pass over the train images (plan_chunks): a budget too short
   for a few full epochs gets shorter ones (slices of the same data stream), re-planned after each from its measured
   time. The learning rate warms up, then follows a cosine over the fine-tune's *time* to the stop time, where the
   running epoch is ended and validated (budget_schedule): it ends on time at the lowest rate, whatever the speed.
   One-off costs are planned for: tracing the fine-tune's training step (TRAIN_TRACE_RATIO x the measured forward
   trace) and each evaluation's trace. Every epoch of both phases is validated on at most MAX_BUDGET_VAL_IMAGES of the
   val split (a fixed random subset: validation_subset). The best epoch's weights are kept. A resumed run gets the whole budget again
   and keeps its saved epoch length; its cosine starts again from the full rate.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecls.training.config import parse_duration

if TYPE_CHECKING:
    from edgecls.training.disk_cache import DiskImages

__all__ = ["HeadPlan", "TimeBudget", "augmentation_decision", "budget_rate", "budget_schedule", "cyclic_gc_paused", "fine_tune_plan",
           "head_plan", "parse_duration", "plan_chunks", "plan_head", "planned_epochs", "seeded_rows", "validation_subset"]

HEAD_SHARE = 0.2  # of the time left after decoding and the final reserve: the head phase (probe, features, flip, head)
HEAD_FIT_SHARE = 0.3  # of the head phase: the head's epochs on features (the rest: the backbone's feature passes)
MAX_BUDGET_FINE_TUNE_EPOCHS = 30
FORWARD_TO_TRAIN_RATIO = 6.0  # a training step costs 4.6-8.8x the probe's forward pass (Lite0: 1039 vs 225 images/s at 96 px,
# 1035 vs ~160 at 32 px, 1008 vs ~115 at 48 px): it sets the fine-tune's epoch length only (the re-plan measures)
MIN_HEAD_IMAGES_PER_CLASS = 50  # the feature pass covers at least this many train images per class, budget or not
MAX_HEAD_IMAGES_PER_CLASS = 1000  # and at most this many under a budget: a linear head has converged by then (Fashion-MNIST,
# 10m: head val 0.873 on 41,827 images, 0.879 on 12,772), and the fine-tune gets the time (docs/benchmarks.md, session 8)
FLIP_MIN_IMAGES = 1000  # the flip decision is made only on at least this many images (or all of them) per pass
TARGET_CHUNKS = 8  # fine-tune epochs the plan aims at when full epochs do not fit: re-planning points and clean stops
VAL_SHARE = 0.1  # the validation pass after each fine-tune epoch takes at most about this share of it
MIN_FINE_TUNE_TRACES = 2.0  # a fine-tune is planned only when it gets at least twice its tracing time
LAST_EPOCH_SHARE = 0.3  # a last fine-tune epoch starts when at least this share of one fits (the stop time ends it)
FINAL_FIXED_SECONDS = 3.0  # restoring the best weights, saving the model, metrics, plots: measured 2-3 s (Fashion-MNIST, 32-48 px)
EXIT_SECONDS = 0.5  # the CLI process ends with os._exit (cli/app.py): no TensorFlow teardown (which took 2.3-3.5 s, 10-22 s loaded)
FINAL_MARGIN = 1.7  # the final evaluation took 1.2x (quiet) to 1.67x (load 3-5) the planned forward time; at load 8-11 up to 2.5x
PROBE_TO_PASS = 1.3  # the probe ran 1.21-1.35x faster than the feature pass after it (36.6 vs 29.9, 68.0 vs 56.1, 41.4 vs 30.6 img/s)
AUGMENT_MIN_PASSES = 4.0  # default augmentation stays on only when the fine-tune is expected to see each train image this
# often: below, it slowed the fit more than it regularized (Fashion-MNIST 10m, ~3 passes: 0.9341 off vs 0.9231-0.9241 on)
MAX_BUDGET_VAL_IMAGES = 2000  # a budgeted run validates each epoch on at most this many val images: on all 6,000 of
# Fashion-MNIST's, validation took 6 of each 34 s epoch (10m, session 9); 2,000 estimate accuracy to about +-0.6 points
TRAIN_TRACE_RATIO = 8.0  # tracing the fine-tune's training step takes ~8x tracing the forward pass (measured: 55 vs 7.1 s, CPU)


@dataclass
class TimeBudget:
    seconds: float
    started: float  # time.monotonic() when the run began
    forward_images_per_second: float = 200.0  # a guess until the run measures its backbone's forward speed
    train_images_per_second: float | None = None  # measured training speed; None: forward speed / FORWARD_TO_TRAIN_RATIO
    trace_seconds: float = 2.0  # tracing a forward pass (a guess until the probe measures it); every new function pays it

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def at(self, moment: float | None = None) -> float:
        """Seconds since the run began at `moment` (time.monotonic(); now when None), rounded for the plan."""
        return round((time.monotonic() if moment is None else moment) - self.started, 1)

    def head_share(self, test_images: int) -> float:
        """The head phase's share of what is left once the final reserve is set aside: HEAD_SHARE, or all of it when the
        rest would not pay for the fine-tune's tracing MIN_FINE_TUNE_TRACES times over (then no fine-tune epoch runs)."""
        available = max(0.0, self.left() - self.final_seconds(test_images))
        return HEAD_SHARE if (1 - HEAD_SHARE) * available >= MIN_FINE_TUNE_TRACES * self.fine_tune_trace_seconds() else 1.0

    def head_deadline(self, test_images: int) -> float:
        """The head phase on cached features ends here (head_share)."""
        return time.monotonic() + self.head_share(test_images) * max(0.0, self.left() - self.final_seconds(test_images))

    def scratch_head_deadline(self, fine_tune_follows: bool) -> float:
        """A trainable backbone's first phase: 60% of the budget when a fine-tune follows, else all of it."""
        return self.started + (0.6 if fine_tune_follows else 1.0) * self.seconds - self.final_seconds(0)

    def fine_tune_deadline(self, test_images: int) -> float:
        return self.started + self.seconds - self.final_seconds(test_images)

    def forward_seconds(self, images: int) -> float:
        return images / self.forward_images_per_second

    def train_speed(self) -> float:
        return self.train_images_per_second or self.forward_images_per_second / FORWARD_TO_TRAIN_RATIO

    def final_seconds(self, test_images: int) -> float:
        """What a run needs after its last epoch: restoring, saving, the final evaluation (with a margin) and exiting."""
        return FINAL_FIXED_SECONDS + EXIT_SECONDS + self.trace_seconds + FINAL_MARGIN * self.forward_seconds(test_images)

    def fine_tune_trace_seconds(self) -> float:
        """The fine-tune's one-off cost: tracing its training step and its validation pass."""
        return (TRAIN_TRACE_RATIO + 1) * self.trace_seconds


def process_started() -> float:
    """time.monotonic() when this process started (Linux: /proc/self/stat; elsewhere now): a budget that starts here
    covers the command's whole wall clock, imports included."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            start_ticks = int(handle.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks since boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic()
    return time.monotonic() - max(0.0, age)


@contextlib.contextmanager
def cyclic_gc_paused(pause: bool) -> Iterator[None]:
    """Python's cyclic garbage collector paused (`pause`: a budgeted run, from its head phase to its end). Collecting
    TensorFlow's discarded graphs (Operation, SymbolicTensor, FuncGraph cycles left by tracing) is slow and unplanned: a
    generation-2 collection took 6.1 s for 74,284 objects and pushed 3-minute runs to 184-190 s. At the end the run's
    objects are frozen (gc.freeze) before the collector runs again: collecting them then took 28 s (a 100 s run, 48,698
    unreachable of 172,050 objects) to 40 s (10 minutes), after the run had returned, inside the command's wall clock.
    The CLI exits right after the run; a program that trains again and again in one process can free them with
    gc.unfreeze() and gc.collect() when it can afford the pause."""
    paused = pause and gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.freeze()
            gc.enable()


def seeded_rows(count: int, size: int, seed: int) -> np.ndarray:
    """`size` distinct rows of `count`, sorted, chosen by `seed`: the subsets a budget trains or validates on."""
    return np.sort(np.random.default_rng(seed).choice(count, size, replace=False))


def validation_subset(images: np.ndarray | DiskImages, labels: np.ndarray, seed: int) -> tuple[np.ndarray | DiskImages, np.ndarray]:
    """A budgeted run's validation set, for its head and its fine-tune: at most MAX_BUDGET_VAL_IMAGES of (images,
    labels), sorted rows chosen by `seed` (the same after a resume); the whole split when it is no larger. A streamed
    split's subset stays on disk."""
    from edgecls.training.disk_cache import DiskImages

    count = len(labels)
    if count <= MAX_BUDGET_VAL_IMAGES:
        return images, labels
    rows = seeded_rows(count, MAX_BUDGET_VAL_IMAGES, seed)
    return (images.view(rows) if isinstance(images, DiskImages) else images[rows]), labels[rows]


def planned_epochs(seconds_left: float, epoch_seconds: float, done: int = 0) -> int:
    """Epochs (counting `done`) that fit: done + floor(left / epoch time), within [done, MAX_BUDGET_FINE_TUNE_EPOCHS]."""
    if epoch_seconds <= 0:
        return MAX_BUDGET_FINE_TUNE_EPOCHS
    return max(done, min(MAX_BUDGET_FINE_TUNE_EPOCHS, done + math.floor(max(0.0, seconds_left) / epoch_seconds)))


@dataclass(frozen=True)
class HeadPlan:
    feature_images: int  # train images whose features the head learns from (a seeded random subset when fewer than all)
    decide_flip: bool  # whether the mirrored pass and the second head are made
    why: str  # one line for the decisions JSON


def plan_head(seconds: float, forward_images_per_second: float, train: int, val: int, classes: int, want_flip: bool) -> HeadPlan:
    """How many train images the feature pass covers in `seconds` (the head phase's share; at most MAX_HEAD_IMAGES_PER_CLASS
    per class), and whether the flip decision's mirrored pass fits: (1 - HEAD_FIT_SHARE) of the share goes to the backbone
    (val features, train features, mirrored train features), the rest to the head's epochs."""
    floor = min(train, MIN_HEAD_IMAGES_PER_CLASS * max(1, classes))
    train = min(train, MAX_HEAD_IMAGES_PER_CLASS * max(1, classes))  # what is left of the share goes to the fine-tune
    images = int((1 - HEAD_FIT_SHARE) * max(0.0, seconds) * forward_images_per_second) - val  # forward passes that fit
    if want_flip and images // 2 >= min(train, FLIP_MIN_IMAGES):
        count = min(train, images // 2)
        return HeadPlan(count, True, f"features of {count} train images and their mirror images fit in {seconds:.0f} s")
    count = min(train, max(floor, images))
    why = f"features of {count} train images fit in {seconds:.0f} s"
    if want_flip:
        why += f"; no flip decision (a mirrored pass of at least {min(train, FLIP_MIN_IMAGES)} images does not fit): flip as set"
    return HeadPlan(count, False, why)


def plan_chunks(seconds: float, train_images_per_second: float, val_seconds: float, train_images: int, batch: int) -> tuple[int, int]:
    """(fine-tune epochs, steps per epoch) for `seconds` of fine-tuning: full passes over the train images when at least
    TARGET_CHUNKS of them fit, else TARGET_CHUNKS shorter ones (but each long enough that its validation pass takes at
    most VAL_SHARE of it, and never longer than a full pass). Epochs: how many fit, 0 when not even one does."""
    full_steps = max(1, math.ceil(train_images / batch))
    step_seconds = batch / max(train_images_per_second, 1e-6)
    chunk_seconds = max(seconds / TARGET_CHUNKS, val_seconds / VAL_SHARE)
    steps = max(1, min(full_steps, math.floor((chunk_seconds - val_seconds) / step_seconds)))
    return planned_epochs(seconds, steps * step_seconds + val_seconds), steps


def patience_in_epochs(patience: int, steps: int, full_steps: int) -> int:
    """--patience counts passes over the train images: a budget's shorter epochs (`steps` of a pass's `full_steps`) count
    as their fraction of one. Counted in epochs, 3 epochs of 46 steps out of 844 stopped a 10-minute run's fine-tune
    after 0.16 of a pass, at 334 s. 0: off."""
    if patience <= 0:
        return 0
    return max(1, math.ceil(patience * full_steps / max(1, steps)))


def data_position(epochs_done: int, steps: int, full_steps: int) -> tuple[int, int]:
    """Where fine-tune epoch `epochs_done` (of `steps` steps each) starts in the stream of full data epochs (of
    `full_steps` batches each): (data epoch, batches to skip in it). Full epochs: (epochs_done, 0)."""
    return divmod(epochs_done * steps, full_steps)


def head_plan(budget: TimeBudget, plan: dict[str, Any], counts: dict[str, int], classes: int,
              want_flip: bool) -> tuple[HeadPlan, float]:
    """The head phase's plan (plan_head) and deadline once the forward speed is measured; recorded in `plan`."""
    share, deadline = budget.head_share(counts["test"]), budget.head_deadline(counts["test"])
    pass_speed = budget.forward_images_per_second / PROBE_TO_PASS  # the probe's warm, repeated batch runs faster than a pass
    head = plan_head(deadline - time.monotonic(), pass_speed, counts["train"], counts["val"], classes, want_flip)
    plan.update({
        "setup_seconds": round(budget.seconds - budget.left(), 1),  # decoding and building, before the head phase
        "process_seconds_before_budget": round(budget.started - process_started(), 1),  # imports: not counted
        "probe_forward_images_per_second": round(budget.forward_images_per_second, 1),
        "probe_trace_seconds": round(budget.trace_seconds, 1),
        "final_reserve_seconds": round(budget.final_seconds(counts["test"]), 1),
        "head_share": share, "head_seconds": round(deadline - time.monotonic(), 1), "head_deadline_at": budget.at(deadline),
        "feature_images": head.feature_images,
        "flip_decision": head.decide_flip, "head_plan": head.why,
    })
    return head, deadline


def augmentation_decision(budget: TimeBudget, counts: dict[str, int]) -> dict[str, Any] | None:
    """Once the forward speed is measured: the decision to turn default augmentation off (with why), or None to keep it.
    The fine-tune's expected passes over the train images: its share of what is left, at the estimated training speed."""
    head_end, end = budget.head_deadline(counts["test"]), budget.fine_tune_deadline(counts["test"])
    seconds = end - max(head_end, time.monotonic()) - budget.fine_tune_trace_seconds()
    passes = max(0.0, seconds) * budget.train_speed() / max(1, counts["train"])
    if passes >= AUGMENT_MIN_PASSES:
        return None
    return {"augment": False, "expected_fine_tune_passes": round(passes, 1),
            "why": f"--time-budget: the fine-tune sees each train image about {passes:.1f} times (< {AUGMENT_MIN_PASSES:g}); "
                   "augmentation would slow the fit more than it regularizes (pass --augment to keep it)"}


def fine_tune_plan(budget: TimeBudget, plan: dict[str, Any], counts: dict[str, int], batch: int) -> tuple[int, int, float]:
    """(fine-tune epochs, steps per epoch, deadline) for what is left (plan_chunks); recorded in `plan`. A resumed run
    keeps the epochs and steps it saved."""
    deadline = budget.fine_tune_deadline(counts["test"])
    speed, seconds, trace = budget.train_speed(), deadline - time.monotonic(), budget.fine_tune_trace_seconds()
    epochs, steps = plan_chunks(seconds - trace, speed, budget.forward_seconds(counts["val"]), counts["train"], batch)
    if "fine_tune_epochs" in plan and "fine_tune_steps_per_epoch" in plan:
        return int(plan["fine_tune_epochs"]), int(plan["fine_tune_steps_per_epoch"]), deadline
    plan.update(head_ended_at=budget.at(), fine_tune_deadline_at=budget.at(deadline), fine_tune_seconds=round(seconds, 1),
                fine_tune_trace_estimate=round(trace, 1),
                train_images_per_second_estimate=round(speed, 1), fine_tune_steps_per_epoch=steps,
                full_epoch_steps=math.ceil(counts["train"] / batch), validation_images=counts["val"], fine_tune_first_plan=epochs)
    return epochs, steps, deadline


def budget_rate(lr: float, step: int, warmup_steps: int, fraction: float) -> float:
    """The fine-tune's rate under a budget: linear warm-up from lr/20 over `warmup_steps`, then cosine down to lr/100 by
    the `fraction` (0..1) of the fine-tune's time spent since the warm-up ended: it reaches the lowest rate at the stop
    time however many steps fit."""
    if step < warmup_steps:
        return lr / 20 + (lr - lr / 20) * step / warmup_steps
    fraction = min(1.0, max(0.0, fraction))
    return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * fraction)))


def budget_schedule(lr: float, steps: int, warmup_steps: int, epochs: int, deadline: float, stop_at: float, plan: dict[str, Any]) -> Any:
    """callbacks.BudgetedSchedule whose cosine runs on time (budget_rate) up to `stop_at` (time.monotonic()), where the
    running epoch is ended (its validation and checkpoint still run), so a last, partial epoch uses the time a whole
    one would not fit in. Another epoch starts only when at least LAST_EPOCH_SHARE of one fits before `stop_at`.
    Epoch times exclude the first step of a fit (it traces the training function). The stop is predictive: an epoch
    ends when its next step (as long as the last one) would end past the stop time, which moves earlier when a
    validation pass takes longer than `deadline - stop_at` planned for it (a CPU that got busier since the plan).
    The plan records the fine-tune's timings (first step, validation, epoch ends and its end, before the deadline)."""
    from edgecls.training.callbacks import BudgetedSchedule

    class Schedule(BudgetedSchedule):
        traced, first_steps, decay_from = False, 0, None
        step_started, step_seconds, val_started = 0.0, 0.0, 0.0
        val_seconds = deadline - stop_at  # the plan's validation estimate, until a validation pass is timed

        def stop_time(self) -> float:
            """The running epoch ends here, so that its validation ends by the deadline: `stop_at`, or earlier when the
            last validation pass took longer than planned (a busy CPU)."""
            return min(stop_at, deadline - self.val_seconds)

        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            optimizer, now = self.model.optimizer, time.monotonic()
            self.step_started = now
            step = int(optimizer.iterations.numpy())
            if step >= self.warmup and self.decay_from is None:
                self.decay_from = now
            fraction = 0.0 if self.decay_from is None else (now - self.decay_from) / max(1e-6, stop_at - self.decay_from)
            optimizer.learning_rate.assign(budget_rate(self.lr, step, self.warmup, fraction))

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            now = time.monotonic()
            if not self.traced:  # the first step of the fit: the epoch is timed from here, one step shorter
                self.traced, self.epoch_started, self.first_steps = True, now, self.steps - 1
                self.plan["first_step_seconds"] = round(now - self.fit_started, 1)
            else:
                self.step_seconds = now - self.step_started
            if now + self.step_seconds > self.stop_time():  # the next step would end past it: stop now
                self.model.stop_training = True

        def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
            self.val_started = time.monotonic()

        def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
            self.val_seconds = time.monotonic() - self.val_started  # the first one also traced: on the safe side
            self.plan["val_seconds"] = round(self.val_seconds, 1)

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            self.fit_started = time.monotonic()

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            self.plan["fine_tune_ended_before_deadline"] = round(deadline - time.monotonic(), 1)  # < 0: late

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            now = time.monotonic()
            seconds = now - self.epoch_started
            if self.first_steps > 0:  # the traced epoch's time (less its first step), scaled to a whole epoch
                seconds, self.first_steps = seconds * self.steps / self.first_steps, 0
            left = self.stop_time() - now
            self.plan["epoch_seconds"] = round(seconds, 2)
            self.plan.setdefault("epoch_ends_before_deadline", []).append(round(deadline - now, 1))
            more = math.ceil(left / seconds) if seconds > 0 and left >= LAST_EPOCH_SHARE * seconds else 0
            self.plan["fine_tune_epochs"] = min(MAX_BUDGET_FINE_TUNE_EPOCHS, epoch + 1 + more)
            if not more:
                self.model.stop_training = True

    return Schedule(lr, steps, warmup_steps, epochs, deadline, plan)
