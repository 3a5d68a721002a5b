"""--time-budget parsing and planning, the head's flip decision on features, and the augmentation ramp (unit, seconds)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecls.errors import ConfigError
from edgecls.training.budget import (
    EXIT_SECONDS,
    FINAL_FIXED_SECONDS,
    FINAL_MARGIN,
    FORWARD_TO_TRAIN_RATIO,
    TimeBudget,
    data_position,
    fine_tune_plan,
    plan_chunks,
    plan_head,
    planned_epochs,
)
from edgecls.training.config import parse_duration
from tests.conftest import assert_clean_error, run_cli


@pytest.mark.parametrize(("text", "seconds"), [("3m", 180), ("10min", 600), ("90s", 90), ("1.5h", 5400), ("600", 600), (" 2M ", 120)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "0", "-3m", "3 days", ""])
def test_bad_durations_name_the_value(text: str) -> None:
    with pytest.raises(ConfigError, match="--time-budget"):
        parse_duration(text)


def test_bad_time_budget_on_the_command_line_is_one_clean_line(fmnist_tree: Path, tmp_path: Path) -> None:
    result = run_cli("train", "--data", fmnist_tree, "--time-budget", "soon", "--out", tmp_path / "run")
    assert_clean_error(result, "--time-budget 'soon'", "3m")
    assert not (tmp_path / "run").exists()


def test_planned_epochs_fit_what_is_left() -> None:
    assert planned_epochs(100.0, 30.0) == 3
    assert planned_epochs(20.0, 30.0) == 0  # not even one: the run keeps its head
    assert planned_epochs(20.0, 30.0, done=2) == 2  # never fewer than already done
    assert planned_epochs(1e6, 1.0) == 30  # bounded
    budget = TimeBudget(180.0, started=0.0, forward_images_per_second=1000.0, trace_seconds=2.0)
    assert budget.train_speed() == pytest.approx(1000.0 / FORWARD_TO_TRAIN_RATIO)  # until measured
    reserve = FINAL_FIXED_SECONDS + EXIT_SECONDS + 2 + FINAL_MARGIN * 10  # fixed, exit, a trace, the test pass with a margin
    assert budget.final_seconds(10000) == pytest.approx(reserve)
    assert budget.fine_tune_deadline(10000) == pytest.approx(180 - reserve)
    assert budget.fine_tune_trace_seconds() == pytest.approx(9 * 2.0)  # the training step's trace (8x) and validation's



def test_the_head_takes_all_the_time_when_a_fine_tune_would_not_pay_for_its_tracing() -> None:
    import time

    budget = TimeBudget(180.0, started=time.monotonic(), forward_images_per_second=1000.0, trace_seconds=2.0)  # traces: 18 s
    assert budget.head_share(10000) == 0.2  # ~150 s left after the reserve: the fine-tune's 120 s pay for it
    budget.started -= 120  # ~30 s left: 24 s would not pay for 2 x 18 s of tracing
    assert budget.head_share(10000) == 1.0


def test_head_plan_covers_all_images_and_decides_flip_when_they_fit() -> None:
    plan = plan_head(60.0, 1000.0, train=18000, val=2000, classes=20, want_flip=True)
    assert plan.feature_images == 18000 and plan.decide_flip  # 0.7 * 60 s * 1000/s = 42,000 passes >= 2000 + 2 x 18000


def test_head_plan_leaves_a_large_dataset_to_the_fine_tune() -> None:
    plan = plan_head(120.0, 1000.0, train=54000, val=6000, classes=10, want_flip=True)
    assert plan.feature_images == 10000 and plan.decide_flip  # 1000 per class, though 84,000 passes fit
    assert plan_head(120.0, 1000.0, train=54000, val=6000, classes=10, want_flip=False).feature_images == 10000


def test_head_plan_takes_a_subset_when_the_share_is_short() -> None:
    plan = plan_head(20.0, 1000.0, train=18000, val=2000, classes=10, want_flip=True)
    assert plan.decide_flip and plan.feature_images == (14000 - 2000) // 2  # both passes on 6000 images
    plan = plan_head(4.0, 1000.0, train=18000, val=2000, classes=10, want_flip=True)
    assert not plan.decide_flip and plan.feature_images == 2800 - 2000  # a mirrored pass of 1000 does not fit
    assert "no flip decision" in plan.why
    plan = plan_head(0.5, 1000.0, train=18000, val=2000, classes=10, want_flip=False)
    assert plan.feature_images == 500 and not plan.decide_flip and "flip" not in plan.why  # the floor: 50 per class
    assert plan_head(0.5, 1000.0, train=120, val=20, classes=10, want_flip=True).feature_images == 120  # never more than there are


def test_fine_tune_takes_full_epochs_when_enough_fit_else_shorter_ones() -> None:
    # 18,000 images, batch 32 (563 steps), 100 images/s: a full epoch is ~180 s (+ 4 s of validation)
    assert plan_chunks(3000.0, 100.0, 4.0, 18000, 32) == (16, 563)
    epochs, steps = plan_chunks(200.0, 100.0, 4.0, 18000, 32)  # one epoch's worth: TARGET_CHUNKS shorter ones (>= 40 s each)
    assert steps == 112 and epochs == 200 // (steps * 0.32 + 4)
    epochs, steps = plan_chunks(200.0, 100.0, 0.5, 18000, 32)  # cheap validation: 8 of 25 s
    assert steps == 76 and epochs == 8
    assert plan_chunks(3.0, 100.0, 4.0, 18000, 32)[0] == 0  # not even one: the head is kept
    assert plan_chunks(1e5, 100.0, 4.0, 100, 32) == (30, 4)  # bounded, never more than a full pass


@pytest.mark.parametrize(("done", "steps", "full", "expected"), [(0, 140, 563, (0, 0)), (3, 563, 563, (3, 0)), (5, 100, 250, (2, 0)),
                                                                    (3, 100, 250, (1, 50))])
def test_shorter_epochs_continue_the_stream_of_data_epochs(done: int, steps: int, full: int, expected: tuple[int, int]) -> None:
    assert data_position(done, steps, full) == expected


def test_fine_tune_plan_is_recorded_and_a_resumed_run_keeps_it() -> None:
    import time

    budget = TimeBudget(600.0, started=time.monotonic(), forward_images_per_second=400.0, trace_seconds=1.0)
    plan: dict = {}
    epochs, steps, _ = fine_tune_plan(budget, plan, {"train": 18000, "val": 2000, "test": 10000}, 32)
    assert plan["fine_tune_steps_per_epoch"] == steps and plan["fine_tune_first_plan"] == epochs
    assert plan["full_epoch_steps"] == 563 and plan["train_images_per_second_estimate"] == round(400.0 / FORWARD_TO_TRAIN_RATIO, 1)
    assert 1 <= epochs and 1 <= steps <= 563
    saved = {"fine_tune_epochs": 7, "fine_tune_steps_per_epoch": 99}
    assert fine_tune_plan(budget, saved, {"train": 18000, "val": 2000, "test": 10000}, 32)[:2] == (7, 99)


def _tiny_model_and_data() -> tuple[Any, np.ndarray, np.ndarray]:
    """A seeded two-class Keras model and 64 samples for the budget schedule's fit tests."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    return model, np.zeros((64, 4), np.float32), np.eye(2)[np.arange(64) % 2]


