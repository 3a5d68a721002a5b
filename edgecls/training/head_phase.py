"""The head phase on cached features: the frozen backbone's output computed once, under a time budget a probe of its
speed and a plan of what the feature pass covers, then the head to convergence and the flip decision (training/head.py).

A mixin of the recipe's trainer (training/recipe.py): it reads the run's state from it, declared below.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgecls.training.budget import TimeBudget, augmentation_decision, head_plan, seeded_rows
from edgecls.training.checkpoint import Progress
from edgecls.training.config import TrainConfig

if TYPE_CHECKING:
    from edgecls.training.callbacks import BestWeights


class _Run(Protocol):
    """What the head phase reads from the recipe's trainer."""

    config: TrainConfig
    budget: TimeBudget | None
    progress: Progress
    best: BestWeights
    classifier: Any
    console: Any
    class_weight: dict[int, float] | None
    speed: dict[str, float]
    extract: Any

    def _epoch_done(self, epochs_done: int) -> None: ...
    def _write_state(self) -> None: ...
    def _loss(self) -> Any: ...
    def _features(self, images: np.ndarray, name: str, mirror: bool = False, chosen: np.ndarray | None = None) -> np.ndarray: ...
    def _head_plan(self, arrays: dict[str, Any], num_classes: int, want_flip: bool) -> tuple[np.ndarray | None, bool, float]: ...
    def _time_plan(self) -> dict[str, Any]: ...


class HeadOnFeatures:
    extract: Any = None  # the traced feature function, built once a run

    def _train_head_on_features(self: _Run, arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray], num_classes: int) -> None:
        """The head to convergence on cached features, and the flip decision (training/head.py): seconds of work."""
        from edgecls.training.head import head_with_flip_decision

        config = self.config
        # One checkpoint before any head epoch: a run stopped in this phase resumes from the untrained head and redoes
        # the phase (seconds), so it ends as the uninterrupted run does; state.json counts the epochs meanwhile.
        self._epoch_done(0)

        def head_epoch_done() -> None:
            self.progress.epochs_done += 1
            self._write_state()

        has_val = len(arrays["val"]) > 0
        decide_flip = bool(config.augment and config.augment.flip and has_val)
        chosen, head_deadline = None, None  # under a budget: the train images the feature pass covers, the head's end
        if self.budget is not None:
            chosen, decide_flip, head_deadline = self._head_plan(arrays, num_classes, decide_flip)
        train_labels = labels["train"] if chosen is None else labels["train"][chosen]
        train_x, val_x = self._features(arrays["train"], "train", chosen=chosen), self._features(arrays["val"], "val")
        flipped = self._features(arrays["train"], "train, mirrored", mirror=True, chosen=chosen) if decide_flip else None
        result = head_with_flip_decision(
            self.classifier.head, train_x, flipped, train_labels, (val_x, labels["val"]) if has_val else None,
            num_classes=num_classes, batch=config.batch, lr=config.head_lr, optimizer=config.optimizer, loss=self._loss(),
            seed=config.seed, epochs=config.epochs, patience=config.patience, class_weight=self.class_weight,
            deadline=head_deadline, on_epoch=head_epoch_done,
        )
        self.progress.rows.extend(result.fit.rows)
        self.best.update({"val_accuracy": result.fit.val_accuracy, "val_loss": result.fit.val_loss})
        what = "val" if has_val else "train"
        self.console.print(f"  head: {len(result.fit.rows)} epochs on cached features, best {what} accuracy {result.fit.val_accuracy:.3f}")
        if result.flip is not None:
            self.progress.decisions["flip"] = result.decision
            verdict = "kept" if result.flip else "turned off (it hurts on this data)"
            with_flip, without = result.decision["val_accuracy_with_flip"], result.decision["val_accuracy_without_flip"]
            self.console.print(f"augmentation: horizontal flip {verdict}: head val accuracy {with_flip:.3f} "
                               f"with flipped features, {without:.3f} without")

    def _features(self: _Run, images: np.ndarray, name: str, mirror: bool = False, chosen: np.ndarray | None = None) -> np.ndarray:
        """Backbone features computed once: the frozen backbone's output never changes (`mirror`: of the mirrored images;
        `chosen`: of those train images only, in that order)."""
        from edgecls.training.head import backbone_features, feature_extractor

        self.extract = self.extract or feature_extractor(self.classifier.features)
        features, speed = backbone_features(self.extract, images, name, self.console, mirror, chosen)
        if name == "train" and speed:
            self.speed["feature_images_per_second"] = round(speed, 1)
            if self.budget is not None:  # the lower of probe and pass: the final evaluation ran at the probe's speed under load
                self.budget.forward_images_per_second = min(speed, self.budget.forward_images_per_second)
        return features

    def _head_plan(self: _Run, arrays: dict[str, Any], num_classes: int, want_flip: bool) -> tuple[np.ndarray | None, bool, float]:
        """Under a budget: the backbone's forward speed measured on a probe, then the train images the feature pass covers
        (None: all), whether the flip decision is made, and the head phase's deadline (budget.head_plan)."""
        from edgecls.training.head import feature_extractor, forward_speed

        assert self.budget is not None
        self.extract = self.extract or feature_extractor(self.classifier.features)
        self.budget.forward_images_per_second, self.budget.trace_seconds = forward_speed(self.extract, arrays["train"])
        counts = {name: len(arrays[name]) for name in ("train", "val", "test")}
        decision = augmentation_decision(self.budget, counts) if self.config.augment and self.config.augment.auto else None
        if decision is not None:  # no flip decision either: the fine-tune sees no augmentation
            self.progress.decisions["augment"], want_flip = decision, False
            self.console.print(f"augmentation: off ({decision['why']})")
        plan, deadline = head_plan(self.budget, self._time_plan(), counts, num_classes, want_flip)
        chosen = None
        if plan.feature_images < counts["train"]:
            chosen = seeded_rows(counts["train"], plan.feature_images, self.config.seed)
        return chosen, plan.decide_flip, deadline

    def _time_plan(self: _Run) -> dict[str, Any]:
        assert self.budget is not None
        plan: dict[str, Any] = self.progress.decisions.setdefault("time_plan", {"budget_seconds": self.budget.seconds})
        return plan
