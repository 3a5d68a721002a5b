"""Which epoch's weights a run keeps: among the epochs whose validation accuracy is within one standard error of the
best so far, the one with the lowest validation loss.

Validation accuracy on a few thousand images is noisy: one standard error is 0.57 points at 93% on 2,000 images. The
strict maximum kept lucky early epochs over later ones that scored higher on the test split (docs/benchmarks.md,
session 11). Within that noise the validation loss decides: it counts every image by how sure the model is, not only
whether the top class is right. Without a validation split (training accuracy, images=0) this is the strict maximum,
ties broken by the lower loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class EpochScore:
    accuracy: float
    loss: float


def standard_error(accuracy: float, images: int) -> float:
    """The binomial standard error of an accuracy measured on `images` images (0 without images)."""
    return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / images) if images > 0 else 0.0


def keeps_candidate(candidate: EpochScore, kept: EpochScore | None, top_accuracy: float | None, images: int) -> tuple[bool, float]:
    """(whether `candidate` replaces the `kept` epoch, the best accuracy so far): `top_accuracy` is the best before it.

    The kept epoch is always within one standard error of the best accuracy seen: when a candidate raises the best
    beyond that, it is kept; otherwise a candidate within the margin is kept when its loss is lower."""
    earlier = [value for value in (top_accuracy, kept.accuracy if kept is not None else None) if value is not None]
    top = max([candidate.accuracy, *earlier])
    if kept is None:
        return True, top
    margin = standard_error(top, images)
    if kept.accuracy < top - margin:
        return True, top
    return candidate.accuracy >= top - margin and candidate.loss < kept.loss, top