def test_budget_schedule_ends_an_epoch_at_the_stop_time() -> None:

    from edgecls.training.budget import budget_schedule

    model, x, y = _tiny_model_and_data()
    plan: dict = {}
    schedule = budget_schedule(1e-3, steps=8, warmup_steps=2, epochs=4, deadline=0.0, stop_at=0.0, plan=plan)  # both long past
    history = model.fit(x, y, batch_size=8, epochs=4, steps_per_epoch=8, callbacks=[schedule], verbose=0, validation_data=(x, y))
    assert len(history.history["loss"]) == 1 and "val_loss" in history.history  # stopped in epoch 1, still validated
    assert int(model.optimizer.iterations.numpy()) == 1
    assert plan["fine_tune_epochs"] == 1


def test_budgeted_schedule_warms_up_then_decays_over_the_plan() -> None:
    from edgecls.training.callbacks import BudgetedSchedule

    plan: dict = {}
    schedule = BudgetedSchedule(1e-3, steps=10, warmup_steps=5, epochs=4, deadline=0.0, plan=plan)
    assert plan["fine_tune_epochs"] == 4
    assert schedule.rate(0) == pytest.approx(5e-5)
    assert schedule.rate(5) == pytest.approx(1e-3)
    assert schedule.rate(40) == pytest.approx(1e-5)  # the planned end: the lowest rate
    plan["fine_tune_epochs"] = 2  # re-planned shorter: the decay follows
    assert schedule.rate(20) == pytest.approx(1e-5)


