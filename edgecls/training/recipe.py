"""The fine-tuning recipe: head on the frozen (cached) backbone, then unfreeze and fine-tune."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, ModelError, require
from edgecls.fsutil import write_json
from edgecls.meta import ModelMeta
from edgecls.training.config import TrainConfig
from edgecls.training.pipeline import load_images, make_dataset
from edgecls.training.run_folder import (
    CURVES_FILE, LAST_FILE, MODEL_FILE, STATE_FILE, load_model, save_model, write_history, write_splits,
)


@dataclass
class RunResult:
    run_dir: Path
    meta: ModelMeta
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    seconds: float


def train(data: str | Path | None = None, resume: str | Path | None = None, **options: Any) -> RunResult:
    """Fine-tune a backbone on an ImageFolder tree and write a run folder. See TrainConfig for options.

    `resume=RUN` continues an interrupted run from its last checkpoint with its saved settings.
    """
    if resume is not None:
        run = Path(resume)
        state = _read_state(run)
        if state.get("phase") == "done":
            raise ConfigError(f"run '{run}' already finished", "Start a new run with --out")
        try:
            config = TrainConfig.from_dict({**state["config"], "out": str(run)})
        except TypeError as exc:  # unknown or missing settings: another edgecls version, or an edited file
            raise ModelError(f"'{run / STATE_FILE}' holds settings this edgecls cannot use: {exc}",
                             "Start a new run with --out (or resume with the edgecls version that began it)") from exc
        return _Trainer(config, state).run()
    if data is None:
        raise ConfigError("no --data given", "Pass --data DIR (an ImageFolder tree) or --resume RUN")
    return _Trainer(TrainConfig(data=str(data), **options), None).run()


def _read_state(run: Path) -> dict[str, Any]:
    """The resume state of an interrupted run, or ModelError saying what is wrong with it."""
    path = run / STATE_FILE
    if not path.is_file():
        raise ModelError(f"'{run}' has no {STATE_FILE} to resume from", "Pass a run folder made by 'edgecls train'")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read '{path}': {exc}", "Start a new run with --out; this one cannot be resumed") from exc
    if (not isinstance(state, dict) or not isinstance(state.get("config"), dict) or state.get("phase") not in ("head", "fine_tune", "done")
            or not isinstance(state.get("epochs_done"), int)):
        raise ModelError(f"'{path}' is not an edgecls training state (config, phase, epochs_done)",
                         "Start a new run with --out; this one cannot be resumed")
    return state


def _strategy(name: str, tf: Any) -> Any:
    if name == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if len(gpus) < 2:
            cpus = tf.config.list_physical_devices("CPU")
            try:  # two logical CPU devices let the mirrored path run (and be tested) without GPUs
                tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
            except RuntimeError:
                pass  # devices already initialised in this process
            devices = [d.name for d in tf.config.list_logical_devices("GPU" if gpus else "CPU")]
            return tf.distribute.MirroredStrategy(devices=devices)
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _optimizer(name: str, lr: float, schedule: str, total_steps: int, warmup_steps: int = 0) -> Any:
    import keras

    rate: Any = lr
    if schedule == "cosine" and warmup_steps:  # linear warm-up from lr/20, then cosine decay
        rate = keras.optimizers.schedules.CosineDecay(lr / 20, decay_steps=max(1, total_steps - warmup_steps), alpha=0.01,
                                                      warmup_target=lr, warmup_steps=warmup_steps)
    elif schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total_steps), alpha=0.01)
    elif schedule == "step":
        bounds = [max(1, total_steps // 2), max(2, total_steps * 3 // 4)]
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(bounds, [lr, lr * 0.1, lr * 0.01])
    if name == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9, nesterov=True)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(rate)
    return keras.optimizers.Adam(rate)


def _class_weights(labels: np.ndarray, num_classes: int, mode: str) -> dict[int, float] | None:
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    if mode == "none" or counts.min() == 0:
        return None
    if mode == "auto" and counts.max() < 1.5 * counts.min():
        return None
    weights = counts.sum() / (num_classes * counts)
    return {i: float(w) for i, w in enumerate(weights)}


class _BestWeights:
    """Keeps the weights of the best epoch (val accuracy, then val loss) across both phases."""

    def __init__(self, model: Any) -> None:
        self.model, self.best, self.weights = model, (-math.inf, -math.inf), None

    def callback(self) -> Any:
        import keras

        tracker = self

        class Track(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                logs = logs or {}
                score = (logs.get("val_accuracy", logs.get("accuracy", 0.0)), -logs.get("val_loss", logs.get("loss", 0.0)))
                if score > tracker.best:
                    tracker.best, tracker.weights = score, tracker.model.get_weights()

        return Track()

    def restore(self) -> None:
        if self.weights is not None:
            self.model.set_weights(self.weights)


class _Trainer:
    def __init__(self, config: TrainConfig, resume_state: dict[str, Any] | None) -> None:
        self.config, self.resume_state = config, resume_state
        self.rows: list[dict[str, Any]] = []
        self.speed: dict[str, float] = {}  # images per second of each stage that ran

    def run(self) -> RunResult:
        from rich.console import Console

        self.console = Console(stderr=True)
        start = time.perf_counter()
        tf = require("tensorflow", "train")
        import keras

        config = self.config
        strategy = _strategy(config.strategy, tf)
        keras.utils.set_random_seed(config.seed)
        tf.config.experimental.enable_op_determinism()  # same seed, same weights (also makes tf.data ordered)
        self.gpu = bool(tf.config.list_physical_devices("GPU"))
        if config.mixed_precision == "on" or (config.mixed_precision == "auto" and self.gpu):
            keras.mixed_precision.set_global_policy("mixed_float16")

        from rich.markup import escape

        from edgecls.data.check import cross_split_duplicates
        from edgecls.data.folder import load_splits
        from edgecls.zoo.classifier import build_classifier, check_input_size, resolve_weights, split_classifier
        from edgecls.zoo.registry import get_spec

        spec = get_spec(config.model)
        self.pretrained = resolve_weights(spec, config.weights) is not None
        size = (config.img_size or spec.default_size,) * 2
        check_input_size(spec, size)
        splits = load_splits(config.data, val_split=config.val_split, test_split=config.test_split, seed=config.seed)
        if splits.skipped:
            self.console.print(f"[yellow]warning:[/yellow] skipped {len(splits.skipped)} unreadable image(s), e.g. "
                               f"{escape(str(splits.skipped[0][0]))}: {escape(splits.skipped[0][1])}")
        duplicates = cross_split_duplicates(splits)
        if duplicates:
            example = " and ".join(f"{split}/{path.name}" for split, path in duplicates[0][:2])
            self.console.print(f"[yellow]warning:[/yellow] {len(duplicates)} image(s) appear in more than one split (e.g. {escape(example)}): "
                               f"test and validation results will be optimistic. List them with: edgecls data check {escape(str(config.data))}")
        classes = list(splits.classes)
        self.run_dir = self._prepare_run_dir(config, spec.name)
        write_splits(self.run_dir, Path(splits.root), classes, {"train": splits.train, "val": splits.val, "test": splits.test})
        self.console.print(
            f"data: {len(classes)} classes, {len(splits.train.paths)} train / {len(splits.val.paths)} val / "
            f"{len(splits.test.paths)} test images; model {spec.name} at {size[0]} px; "
            f"{'GPU' if self.gpu else 'CPU'}, {strategy.num_replicas_in_sync} replica(s)"
        )
        arrays = {name: self._load(name, getattr(splits, name).paths, size) for name in ("train", "val", "test")}
        labels = {name: np.asarray(getattr(splits, name).labels, np.int64) for name in ("train", "val", "test")}

        with strategy.scope():
            if self.resume_state is not None and (self.run_dir / LAST_FILE).is_file():
                classifier = split_classifier(load_model(self.run_dir / LAST_FILE))
            else:
                classifier = build_classifier(config.model, len(classes), size, config.weights, config.alpha, config.dropout)
        self.classifier, self.best = classifier, _BestWeights(classifier.model)
        self.class_weight = _class_weights(labels["train"], len(classes), config.class_weights)
        self.state = {"config": config.to_dict(), "phase": "head", "epochs_done": 0, "rows": self.rows}
        if self.resume_state:
            self.rows.extend(self.resume_state.get("rows", []))
        done = self.resume_state or {"phase": "head", "epochs_done": 0}

        train_start = time.perf_counter()
        with strategy.scope():
            if done["phase"] == "head":
                self._train_head(arrays, labels, len(classes), int(done["epochs_done"]))
            if config.fine_tune_epochs and config.unfreeze != 0:
                skip = int(done["epochs_done"]) if done["phase"] == "fine_tune" else 0
                self._fine_tune(arrays, labels, len(classes), skip)
        self.best.restore()
        train_seconds = time.perf_counter() - train_start

        meta = ModelMeta(
            architecture=spec.name, input_size=size, labels=classes, mean=spec.mean, std=spec.std,
            crop_fraction=1.0, training={**config.to_dict(), "train_seconds": round(train_seconds, 2),
                                         "device": "GPU" if self.gpu else "CPU", "replicas": strategy.num_replicas_in_sync},
            dataset={"root": str(Path(splits.root).resolve()), "fingerprint": splits.fingerprint, "presplit": splits.presplit,
                     "counts": {n: len(getattr(splits, n).paths) for n in ("train", "val", "test")}, "skipped": len(splits.skipped)},
            versions=_versions(),
        )
        save_model(classifier.model, self.run_dir / MODEL_FILE)
        meta.save(self.run_dir)
        metrics = self._final_evaluation(classifier.model, arrays, labels, classes, train_seconds)
        self._finish()
        return RunResult(self.run_dir, meta, self.rows, metrics, time.perf_counter() - start)

    def _prepare_run_dir(self, config: TrainConfig, name: str) -> Path:
        run = Path(config.out) if config.out else Path("models") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if self.resume_state is None and (run / MODEL_FILE).exists():
            raise ConfigError(f"run folder '{run}' already holds a trained model", "Pass a new --out, or delete it")
        if run.exists() and not run.is_dir():
            raise ConfigError(f"--out '{run}' is a file", "Pass a folder path to --out")
        try:
            run.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create run folder '{run}': {exc.strerror}", "Pass a writable --out folder") from exc
        return run

    def _load(self, name: str, paths: Any, size: tuple[int, int]) -> np.ndarray:
        from rich.progress import Progress

        with Progress(console=self.console, transient=True) as progress:
            task = progress.add_task(f"decoding {name} images", total=len(paths))
            return load_images(list(paths), size, progress=lambda: progress.advance(task))

    def _callbacks(self, phase: str, epochs: int, steps: int, offset: int, has_val: bool) -> list[Any]:
        import keras

        from edgecls.training.callbacks import HistoryRows, ResumeCheckpoint, RichProgress

        monitor = "val_accuracy" if has_val else "accuracy"
        return [
            HistoryRows(phase, self.rows, offset),
            self.best.callback(),
            keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=max(1, self.config.patience)) if self.config.patience else keras.callbacks.Callback(),
            ResumeCheckpoint(self.run_dir, self.classifier.model, phase, self.state),
            RichProgress(phase, epochs, steps),
        ]

    def _loss(self) -> Any:
        import keras

        return keras.losses.CategoricalCrossentropy(label_smoothing=self.config.label_smoothing)

    def _train_head(self, arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray], num_classes: int, done: int) -> None:
        config, classifier = self.config, self.classifier
        # A pretrained backbone stays frozen (and can be cached); a random one must learn from the start.
        classifier.backbone.trainable = not self.pretrained
        epochs = config.epochs - done
        if epochs <= 0:
            return
        steps = math.ceil(len(arrays["train"]) / config.batch)
        has_val = len(arrays["val"]) > 0
        callbacks = self._callbacks("head", epochs, steps, done, has_val)
        if config.feature_cache and self.pretrained:
            train_x, val_x = self._features(arrays["train"], "train"), self._features(arrays["val"], "val")
            model, fit_x = classifier.head, train_x
            train_y = np.eye(num_classes, dtype=np.float32)[labels["train"]]
            val_data = (val_x, np.eye(num_classes, dtype=np.float32)[labels["val"]]) if has_val else None
        else:
            model = classifier.model
            fit_x = make_dataset(arrays["train"], labels["train"], num_classes, config.batch, True, config.augment, config.seed)
            train_y = None
            val_data = make_dataset(arrays["val"], labels["val"], num_classes, config.batch, False, None, config.seed) if has_val else None
        model.compile(optimizer=_optimizer(config.optimizer, config.head_lr, config.schedule, epochs * steps),
                      loss=self._loss(), metrics=["accuracy"], jit_compile=self.gpu)
        model.fit(fit_x, train_y, batch_size=config.batch if train_y is not None else None, epochs=epochs,
                  validation_data=val_data, class_weight=self.class_weight, callbacks=callbacks, verbose=0, shuffle=train_y is not None)
        self.best.restore()

    def _features(self, images: np.ndarray, name: str) -> np.ndarray:
        """Backbone features computed once: the frozen backbone's output never changes."""
        import tensorflow as tf
        from rich.progress import Progress

        extract = tf.function(lambda x: self.classifier.features(x, training=False))
        batch = max(self.config.batch, 64)
        chunks = []
        with Progress(console=self.console, transient=True) as progress:
            task = progress.add_task(f"backbone features ({name})", total=len(images))
            started = time.perf_counter()
            for start in range(0, len(images), batch):
                chunk = images[start : start + batch].astype(np.float32)
                chunks.append(np.asarray(extract(tf.constant(chunk)), dtype=np.float32))
                progress.advance(task, len(chunk))
        if name == "train" and len(images):
            self.speed["feature_images_per_second"] = round(len(images) / (time.perf_counter() - started), 1)
        return np.concatenate(chunks) if chunks else np.zeros((0, int(self.classifier.features.outputs[0].shape[-1])), np.float32)

    def _fine_tune(self, arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray], num_classes: int, done: int) -> None:
        import keras

        config, classifier = self.config, self.classifier
        classifier.backbone.trainable = True
        weighted = [layer for layer in classifier.backbone.layers if layer.weights]
        if config.unfreeze > 0:
            for layer in weighted[: max(0, len(weighted) - config.unfreeze)]:
                layer.trainable = False
        for layer in classifier.backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        epochs = config.fine_tune_epochs - done
        if epochs <= 0:
            return
        steps = math.ceil(len(arrays["train"]) / config.batch)
        has_val = len(arrays["val"]) > 0
        train_ds = make_dataset(arrays["train"], labels["train"], num_classes, config.batch, True, config.augment, config.seed)
        val_ds = make_dataset(arrays["val"], labels["val"], num_classes, config.batch, False, None, config.seed) if has_val else None
        # Half an epoch of warm-up: fresh optimizer state at full rate jolts the unfrozen backbone.
        warmup = min(epochs * steps // 2, max(1, steps // 2))
        classifier.model.compile(optimizer=_optimizer(config.optimizer, config.tune_lr, config.schedule, epochs * steps, warmup),
                                 loss=self._loss(), metrics=["accuracy"], jit_compile=self.gpu)
        offset = config.epochs + done
        started = time.perf_counter()
        history = classifier.model.fit(train_ds, epochs=epochs, validation_data=val_ds, class_weight=self.class_weight, shuffle=False,
                             callbacks=self._callbacks("fine_tune", epochs, steps, offset, has_val), verbose=0)
        epochs_run = len(history.history.get("loss", []))
        if epochs_run:  # validation time included
            self.speed["fine_tune_images_per_second"] = round(epochs_run * len(arrays["train"]) / (time.perf_counter() - started), 1)

    def _final_evaluation(self, model: Any, arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                          classes: list[str], train_seconds: float) -> dict[str, Any]:
        from edgecls.training.evaluate import evaluate_arrays, write_eval_outputs

        split = "test" if len(arrays["test"]) else "val"
        metrics: dict[str, Any] = {"split": split, "train_seconds": round(train_seconds, 2)}
        if len(arrays[split]):
            report = evaluate_arrays(model, arrays[split], labels[split], classes, batch=max(self.config.batch, 64))
            write_eval_outputs(report, self.run_dir, title=f"{split} split")
            metrics.update(report)
        metrics.update(self.speed)
        write_json(self.run_dir / "metrics.json", metrics)
        return metrics

    def _finish(self) -> None:
        from edgecls.training.report import plot_curves

        write_history(self.run_dir, self.rows)
        plot_curves(self.rows, self.run_dir / CURVES_FILE)
        self.state.update({"phase": "done"})
        write_json(self.run_dir / STATE_FILE, self.state)
        (self.run_dir / LAST_FILE).unlink(missing_ok=True)


def _versions() -> dict[str, str]:
    from edgecls.zoo.classifier import versions

    return versions()
