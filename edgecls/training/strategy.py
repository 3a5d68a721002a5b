"""Where training runs: TensorFlow present (checked without importing it) and the tf.distribute strategy."""
from __future__ import annotations

from typing import Any

from edgecls.errors import MissingDependencyError


def require_tensorflow() -> None:
    """MissingDependencyError naming the extra when TensorFlow is not installed, without importing it yet."""
    import importlib.util

    try:
        found = importlib.util.find_spec("tensorflow") is not None
    except ImportError:
        found = False
    if not found:
        raise MissingDependencyError("tensorflow", "train")


def make_strategy(name: str, tf: Any) -> Any:
    if name == "multi-worker":  # made at the start of the run (training/multi_worker.py), before TensorFlow saw a device
        from edgecls.training.multi_worker import current_strategy

        return current_strategy()
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


def synchronize_batch_norm(model: Any, on: bool = True) -> int:
    """Set `synchronized=True` on every BatchNormalization layer inside `model` (keras' own option: batch statistics
    all-reduced over the replicas, so a training step normalizes with the global batch's, as one process does, and every
    replica keeps the same moving statistics); `on=False` before saving: the model then holds what one process would
    save. Returns how many layers there are."""
    import keras

    count, stack = 0, list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", []))
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = on
            count += 1
    return count