def _clusters(mirrored: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train features, their mirror images' features and labels of 4 classes, then validation features and labels.
    `mirrored`: a mirrored class 0 looks like class 1 and 2 like 3 (left and right arrows)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (4, 16)).astype(np.float32) * 3
    labels = np.arange(200) % 4
    features = centres[labels] + rng.normal(0, 0.5, (200, 16)).astype(np.float32)
    source = centres[np.array([1, 0, 3, 2])[labels]] if mirrored else centres[labels]
    flipped = source + rng.normal(0, 0.5, (200, 16)).astype(np.float32)
    return features[:160], flipped[:160], labels[:160], features[160:], labels[160:]


@pytest.mark.parametrize("mirrored", [False, True])
def test_flip_decision_on_features(mirrored: bool) -> None:
    import keras

    from edgecls.training.head import head_with_flip_decision

    keras.utils.set_random_seed(0)
    features, flipped, labels, val_x, val_y = _clusters(mirrored)
    head = keras.Sequential([keras.layers.Dense(4, activation="softmax")])
    head.build((None, 16))
    result = head_with_flip_decision(head, features, flipped, labels, (val_x, val_y), num_classes=4, batch=32, lr=1e-2,
                                     optimizer="adam", loss=keras.losses.CategoricalCrossentropy(), seed=0, epochs=3, patience=3)
    assert result.flip is (not mirrored), result.decision
    assert result.fit.val_accuracy > 0.9  # the head left in place is the better one
    assert 1 <= len(result.fit.rows) <= 60


def test_augmentation_ramps_up_over_the_first_fine_tune_epoch() -> None:
    from edgecls.training.augment import AugmentConfig
    from edgecls.training.pipeline import make_dataset

    images = np.full((8, 8, 8, 3), 100, np.uint8)
    augment = AugmentConfig(flip=False, rotation=0.0, zoom=0.0, brightness=0.5, contrast=0.0)
    batches = list(make_dataset(images, np.zeros(8, np.int64), 2, 4, True, augment, 0, (5, 7), ramp_from=5))
    first, second, later = (np.abs(b[0].numpy() - 100).max() for b in (batches[0], batches[1], batches[2]))
    assert first == 0.0  # the ramp epoch opens without augmentation
    assert 0 < second and later > 0  # and grows to full strength


def test_budget_rate_warms_up_then_decays_over_the_fine_tunes_time() -> None:
    from edgecls.training.budget import budget_rate

    assert budget_rate(1e-3, 0, 10, 0.0) == pytest.approx(5e-5)
    assert budget_rate(1e-3, 10, 10, 0.0) == pytest.approx(1e-3)
    assert budget_rate(1e-3, 500, 10, 0.5) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert budget_rate(1e-3, 500, 10, 1.0) == budget_rate(1e-3, 900, 10, 3.0) == pytest.approx(1e-5)  # the stop time: lowest


def test_budget_schedule_goes_on_while_time_is_left() -> None:
    import time

    from edgecls.training.budget import budget_schedule

    model, x, y = _tiny_model_and_data()
    plan: dict = {}
    far = time.monotonic() + 3600
    schedule = budget_schedule(1e-3, steps=4, warmup_steps=2, epochs=2, deadline=far, stop_at=far, plan=plan)
    history = model.fit(x, y, batch_size=8, epochs=3, steps_per_epoch=4, callbacks=[schedule], verbose=0)
    assert len(history.history["loss"]) == 3 and int(model.optimizer.iterations.numpy()) == 12
    assert plan["fine_tune_epochs"] > 3  # re-planned from the epochs' times: more fit before the stop time
    assert float(model.optimizer.learning_rate.numpy()) > 9e-4  # hardly decayed: most of the time is left



