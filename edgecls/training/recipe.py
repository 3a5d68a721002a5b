"""The fine-tuning recipe: head on the frozen (cached) backbone, then unfreeze and fine-tune.

Faithful resume: every epoch end writes checkpoint.npz (training/checkpoint.py) and every epoch's data is a
pure function of (seed, epoch) (pipeline.make_dataset), so `--resume` after a SIGKILL ends with the weights
of the uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, ModelError, require
from edgecls.fsutil import write_json
from edgecls.meta import ModelMeta
from edgecls.run_folder import CHECKPOINT_FILE, CURVES_FILE, MODEL_FILE, STATE_FILE, save_model, write_history, write_splits
from edgecls.training.augment import AugmentConfig, mirror_flip_decision
from edgecls.training.budget import (
    MAX_BUDGET_FINE_TUNE_EPOCHS,
    TimeBudget,
    cyclic_gc_paused,
    data_position,
    fine_tune_plan,
    patience_in_epochs,
    validation_subset,
)
from edgecls.training.checkpoint import Progress, assign_values, checkpoint_to_resume, progress_json, save_checkpoint
from edgecls.training.config import DEFAULT_LR, TrainConfig, parse_duration
from edgecls.training.disk_cache import remove_cache
from edgecls.training.head_phase import HeadOnFeatures
from edgecls.training.optimizers import class_weights, make_optimizer
from edgecls.training.pipeline import load_training_data, make_dataset, warn_about_data
from edgecls.training.run_setup import default_run_dir, new_run_folder, resumed_run_folder
from edgecls.training.scratch import default_lr, prepare_scratch_backbone
from edgecls.training.strategy import make_strategy, require_tensorflow, synchronize_batch_norm


@dataclass
class RunResult:
    run_dir: Path
    meta: ModelMeta
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    seconds: float


def train(data: str | Path | None = None, resume: str | Path | None = None, **options: Any) -> RunResult:
    """Fine-tune a backbone on an ImageFolder tree and write a run folder. See TrainConfig for options.

    `resume=RUN` continues an interrupted run from its last completed epoch with its saved settings.
    The run folder is locked while training; `--out` may not be, lie inside, or contain `--data`.
    """
    require_tensorflow()  # before a run folder is created or locked
    from edgecls.training import multi_worker

    if multi_worker.wanted(resume, options):  # chief writes RUN, the other workers a temp folder (training/multi_worker.py)
        return multi_worker.train_multi_worker(data, resume, options, lambda config, run_dir, state: _Trainer(config, run_dir, state).run())
    if resume is not None:
        run = Path(resume)
        with resumed_run_folder(run) as state:
            try:
                config = TrainConfig.from_dict({**state["config"], "out": str(run)})
            except TypeError as exc:  # unknown or missing settings: another edgecls version, or an edited file
                raise ModelError(f"'{run / STATE_FILE}' holds settings this edgecls cannot use: {exc}",
                                 "Start a new run with --out (or resume with the edgecls version that began it)") from exc
            return _Trainer(config, run, state).run()
    if data is None:
        raise ConfigError("no --data given", "Pass --data DIR (an ImageFolder tree) or --resume RUN")
    config = TrainConfig(data=str(data), **options)
    run = Path(config.out) if config.out else default_run_dir(config.model)
    with new_run_folder(run, config.data) as run_dir:
        return _Trainer(config, run_dir, None).run()


class _Trainer(HeadOnFeatures):
    """One run: data, model, the head phase (training/head_phase.py when on cached features), the fine-tune, the results."""

    def __init__(self, config: TrainConfig, run_dir: Path, resume_state: dict[str, Any] | None) -> None:
        self.config, self.run_dir, self.resume_state = config, run_dir, resume_state
        self.speed: dict[str, float] = {}  # images per second of each stage that ran
        self.optimizer: Any = None  # the optimizer of the phase running now (saved in checkpoints)
        self.streamed = False  # the splits come from a uint8 cache on disk (training/disk_cache.py), not memory
        self.mirror_checked = False  # the mirror check ran (it decides the flip where no head on features does)

    def run(self) -> RunResult:
        from rich.console import Console

        self.console = Console(stderr=True)
        start = time.perf_counter()
        # A budget covers the whole run from here (a resumed run gets the whole budget again).
        self.budget = TimeBudget(parse_duration(self.config.time_budget), time.monotonic()) if self.config.time_budget else None
        config = self.config
        from edgecls.zoo.classifier import build_classifier, check_input_size, resolve_weights, versions
        from edgecls.zoo.registry import get_spec

        spec = get_spec(config.model)  # a wrong model, weights or size: refused before TensorFlow loads
        self.pretrained = resolve_weights(spec, config.weights) is not None
        size = (config.img_size or spec.default_size,) * 2
        check_input_size(spec, size)

        def same_images(splits: Any) -> None:  # a resumed run trains on the images it began with
            if self.resume_state is not None and self.resume_state.get("fingerprint", splits.fingerprint) != splits.fingerprint:
                raise ConfigError(f"the images in --data '{config.data}' changed since run '{self.run_dir}' began",
                                  "Restore them to resume this run, or start a new run with --out")

        loaded = load_training_data(config.data, config.val_split, config.test_split, config.seed, size, config.stream,
                                    self.run_dir, self.console, same_images)
        splits, arrays, self.streamed = loaded.splits, loaded.arrays, loaded.streamed
        warn_about_data(loaded, config.data, self.console)  # skipped files, images in more than one split
        # TensorFlow loads once the data is known to be usable: a data mistake is one line within a second or two
        tf = require("tensorflow", "train")
        import keras

        from edgecls.training.callbacks import BestWeights

        strategy = make_strategy(config.strategy, tf)
        keras.utils.set_random_seed(config.seed)
        tf.config.experimental.enable_op_determinism()  # same seed, same weights (also makes tf.data ordered)
        self.gpu = bool(tf.config.list_physical_devices("GPU"))
        if config.mixed_precision == "on" or (config.mixed_precision == "auto" and self.gpu):
            keras.mixed_precision.set_global_policy("mixed_float16")
        classes = self.classes = list(splits.classes)
        write_splits(self.run_dir, Path(splits.root), classes, {"train": splits.train, "val": splits.val, "test": splits.test})
        self.console.print(
            f"data: {len(classes)} classes, {len(splits.train.paths)} train / {len(splits.val.paths)} val / "
            f"{len(splits.test.paths)} test images; model {spec.name} at {size[0]} px; "
            f"{'GPU' if self.gpu else 'CPU'}, {strategy.num_replicas_in_sync} replica(s)"
        )
        labels = {name: np.asarray(getattr(splits, name).labels, np.int64) for name in ("train", "val", "test")}

        checkpoint = checkpoint_to_resume(self.run_dir / CHECKPOINT_FILE, self.resume_state)
        with strategy.scope():
            # A resumed run takes every variable from its checkpoint: no need to fetch or read pretrained weights again.
            weights = "none" if checkpoint else config.weights
            self.classifier = build_classifier(config.model, len(classes), size, weights, config.alpha, config.dropout)
            if strategy.num_replicas_in_sync > 1:  # --strategy mirrored / multi-worker: BatchNorm over the global batch
                synchronize_batch_norm(self.classifier.model)
        if not self.pretrained:
            prepare_scratch_backbone(self.classifier.backbone)
        if config.lr is None:  # the run folder records the rate it used
            config = self.config = dataclasses.replace(config, lr=default_lr(self.classifier.backbone, self.pretrained))
            if config.lr != DEFAULT_LR:
                self.console.print(f"{spec.name} from scratch has no BatchNorm: --lr {config.lr:g} (pass --lr to choose)")
        self.progress = checkpoint.progress if checkpoint else Progress()
        self.best = BestWeights(self.classifier.model, self.progress)
        self.restored_optimizer: tuple[str, list[np.ndarray]] | None = None
        if checkpoint:
            assign_values(self.classifier.model.variables, checkpoint.model_values, "model", self.run_dir / CHECKPOINT_FILE)
            self.best.weights = checkpoint.best_weights
            if checkpoint.optimizer_values:
                self.restored_optimizer = (checkpoint.progress.phase, checkpoint.optimizer_values)
        self.class_weight = class_weights(labels["train"], len(classes), config.class_weights)
        self.fingerprint = splits.fingerprint
        self._write_state()

        fit_arrays, fit_labels = arrays, labels  # what training sees; the final metrics use every image
        if self.budget is not None:  # one validation subset for both phases: their best epochs compare on the same images
            val_x, val_y = validation_subset(arrays["val"], labels["val"], config.seed)
            fit_arrays, fit_labels = {**arrays, "val": val_x}, {**labels, "val": val_y}
        self.best.val_images = len(fit_labels["val"])  # the noise of val accuracy: training/best_epoch.py
        if not (self._cached() and len(arrays["val"])):  # no head on features to decide the flip: the names and images do
            self._flip_from_mirror_check(arrays["train"], labels["train"], classes)
        train_start = time.perf_counter()
        with cyclic_gc_paused(self.budget is not None):  # budget.py: a late collection pushed 3m runs past their budget
            with strategy.scope():
                if self.progress.phase == "head":
                    self._train_head(fit_arrays, fit_labels, len(classes))
                self._fine_tune(fit_arrays, fit_labels, len(classes))
            self.best.restore()
            train_seconds = time.perf_counter() - train_start

            meta = ModelMeta(
                architecture=spec.name, input_size=size, labels=classes, mean=spec.mean, std=spec.std,
                crop_fraction=1.0, training={**config.to_dict(), "train_seconds": round(train_seconds, 2),
                                             "device": "GPU" if self.gpu else "CPU", "replicas": strategy.num_replicas_in_sync},
                dataset={"root": str(Path(splits.root).resolve()), "fingerprint": splits.fingerprint, "presplit": splits.presplit,
                         "counts": {n: len(getattr(splits, n).paths) for n in ("train", "val", "test")}, "skipped": len(splits.skipped)},
                versions=versions(),
            )
            synchronize_batch_norm(self.classifier.model, on=False)  # a training-time setting; the saved model is a plain one
            save_model(self.classifier.model, self.run_dir / MODEL_FILE)
            meta.save(self.run_dir)
            metrics = self._final_evaluation(self.classifier.model, arrays, labels, classes, train_seconds)
            self._finish()
            return RunResult(self.run_dir, meta, self.progress.rows, metrics, time.perf_counter() - start)

    def _write_state(self) -> None:
        state = {"config": self.config.to_dict(), "fingerprint": self.fingerprint, "checkpoint": CHECKPOINT_FILE}
        write_json(self.run_dir / STATE_FILE, {**state, **progress_json(self.progress)})

    def _epoch_done(self, epochs_done: int) -> None:
        """Checkpoint first (one atomic file holds everything), then the state.json people read."""
        self.progress.epochs_done = epochs_done
        save_checkpoint(self.run_dir / CHECKPOINT_FILE, self.progress, self.classifier.model, self.optimizer, self.best.weights)
        self._write_state()

    def _fit(self, phase: str, model: Any, optimizer: Any, train_ds: Any, val_ds: Any, epochs: tuple[int, int], steps: int,
             extra: tuple[Any, ...] = (), planned: int | None = None, full_steps: int | None = None) -> Any:
        """compile + fit epochs [first, end) of a phase, restoring the optimizer's state when resuming this phase
        (`full_steps`: of one pass over the train images, when a budget's epochs are shorter)."""
        from edgecls.training.callbacks import EarlyStop, EpochCheckpoint, HistoryRows, RichProgress

        config = self.config
        model.compile(optimizer=optimizer, loss=self._loss(), metrics=["accuracy"], jit_compile=self.gpu)
        self.optimizer = model.optimizer
        if self.restored_optimizer is not None and self.restored_optimizer[0] == phase:
            self.optimizer.build(model.trainable_variables)
            assign_values(self.optimizer.variables, self.restored_optimizer[1], "optimizer", self.run_dir / CHECKPOINT_FILE)
        self.restored_optimizer = None
        first, end = epochs
        monitor = "val_accuracy" if val_ds is not None else "accuracy"
        patience = patience_in_epochs(config.patience, steps, full_steps or steps)
        callbacks = [
            HistoryRows(phase, self.progress.rows, 0 if phase == "head" else sum(row["phase"] == "head" for row in self.progress.rows)),
            self.best.callback(),
            *([EarlyStop(monitor, patience, self.progress)] if patience else []),
            *extra,  # a time budget's schedule and stop: before the checkpoint, which saves their plan
            EpochCheckpoint(self._epoch_done),
            RichProgress(phase, (planned or end) - first, steps),
        ]
        return model.fit(train_ds, steps_per_epoch=steps, initial_epoch=first, epochs=end, validation_data=val_ds,
                         class_weight=self.class_weight, callbacks=callbacks, verbose=0, shuffle=False)

    def _loss(self) -> Any:
        import keras

        return keras.losses.CategoricalCrossentropy(label_smoothing=self.config.label_smoothing)

    def _train_head(self, arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray], num_classes: int) -> None:
        config, classifier, done = self.config, self.classifier, self.progress.epochs_done
        # A pretrained backbone stays frozen (and can be cached); a random one must learn from the start.
        classifier.backbone.trainable = not self.pretrained
        if done < config.epochs and not self.progress.stop.stopped:
            steps = math.ceil(len(arrays["train"]) / config.batch)
            has_val = len(arrays["val"]) > 0
            if self._cached():  # the frozen backbone's output never changes: features computed once
                self._train_head_on_features(arrays, labels, num_classes)
            else:
                model, train_x, val_x = classifier.model, arrays["train"], arrays["val"]
                train_ds = make_dataset(train_x, labels["train"], num_classes, config.batch, True, self._augment(),
                                        config.seed, (done, config.epochs))
                val_ds = make_dataset(val_x, labels["val"], num_classes, config.batch, False, None, config.seed) if has_val else None
                optimizer = make_optimizer(config.optimizer, config.head_lr, config.schedule, config.epochs * steps)
                from edgecls.training.callbacks import Deadline

                fine_tune_follows = bool(config.fine_tune_epochs and config.unfreeze)
                extra = (Deadline(self.budget.scratch_head_deadline(fine_tune_follows)),) if self.budget else ()
                self._fit("head", model, optimizer, train_ds, val_ds, (done, config.epochs), steps, extra)
        self.best.restore()
        self.progress.start_phase("fine_tune")  # the fine-tune phase starts from the best head, with a fresh optimizer
        self.optimizer = None
        self._epoch_done(0)

    def _flip_from_mirror_check(self, images: Any, labels: np.ndarray, classes: list[str]) -> None:
        """Where no head on features decides the horizontal flip: the names and images do (augment.mirror_flip_decision),
        once a run."""
        if self.config.augment is not None and not {"flip", "augment"} & set(self.progress.decisions) and not self.mirror_checked:
            self.mirror_checked = True
            decision, message = mirror_flip_decision(self.config.augment, images, labels, classes)
            if decision is not None:
                self.progress.decisions["flip"] = decision
            if message:
                self.console.print(message)

    def _cached(self) -> bool:
        """Whether the head phase trains on cached features (and so never sees augmented images)."""
        return bool(self.config.feature_cache and self.pretrained)

    def _augment(self) -> AugmentConfig | None:
        """The fine-tune augmentation: the settings, with horizontal flips as the head phase decided on the data."""
        if "augment" in self.progress.decisions:  # turned off by the time budget's plan (budget.augmentation_decision)
            return None
        augment, decision = self.config.augment, self.progress.decisions.get("flip")
        if augment is None or decision is None:
            return augment
        return dataclasses.replace(augment, flip=bool(decision["flip"]))

    def _fine_tune(self, arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray], num_classes: int) -> None:
        from edgecls.training.stem import set_fine_tune_trainable

        config, classifier, done = self.config, self.classifier, self.progress.epochs_done
        limit = MAX_BUDGET_FINE_TUNE_EPOCHS if self.budget else config.fine_tune_epochs  # a budget plans its own count
        if not config.fine_tune_epochs or config.unfreeze == 0 or done >= limit or self.progress.stop.stopped:
            return
        # a budget's fine-tune of a pretrained backbone: the stages after stride 8 only (training/stem.py)
        cut = set_fine_tune_trainable(classifier.backbone, config.unfreeze, self.budget is not None and self.pretrained)
        if cut is not None:
            self.progress.decisions["frozen_stem"] = {"cut": cut, "why": "--time-budget: the first stages stay frozen"}
        self._flip_from_mirror_check(arrays["train"], labels["train"], self.classes)  # when the head's plan skipped it
        epochs = config.fine_tune_epochs
        steps = full_steps = math.ceil(len(arrays["train"]) / config.batch)
        extra: tuple[Any, ...] = ()
        planned = None
        if self.budget is not None:
            extra, planned, steps = self._budget_plan(len(arrays["train"]), len(arrays["val"]), len(arrays["test"]), full_steps)
            if planned == 0 or (done and done >= planned):
                if planned == 0:
                    self.console.print("time budget: no fine-tune epoch fits in what is left; keeping the head")
                return
            epochs = MAX_BUDGET_FINE_TUNE_EPOCHS
        # Data epochs continue the head's numbering, so fine-tuning never replays the head's order. A budget's shorter
        # epochs are consecutive slices of the same stream of full data epochs.
        data_epoch, skip = data_position(done, steps, full_steps)
        train_ds = make_dataset(arrays["train"], labels["train"], num_classes, config.batch, True, self._augment(), config.seed,
                                (config.epochs + data_epoch, config.epochs + epochs), ramp_from=config.epochs if self._cached() else None)
        train_ds = train_ds.skip(skip) if skip else train_ds
        has_val = len(arrays["val"]) > 0
        val_ds = make_dataset(arrays["val"], labels["val"], num_classes, config.batch, False, None, config.seed) if has_val else None
        # Half an epoch of warm-up: fresh optimizer state at full rate jolts the unfrozen backbone.
        warmup = min((planned or epochs) * steps // 2, max(1, full_steps // 2))
        if extra:  # the budget's callback drives the rate over the planned steps (a short plan: a fifth of them warm up)
            extra[0].warmup = max(1, min(warmup, (planned or 1) * steps // 5))
            optimizer = make_optimizer(config.optimizer, config.tune_lr, "constant", epochs * steps)
        else:
            optimizer = make_optimizer(config.optimizer, config.tune_lr, config.schedule, epochs * steps, warmup)
        started = time.perf_counter()
        self._fit("fine_tune", classifier.model, optimizer, train_ds, val_ds, (done, epochs), steps, extra, planned, full_steps)
        steps_run = int(self.optimizer.iterations.numpy()) - done * steps
        if steps_run > 0:  # validation time included
            images = min(steps_run * config.batch, math.ceil(steps_run / full_steps) * len(arrays["train"]))
            self.speed["fine_tune_images_per_second"] = round(images / (time.perf_counter() - started), 1)

    def _budget_plan(self, train: int, val: int, test: int, full_steps: int) -> tuple[tuple[Any, ...], int, int]:
        """The fine-tune's budget callbacks, its first plan (epochs; 0: none fits) and its steps per epoch
        (budget.fine_tune_plan); a resumed run keeps the plan it saved."""
        from edgecls.training.budget import budget_schedule

        assert self.budget is not None
        plan, done = self._time_plan(), self.progress.epochs_done
        epochs, steps, deadline = fine_tune_plan(self.budget, plan, {"train": train, "val": val, "test": test}, self.config.batch)
        if not done and epochs == 0:
            return (), 0, steps
        self.console.print(f"time budget: {self.budget.left():.0f} s left; fine-tune planned at {epochs} epoch(s) of {steps} steps "
                           f"({steps / full_steps:.2f} of the train images), re-planned after each")
        stop_at = deadline - self.budget.forward_seconds(val)  # an epoch ends here, whatever its plan, and is validated
        schedule = budget_schedule(self.config.tune_lr, steps, max(1, steps // 2), max(epochs, done + 1), deadline, stop_at, plan)
        return (schedule,), epochs, steps

    def _final_evaluation(self, model: Any, arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                          classes: list[str], train_seconds: float) -> dict[str, Any]:
        from edgecls.training.evaluate import final_metrics

        extra = {"train_seconds": round(train_seconds, 2), **self.speed, "decisions": self.progress.decisions}
        return final_metrics(model, arrays, labels, classes, max(self.config.batch, 64), self.run_dir, extra)

    def _finish(self) -> None:
        from edgecls.training.report import plot_curves

        write_history(self.run_dir, self.progress.rows)
        plot_curves(self.progress.rows, self.run_dir / CURVES_FILE)
        self.progress.phase = "done"
        self._write_state()
        (self.run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
        remove_cache(self.run_dir)  # derived from --data; kept until here, so an interrupted run resumes without decoding again
