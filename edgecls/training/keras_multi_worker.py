"""Two fixes that let Keras 3's `fit` run under tf.distribute.MultiWorkerMirroredStrategy with more than one worker.

Keras 3 (3.15, TensorFlow backend) fails there in two places, both a cross-worker reduction Keras asks for in a
form CollectiveAllReduceStrategy cannot do (keras-team/keras#20585, tensorflow/tensorflow#72388, still open):

1. `TensorFlowTrainer._maybe_symbolic_build` takes the first batch and calls `strategy.reduce("MEAN", (x, y), axis=None)`
   on the whole (x, y) structure, only to learn the shapes it builds the metrics and optimizer with; with two
   workers `CollectiveAllReduceExtended._reduce_to` receives the tuple and fails ("Attempt to convert a value
   (PerReplica...) ... to a Tensor"). The fix builds from this worker's own slice of that batch: same shapes.
2. `reduce_per_replica(..., "auto")` turns into `strategy.reduce("MEAN", v, axis=0)` for multi-worker strategies,
   and every metric a train or test step returns is a scalar ("Invalid reduction dimension 0 for input with 0
   dimensions"). The fix averages scalars across the replicas (axis=None), as the single-worker branch does;
   the result is the same number on every worker, so early stopping and the best epoch agree everywhere.

And one difference from a single process: BatchNormalization in training mode normalizes with the statistics of
the batch it sees, which is each worker's share of the global batch, and updates its moving statistics from it;
so the workers' moving statistics drift apart and the chief's model would keep its share's only. Every
BatchNormalization layer of a model fit here is switched to `synchronized=True` (keras' own option: the batch
statistics are all-reduced over every replica), so each step normalizes with the global batch's statistics, as
one process with the same --batch does, and every worker holds the same moving statistics.

All three are installed only in a process that runs `--strategy multi-worker` and leave every other strategy untouched.
"""
from __future__ import annotations

from typing import Any

_INSTALLED = False


def install() -> None:
    """Patch keras' TensorFlow trainer (once per process)."""
    global _INSTALLED
    if _INSTALLED:
        return
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    original_reduce = tf_trainer.reduce_per_replica
    multi_worker = tf_trainer._collective_all_reduce_multi_worker

    def local_value(strategy: Any, value: Any) -> Any:
        return strategy.experimental_local_results(value)[0] if isinstance(value, tf.distribute.DistributedValues) else value

    def symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
        strategy = self._distribute_strategy
        if strategy is not None and multi_worker(strategy):
            synchronize_batch_norm(self)  # before fit / evaluate trace their step functions
        if strategy is None or iterator is None or not multi_worker(strategy):
            original_build(self, iterator=iterator, data_batch=data_batch)
            return
        for _, _, it in iterator:
            data_batch = tree.map_structure(lambda value: local_value(strategy, value), next(it))
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction not in ("auto", "mean") or not multi_worker(strategy):
            return original_reduce(values, strategy, reduction)

        def mean(value: Any) -> Any:
            scalar = local_value(strategy, value).shape.rank == 0
            return strategy.reduce("MEAN", value, axis=None if scalar else 0)

        return tree.map_structure(mean, values)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    _INSTALLED = True


def synchronize_batch_norm(model: Any) -> int:
    """Set `synchronized=True` on every BatchNormalization layer inside `model`; returns how many there are."""
    import keras

    count, stack = 0, list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", []))
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            count += 1
    return count