def test_a_budget_fine_tunes_at_a_higher_default_rate_unless_one_is_given(tmp_path: Path) -> None:
    from edgecls.training.config import TrainConfig

    assert TrainConfig(data=str(tmp_path), lr=1e-3).tune_lr == pytest.approx(1e-4)
    assert TrainConfig(data=str(tmp_path), lr=1e-3, time_budget="3m").tune_lr == pytest.approx(3e-4)
    assert TrainConfig(data=str(tmp_path), lr=1e-3, time_budget="3m", fine_tune_lr=5e-5).tune_lr == pytest.approx(5e-5)


def test_a_deadline_ends_the_running_epoch_of_a_scratch_phase() -> None:
    """An epoch of a large dataset from scratch can take hours: the deadline ends it after the batch that passes it."""
    import time

    from edgecls.training.callbacks import Deadline

    model, x, y = _tiny_model_and_data()
    passed = time.monotonic() - 1
    history = model.fit(x, y, batch_size=8, epochs=3, callbacks=[Deadline(passed)], verbose=0)
    assert len(history.history["loss"]) == 1 and int(model.optimizer.iterations.numpy()) == 1  # one batch, one epoch
    model, x, y = _tiny_model_and_data()
    history = model.fit(x, y, batch_size=8, epochs=3, callbacks=[Deadline(time.monotonic() + 3600)], verbose=0)
    assert len(history.history["loss"]) == 3 and int(model.optimizer.iterations.numpy()) == 24


def test_the_head_plan_counts_on_a_feature_pass_slower_than_the_probe() -> None:
    """The probe times one warm batch repeated; the feature pass after it ran 1.21-1.35x slower: the share it plans
    covers as many images as fit at the probe's speed / PROBE_TO_PASS, and the plan records when the phase must end."""
    import time

    from edgecls.training.budget import PROBE_TO_PASS, head_plan, process_started

    budget = TimeBudget(180.0, started=time.monotonic() - 20, forward_images_per_second=1000.0, trace_seconds=2.0)
    plan: dict = {}
    counts = {"train": 100000, "val": 2000, "test": 2000}
    head, deadline = head_plan(budget, plan, counts, 100, want_flip=False)  # 100 classes: under the 1000-per-class cap
    seconds = plan["head_seconds"]
    assert head.feature_images == pytest.approx(0.7 * seconds * 1000 / PROBE_TO_PASS - 2000, abs=0.7 * 0.1 * 1000)
    assert plan["head_deadline_at"] == pytest.approx(plan["setup_seconds"] + seconds, abs=0.2)
    # the imports before the run's clock started, recorded (here negative: the test starts the clock 20 s back, maybe before the process)
    assert plan["process_seconds_before_budget"] == pytest.approx(budget.started - process_started(), abs=0.2)


def _schedule_at(stop_in: float, deadline_in: float, plan: dict) -> Any:
    """A budget schedule on the tiny model, its first (tracing) step behind it: arithmetic on its stop time."""
    import time

    from edgecls.training.budget import budget_schedule

    model, _, _ = _tiny_model_and_data()
    now = time.monotonic()
    schedule = budget_schedule(1e-3, steps=8, warmup_steps=2, epochs=4, deadline=now + deadline_in, stop_at=now + stop_in, plan=plan)
    schedule.set_model(model)
    schedule.on_train_begin()
    schedule.on_train_batch_begin(0)
    schedule.on_train_batch_end(0)  # the traced first step: not a step time
    return schedule


def test_the_fine_tune_stops_before_a_step_that_would_end_past_the_stop_time() -> None:
    """A step on a busy CPU takes seconds: the epoch ends when the next step, as long as the last, would cross the stop
    time (not after the step that crossed it), so the validation that follows still ends by the deadline."""
    import time

    plan: dict = {}
    schedule = _schedule_at(stop_in=600.0, deadline_in=620.0, plan=plan)
    assert not schedule.model.stop_training and "first_step_seconds" in plan
    schedule.on_train_batch_begin(1)
    schedule.step_started -= 30.0  # that step took 30 s: 600 s are left
    schedule.on_train_batch_end(1)
    assert schedule.step_seconds == pytest.approx(30.0, abs=1.0) and not schedule.model.stop_training
    schedule.on_train_batch_begin(2)
    schedule.step_started -= 700.0  # one of 700 s: the next would end past the stop time
    schedule.on_train_batch_end(2)
    assert schedule.model.stop_training
    assert schedule.stop_time() == pytest.approx(time.monotonic() + 600.0, abs=5.0)


