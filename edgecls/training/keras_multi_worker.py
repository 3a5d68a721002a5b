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

(BatchNorm over several workers or devices: training/strategy.py::synchronize_batch_norm, applied by the recipe to
every strategy with more than one replica.)

Both are installed only in a process that runs `--strategy multi-worker` and leave every other strategy untouched.
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
