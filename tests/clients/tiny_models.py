"""Tiny real classifiers for the metadata proofs: trained on Fashion-MNIST for a few seconds, then converted.

The Keras model takes RGB pixels 0..255 and normalises them with a Rescaling layer INSIDE the model
(mean 127, std 128), as every edgecls model does; its ModelMeta says so (normalization_baked_in). The
TFLite conversion follows edgecls' own path (a tf.function with a [1, h, w, 3] signature, converted from
a concrete function with a tf.Module tracking the variables). Used by tests/test_metadata.py and
tests/clients/test_clients.py; imports TensorFlow only inside the functions that need it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecls.data.fashion_mnist import FASHION_MNIST_CLASSES, find_fashion_mnist, load_split
from edgecls.meta import ModelMeta

SIZE = (32, 32)  # (height, width): larger than MIN_INPUT_SIZE, small enough to train in seconds
MEAN = (127.0, 127.0, 127.0)
STD = (128.0, 128.0, 128.0)
LABELS = list(FASHION_MNIST_CLASSES)
SEED = 0


def fashion_rgb(split: str, count: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` Fashion-MNIST images of `split` ("train" or "test") as uint8 RGB at SIZE, and their labels."""
    from PIL import Image

    images, labels = load_split(find_fashion_mnist(), split)
    images, labels = images[offset : offset + count], labels[offset : offset + count]
    resized = np.stack([np.asarray(Image.fromarray(image).resize(SIZE[::-1], Image.Resampling.BILINEAR)) for image in images])
    return np.repeat(resized[..., None], 3, axis=-1), labels.astype(np.int64)


def tiny_meta(**changes: Any) -> ModelMeta:
    meta = ModelMeta(architecture="tiny_cnn", input_size=SIZE, labels=list(LABELS), mean=MEAN, std=STD,
                     training={"run": "runs/tiny-fmnist"}, dataset={"name": "fashion-mnist"},
                     versions={"edgecls": "0.1.0"})
    for key, value in changes.items():
        setattr(meta, key, value)
    return meta.check("tiny_meta")


def train_tiny(train_images: int = 4000, epochs: int = 5) -> Any:
    """A few-layer CNN with the normalisation inside, trained for a few seconds (deterministic seed)."""
    import keras

    keras.utils.set_random_seed(SEED)
    x, y = fashion_rgb("train", train_images)
    inputs = keras.Input((*SIZE, 3), name="pixels")
    # (pixels - 127) / 128 as constants: a Normalization layer's mean/variance variables become graph inputs in tf2onnx
    h = keras.layers.Rescaling(scale=1.0 / STD[0], offset=-MEAN[0] / STD[0])(inputs)
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax", name="probabilities")(h)
    model = keras.Model(inputs, outputs, name="tiny_cnn")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x.astype(np.float32), y, batch_size=64, epochs=epochs, verbose=0)
    return model