def test_a_validation_slower_than_planned_moves_the_stop_time_earlier() -> None:
    """The plan gives the validation pass `deadline - stop_at` (its estimate at the probe's speed); the pass timed at each
    epoch's end replaces it, and the next epoch stops that much earlier (a CPU busier than at planning time)."""
    plan: dict = {}
    schedule = _schedule_at(stop_in=500.0, deadline_in=520.0, plan=plan)
    assert schedule.val_seconds == pytest.approx(20.0)
    planned = schedule.stop_time()
    schedule.on_test_begin()
    schedule.val_started -= 90.0  # the validation pass took 90 s, not 20
    schedule.on_test_end()
    assert plan["val_seconds"] == pytest.approx(90.0, abs=1.0)
    assert schedule.stop_time() == pytest.approx(planned - 70.0, abs=1.0)
    schedule.on_epoch_end(0)
    assert plan["epoch_ends_before_deadline"] and plan["epoch_ends_before_deadline"][-1] == pytest.approx(520.0, abs=5.0)
    schedule.on_train_end()
    assert plan["fine_tune_ended_before_deadline"] == pytest.approx(520.0, abs=5.0)  # recorded: > 0 ended in time


def test_the_fine_tune_plan_records_where_the_head_ended_and_its_deadline() -> None:
    import time

    budget = TimeBudget(600.0, started=time.monotonic() - 100, forward_images_per_second=400.0, trace_seconds=1.0)
    plan: dict = {}
    _, _, deadline = fine_tune_plan(budget, plan, {"train": 18000, "val": 2000, "test": 10000}, 32)
    assert plan["head_ended_at"] == pytest.approx(100.0, abs=1.0)
    assert plan["fine_tune_deadline_at"] == pytest.approx(600.0 - budget.final_seconds(10000), abs=0.1)
    assert plan["fine_tune_deadline_at"] == pytest.approx(plan["head_ended_at"] + plan["fine_tune_seconds"], abs=0.2)


def test_a_budget_too_short_for_a_few_passes_turns_default_augmentation_off() -> None:
    import time

    from edgecls.training.budget import AUGMENT_MIN_PASSES, augmentation_decision

    budget = TimeBudget(180.0, started=time.monotonic(), forward_images_per_second=1200.0, trace_seconds=0.6)
    # ~150 s of fine-tune at 1200 / 6 = 200 images/s: ~30,000 images, under 2 passes over 18,000
    decision = augmentation_decision(budget, {"train": 18000, "val": 2000, "test": 10000})
    assert decision is not None and decision["augment"] is False
    assert 1.0 < decision["expected_fine_tune_passes"] < AUGMENT_MIN_PASSES and "--augment" in decision["why"]
    # the same budget over 1,500 images: ~20 passes, augmentation kept
    assert augmentation_decision(budget, {"train": 1500, "val": 150, "test": 150}) is None


def test_augment_asked_for_is_kept_and_a_saved_config_remembers_it(tmp_path: Path) -> None:
    from edgecls.training.augment import AugmentConfig
    from edgecls.training.config import TrainConfig

    assert AugmentConfig().auto  # the default: the budget may turn it off
    asked = TrainConfig(data=str(tmp_path), augment=AugmentConfig(auto=False), time_budget="3m")
    again = TrainConfig.from_dict(asked.to_dict())
    assert again.augment is not None and again.augment.auto is False
    legacy = asked.to_dict()
    del legacy["augment"]["auto"]  # a run folder written before the setting existed resumes with the default
    assert TrainConfig.from_dict(legacy).augment == AugmentConfig()


def test_a_budgeted_run_pauses_the_cyclic_gc_and_gives_it_back() -> None:
    import gc

    from edgecls.training.budget import cyclic_gc_paused

    assert gc.isenabled()
    with cyclic_gc_paused(True):
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), cyclic_gc_paused(True):  # an error in the run gives the collector back too
        raise RuntimeError("stop")
    assert gc.isenabled()
    with cyclic_gc_paused(False):  # no budget: untouched
        assert gc.isenabled()
    gc.disable()
    try:
        with cyclic_gc_paused(True):
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()
        gc.unfreeze()  # the runs above froze this process's objects


