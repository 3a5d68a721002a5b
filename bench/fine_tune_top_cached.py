"""Experiment: fine-tune only a backbone's top on cached stem features (no augmentation), on Fashion-MNIST.

    python bench/fine_tune_top_cached.py PER_CLASS SIZE CUT EPOCHS LR BATCH
    python bench/fine_tune_top_cached.py 6000 48 block3b_add 2 4e-4 64

EfficientNet-Lite0 (offline ImageNet weights) up to CUT (the stem) runs once over every image; the head is trained on
the top's features (8 epochs), then top + head on the cached stem features (BatchNorm frozen, Adam, warm-up + cosine).
Prints each epoch's time and validation accuracy, then the accuracy on the 10,000 official test images. Not edgecls'
recipe: a measurement of what a cached-stem fine-tune reaches (docs/benchmarks.md, session 7).
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    per_class, size, cut, epochs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    lr, batch = float(sys.argv[5]), int(sys.argv[6])
    started = time.perf_counter()
    import keras
    import tensorflow as tf

    from edgecls.data.fashion_mnist import find_fashion_mnist, load_split, select_indices
    from edgecls.zoo.classifier import build_classifier

    keras.utils.set_random_seed(0)
    folder = find_fashion_mnist()
    x, y = load_split(folder, "train")
    x_test, y_test = load_split(folder, "test")
    chosen = select_indices(y, per_class, 0)
    order = np.random.default_rng(0).permutation(len(chosen))
    x, y = x[chosen][order], y[chosen][order]
    n_val = len(x) // 10
    x_val, y_val, x, y = x[:n_val], y[:n_val], x[n_val:], y[n_val:]

    def rgb_at_size(images: np.ndarray) -> np.ndarray:
        chunks = [tf.image.resize(tf.repeat(tf.constant(images[i : i + 2000], tf.float32)[..., None], 3, -1), (size, size)).numpy()
                  for i in range(0, len(images), 2000)]
        return np.concatenate(chunks)

    x, x_val, x_test = rgb_at_size(x), rgb_at_size(x_val), rgb_at_size(x_test)
    print("data", x.shape, x_val.shape, x_test.shape, f"{time.perf_counter() - started:.1f}s", flush=True)
    classifier = build_classifier("efficientnet_lite0", 10, (size, size), "auto")
    backbone, normalize = classifier.backbone, classifier.model.get_layer("normalize")
    cut_tensor = backbone.get_layer(cut).output
    stem, top = keras.Model(backbone.input, cut_tensor), keras.Model(cut_tensor, backbone.output)
    stem_forward = tf.function(lambda images: stem(normalize(images), training=False))

    def stem_features(images: np.ndarray) -> np.ndarray:
        return np.concatenate([stem_forward(tf.constant(images[i : i + 256])).numpy() for i in range(0, len(images), 256)])

    clock = time.perf_counter()
    f_train, f_val, f_test = stem_features(x), stem_features(x_val), stem_features(x_test)
    count = len(x) + len(x_val) + len(x_test)
    print(f"stem features {f_train.shape}: {count / (time.perf_counter() - clock):.0f} images/s", flush=True)
    onehot, onehot_val = keras.utils.to_categorical(y, 10), keras.utils.to_categorical(y_val, 10)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    clock = time.perf_counter()
    top.trainable = False
    head_in, head_in_val = top.predict(f_train, batch_size=256, verbose=0), top.predict(f_val, batch_size=256, verbose=0)
    classifier.head.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    head = classifier.head.fit(head_in, onehot, batch_size=128, epochs=8, validation_data=(head_in_val, onehot_val), verbose=0)
    print(f"head {time.perf_counter() - clock:.1f}s val", [round(v, 3) for v in head.history["val_accuracy"]], flush=True)
    top.trainable = True
    for layer in top.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    inputs = keras.Input(f_train.shape[1:])
    model = keras.Model(inputs, classifier.head(top(inputs, training=False)))
    steps = math.ceil(len(f_train) / batch) * epochs
    schedule = keras.optimizers.schedules.CosineDecay(lr / 20, steps, alpha=0.01, warmup_target=lr, warmup_steps=steps // 20)
    model.compile(keras.optimizers.Adam(schedule), loss, metrics=["accuracy"])

    class EpochTimes(keras.callbacks.Callback):
        began = 0.0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            print(f"epoch {epoch}: {time.perf_counter() - self.began:.1f}s accuracy {logs['accuracy']:.3f} "
                  f"val {logs['val_accuracy']:.3f}", flush=True)

    clock = time.perf_counter()
    model.fit(f_train, onehot, batch_size=batch, epochs=epochs, validation_data=(f_val, onehot_val), verbose=0, callbacks=[EpochTimes()])
    seconds = time.perf_counter() - clock
    predicted = model.predict(f_test, batch_size=256, verbose=0).argmax(1)
    print(f"fine-tune {seconds:.1f}s = {len(f_train) * epochs / seconds:.0f} images/s; test {np.mean(predicted == y_test):.4f}; "
          f"total {time.perf_counter() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main()