def to_tflite(model: Any, precision: str, calibration: np.ndarray | None = None, io_type: str = "uint8") -> bytes:
    """fp32 | fp16 | dynamic | int8 (full integer, `io_type` uint8 | int8 | float I/O) TFLite bytes at batch 1."""
    import tensorflow as tf

    spec = tf.TensorSpec([1, *SIZE, 3], tf.float32, name="pixels")
    serve = tf.function(lambda pixels: model(pixels, training=False), input_signature=[spec])
    holder = tf.Module()
    holder.model_variables = [getattr(v, "value", v) for v in model.variables]
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision in ("fp16", "dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if precision == "int8":
        assert calibration is not None
        images = calibration.astype(np.float32)

        def representative() -> Any:
            for index in range(len(images)):
                yield [images[index : index + 1]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io = {"uint8": tf.uint8, "int8": tf.int8, "float": tf.float32}[io_type]
        converter.inference_input_type = converter.inference_output_type = io
    return bytes(converter.convert())


def to_onnx(model: Any, path: Path) -> Path:
    """fp32 ONNX through tf2onnx, input 'pixels' (batch, h, w, 3), output 'probabilities'."""
    import tensorflow as tf
    import tf2onnx

    spec = tf.TensorSpec([None, *SIZE, 3], tf.float32, name="pixels")
    serve = tf.function(lambda pixels: {"probabilities": model(pixels, training=False)}, input_signature=[spec])
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=17)
    import onnx

    onnx.save(proto, str(path))
    return path


def to_openvino(model: Any) -> Any:
    """An openvino.Model of the Keras model (TensorFlow frontend), dynamic batch, output 'probabilities'."""
    import openvino as ov
    import tensorflow as tf

    spec = tf.TensorSpec([None, *SIZE, 3], tf.float32, name="pixels")
    serve = tf.function(lambda pixels: {"probabilities": model(pixels, training=False)}, input_signature=[spec])
    return ov.convert_model(serve)


def save_artifact(model: Any, folder: Path, fmt: str, precision: str = "fp32", calibration: np.ndarray | None = None,
                  meta: ModelMeta | None = None) -> Path:
    """model.tflite | model.onnx | model.xml (+ .bin) in `folder` with edgecls' metadata embedded and no meta.json beside it:
    what a user copying only the artifact has. fmt: tflite | onnx | openvino; precision: fp32 | fp16 | dynamic | int8 (tflite)."""
    from edgecls.metadata import static_batch, write_onnx_metadata, write_openvino_metadata, write_tflite_metadata

    folder.mkdir(parents=True, exist_ok=True)
    meta = meta or tiny_meta(format=fmt, precision=precision)
    if fmt == "tflite":
        if calibration is None and precision == "int8":
            calibration = fashion_rgb("train", 32, offset=1000)[0]
            calibration[0, 0, 0] = 255  # input range 0..255: uint8 input scale 1, zero point 0
        path = folder / "model.tflite"
        path.write_bytes(write_tflite_metadata(to_tflite(model, precision, calibration, "uint8"), meta))
        return path
    if fmt == "onnx":
        import onnx

        raw = to_onnx(model, folder / ".raw.onnx")
        proto = write_onnx_metadata(onnx.load(str(raw)), meta)
        raw.unlink()
        path = folder / "model.onnx"
        onnx.save(proto, str(path))
        return path
    import openvino as ov

    path = folder / "model.xml"
    ov.save_model(write_openvino_metadata(static_batch(to_openvino(model)), meta), str(path), compress_to_fp16=False)
    return path


def export_artifact(model: Any, folder: Path, fmt: str, precision: str = "fp32", calibration: np.ndarray | None = None) -> Path:
    """The artifact exactly as `edgecls export` publishes it: the format's writer (ExportRequest with export's default
    options: tflite int8 uint8 I/O, a static batch-1 IR), then the metadata that export's post-processing embeds
    (edgecls.export.artifact_metadata.embed_metadata); no meta.json beside it (a lone artifact)."""
    from edgecls.export.artifact_metadata import embed_metadata
    from edgecls.export.base import ExportRequest, artifact_meta
    from edgecls.export.formats import FORMATS

    folder.mkdir(parents=True, exist_ok=True)
    request = ExportRequest(model=model, meta=tiny_meta(), precision=precision, out_dir=folder, calibration=calibration)
    artifact = FORMATS[fmt].load_writer()(request)
    meta = artifact_meta(request.meta, artifact.format, precision, artifact.input_quantization, artifact.output_quantization)
    embed_metadata(artifact.path, artifact.format, meta, "runs/tiny-fmnist")
    return artifact.path


def golden_beside(path: Path, images: np.ndarray, precision: str | None = None, count: int = 8) -> Any:
    """A golden set made from the artifact's own outputs on `images` through edgecls' runtime (what export will do),
    saved as golden.npz beside it; returns the GoldenSet."""
    from edgecls.metadata import make_golden, save_golden
    from edgecls.runtime import load_backend
    from edgecls.runtime.common import describe_runtime

    with load_backend(path) as backend:
        outputs = backend.run(images.astype(np.float32))
        golden = make_golden(images, outputs, list(backend.meta.labels), precision or backend.meta.precision, count,
                             runtime=describe_runtime(backend))
    save_golden(golden, path)
    return golden