def test_budget_validation_subset_is_fixed_by_the_seed_and_keeps_labels_aligned() -> None:
    from edgecls.training.budget import MAX_BUDGET_VAL_IMAGES, validation_subset

    count = MAX_BUDGET_VAL_IMAGES * 3
    images = np.arange(count, dtype=np.int64).reshape(count, 1, 1, 1)  # each image holds its row number
    labels = np.arange(count) % 10
    chosen, chosen_labels = validation_subset(images, labels, seed=7)
    rows = chosen.reshape(-1)
    assert len(rows) == len(chosen_labels) == MAX_BUDGET_VAL_IMAGES
    assert np.all(np.diff(rows) > 0)  # distinct rows, in the split's order
    assert np.array_equal(chosen_labels, labels[rows])
    assert np.array_equal(validation_subset(images, labels, seed=7)[0], chosen)  # a resumed run validates on the same rows
    assert not np.array_equal(validation_subset(images, labels, seed=8)[0], chosen)
    small = images[:MAX_BUDGET_VAL_IMAGES]
    assert validation_subset(small, labels[:MAX_BUDGET_VAL_IMAGES], seed=7)[0] is small  # no larger than the cap: all of it


def test_budget_validation_subset_of_a_streamed_split_stays_on_disk(tmp_path: Path) -> None:
    from edgecls.training.budget import MAX_BUDGET_VAL_IMAGES, validation_subset
    from edgecls.training.disk_cache import DiskImages

    count, shard_images = MAX_BUDGET_VAL_IMAGES + 500, 1000
    pixels = np.stack([np.arange(count) // 256, np.arange(count) % 256, np.zeros(count)], axis=1).astype(np.uint8)
    for shard in range(0, count, shard_images):  # real cache files: each 1x1 image encodes its row of the cache
        (tmp_path / f"scan-{shard // shard_images:05d}.u8").write_bytes(pixels[shard:shard + shard_images].tobytes())
    split_rows = np.arange(count)[::-1]  # a split: a view of the cache's rows, in its own order
    split = DiskImages(tmp_path, "scan", count, (1, 1), shard_images).view(split_rows)
    labels = split_rows % 10
    chosen, chosen_labels = validation_subset(split, labels, seed=3)
    assert isinstance(chosen, DiskImages) and len(chosen) == MAX_BUDGET_VAL_IMAGES
    decoded = chosen[:].reshape(-1, 3).astype(np.int64)
    cache_rows = decoded[:, 0] * 256 + decoded[:, 1]
    assert np.array_equal(cache_rows % 10, chosen_labels)  # each image still carries its own label
    assert set(cache_rows.tolist()) <= set(split_rows.tolist()) and len(set(cache_rows.tolist())) == MAX_BUDGET_VAL_IMAGES
    with pytest.raises(IndexError, match="outside"):  # a row past the split is refused, not wrapped or read from the cache
        split.view([count])


def test_a_budgeted_run_leaves_its_cycles_frozen_instead_of_collecting_them_after_it_ends() -> None:
    import gc
    import weakref

    from edgecls.training.budget import cyclic_gc_paused

    class Node:
        pass

    try:
        with cyclic_gc_paused(True):
            cycle = Node()
            cycle.self = cycle  # type: ignore[attr-defined]
            alive = weakref.ref(cycle)
            del cycle
        gc.collect()
        assert alive() is not None  # frozen: no collection pays for the run's garbage after the run (the CLI exits)
        gc.unfreeze()
        gc.collect()
        assert alive() is None  # a program that trains again can free it when it can afford the pause
    finally:
        gc.unfreeze()


def test_patience_counts_passes_over_the_train_images_not_a_budgets_shorter_epochs() -> None:
    from edgecls.training.budget import patience_in_epochs

    assert patience_in_epochs(3, 844, 844) == 3  # full epochs: as given
    assert patience_in_epochs(3, 46, 844) == 56  # a budget's 46-step epochs: three passes' worth (it had stopped after 3)
    assert patience_in_epochs(3, 422, 844) == 6
    assert patience_in_epochs(1, 2000, 844) == 1  # never below one epoch
    assert patience_in_epochs(0, 46, 844) == 0  # off stays off
