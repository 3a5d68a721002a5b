"""Which epoch a run keeps (training/best_epoch.py): the lowest val loss within one standard error of the best val
accuracy; the strict maximum without validation images."""
from __future__ import annotations

import random

import pytest

from edgecls.training.best_epoch import EpochScore, keeps_candidate, standard_error


def kept_epoch(scores: list[tuple[float, float]], images: int) -> int:
    kept, top = None, None
    for index, (accuracy, loss) in enumerate(scores):
        keep, top = keeps_candidate(EpochScore(accuracy, loss), None if kept is None else EpochScore(*scores[kept]), top, images)
        if keep:
            kept = index
    assert kept is not None
    return kept


def test_standard_error_is_the_binomial_one() -> None:
    assert standard_error(0.93, 2000) == pytest.approx(0.00571, abs=1e-5)
    assert standard_error(0.5, 100) == pytest.approx(0.05)
    assert standard_error(0.93, 0) == 0.0


def test_a_lucky_early_epoch_within_the_noise_gives_way_to_a_later_lower_loss() -> None:
    # session 10's baseline run: epoch 6 scored 0.9345 on 2,000 val images, the last 0.9295 with the lowest loss
    scores = [(0.861, 0.82), (0.903, 0.74), (0.912, 0.70), (0.918, 0.68), (0.925, 0.67), (0.9345, 0.66), (0.931, 0.655),
              (0.9295, 0.650)]
    assert kept_epoch(scores, 2000) == 7
    assert kept_epoch(scores, 0) == 5  # the strict maximum


def test_a_clearly_better_epoch_is_not_given_up_for_a_lower_loss() -> None:
    scores = [(0.80, 0.70), (0.93, 0.60), (0.90, 0.50)]  # 3 points below the best: beyond one standard error (0.57)
    assert kept_epoch(scores, 2000) == 1
    assert kept_epoch([(0.93, 0.60), (0.92, 0.50)], 2000) == 0  # 1 point below on 2,000 images: not within the noise
    assert kept_epoch([(0.93, 0.60), (0.92, 0.50)], 200) == 1  # the same on 200 images (SE 1.8 points): within it


def test_without_validation_images_it_is_the_strict_maximum_ties_to_the_lower_loss() -> None:
    rng = random.Random(7)
    for _ in range(200):
        scores = [(rng.choice([0.5, 0.6, 0.7, 0.8]), rng.choice([0.3, 0.4, 0.5])) for _ in range(rng.randint(1, 12))]
        lexicographic = max(range(len(scores)), key=lambda i: (scores[i][0], -scores[i][1], -i))
        assert kept_epoch(scores, 0) == lexicographic


def test_the_kept_epoch_is_always_within_one_standard_error_of_the_best_seen() -> None:
    rng = random.Random(11)
    for _ in range(300):
        images = rng.choice([50, 500, 2000])
        scores = [(rng.uniform(0.6, 0.95), rng.uniform(0.2, 1.0)) for _ in range(rng.randint(1, 15))]
        kept = kept_epoch(scores, images)
        top = max(accuracy for accuracy, _ in scores)
        assert scores[kept][0] >= top - standard_error(top, images) - 1e-12
        # and no epoch within the margin of the final best has a lower loss, except ones before the best rose past them
        best_index = max(range(len(scores)), key=lambda i: scores[i][0])
        for index in range(best_index, len(scores)):
            if scores[index][0] >= top - standard_error(top, images):
                assert scores[index][1] >= scores[kept][1]
