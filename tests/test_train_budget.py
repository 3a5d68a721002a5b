"""--time-budget parsing and planning, the head's flip decision on features, and the augmentation ramp (unit, seconds)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecls.errors import ConfigError
from edgecls.training.budget import TimeBudget, planned_epochs
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
    budget = TimeBudget(180.0, started=0.0, forward_images_per_second=1000.0)
    assert budget.fine_tune_epoch_estimate(18000, 2000) == pytest.approx(4 * 18 + 2)
    assert budget.fine_tune_deadline(10000) == pytest.approx(180 - 5 - 15)


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
