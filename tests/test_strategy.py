"""Several replicas (--strategy mirrored, multi-worker): BatchNorm normalizes with the global batch's statistics."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf
    from edgecls.training.strategy import make_strategy, synchronize_batch_norm
    mirrored = make_strategy("mirrored", tf)  # two logical CPU devices
    import keras

    def moving_mean(strategy, sync):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(momentum=0.0),
                                      keras.layers.Dense(2, activation="softmax")])
            synced = synchronize_batch_norm(model) if sync else 0
            model.compile(optimizer=keras.optimizers.SGD(0.0), loss="categorical_crossentropy")
        x = np.concatenate([np.zeros((4, 4)), np.full((4, 4), 10.0)]).astype(np.float32)  # each replica gets one half
        y = np.eye(2, dtype=np.float32)[[0] * 8]
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, verbose=0)
        unset = synchronize_batch_norm(model, on=False)
        return {"replicas": strategy.num_replicas_in_sync, "synced": synced, "unset": unset,
                "still_synchronized": model.layers[0].synchronized, "moving_mean": model.layers[0].moving_mean.numpy().tolist()}

    print(json.dumps({"one": moving_mean(tf.distribute.get_strategy(), False), "synced": moving_mean(mirrored, True),
                      "plain": moving_mean(mirrored, False)}))
""")


def test_two_replicas_keep_the_moving_statistics_of_one_process_only_when_synchronized() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    one, synced, plain = runs["one"], runs["synced"], runs["plain"]
    assert one["replicas"] == 1 and synced["replicas"] == plain["replicas"] == 2
    assert one["moving_mean"] == pytest.approx([5.0] * 4)  # the whole batch: half zeros, half tens
    assert synced["synced"] == 1 and synced["moving_mean"] == pytest.approx(one["moving_mean"])
    assert synced["unset"] == 1 and synced["still_synchronized"] is False  # saved as a plain model
    assert plain["moving_mean"] == pytest.approx([0.0] * 4)  # what --strategy mirrored did before: the first replica's half
