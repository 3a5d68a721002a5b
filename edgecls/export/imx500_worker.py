"""Runs INSIDE the IMX500 toolchain venv (TensorFlow 2.15, Model Compression Toolkit), never in edgecls' own.

    <toolchain python> -I imx500_worker.py convert JOB.json
    <toolchain python> -I imx500_worker.py predict JOB.json

It imports nothing from edgecls (the venv does not have it; `-I` keeps this folder off sys.path). Everything it
reads is data: a JSON job, the run's Keras 3 `.weights.h5` and `.npz` arrays loaded with allow_pickle=False.

convert: rebuild the classifier by backbone name in tf.keras 2.15 with only converter-accepted layers (the input
normalisation as plain arithmetic, ReLU(6.) for ReLU6, no Dropout), load the weights, check the float rebuild
against the reference probabilities edgecls computed, quantize it with MCT (the IMX500 target platform) on the
calibration images, export it with `mct.exporter.keras_export_model`, and run `imxconv-tf` on it.
predict: probabilities of the exported quantized model (MCT's simulation of the IMX500 arithmetic) on images.
Both write RESULT JSON to the path the job names; an error is a JSON {"error": ...} and exit code 3.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FAILED = 3
# imxconv-tf runs short JVM jobs: the C1 JIT alone and the serial GC halved its time on a small network on 2 cores (ConvFe
# 100 s -> 40 s, "Conversion time" 41 s -> 15 s) and made no difference beyond load noise on EfficientNet-Lite0 (2 min 49 s vs
# 2 min 54 s); the network files in packerOut.zip are byte-identical. A JAVA_TOOL_OPTIONS already set wins.
JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
# name -> (width, depth) of EfficientNet-Lite, and the B0 stage list (repeats, kernel, stride, expand, in, out)
LITE_SCALING = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1), "efficientnet_lite2": (1.1, 1.2)}
B0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112),
             (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


class JobError(Exception):
    """A failure to report as one line (the caller turns it into an ExportError)."""


# ----------------------------------------------------------------------------- backbones (tf.keras 2.15)
def _plain_cnn(x: Any, alpha: float | None) -> Any:
    from tensorflow import keras

    width = alpha or 1.0
    for index, filters in enumerate((32, 64, 128, 128)):
        x = keras.layers.Conv2D(max(8, int(filters * width)), 3, padding="same", use_bias=False, name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU(6.0, name=f"relu{index}")(x)
        if min(x.shape[1], x.shape[2]) >= 4:
            x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
    return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def _efficientnet_lite(x: Any, name: str) -> Any:
    """edgecls.zoo.efficientnet_lite's graph with ReLU(6.) layers where it has Activation('relu6') (weightless either way)."""
    import math

    from tensorflow import keras

    layers = keras.layers
    width, depth = LITE_SCALING[name]

    def conv_bn_relu6(x: Any, filters: int, kernel: int, stride: int, prefix: str) -> Any:
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
        x = layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=f"{prefix}_bn")(x)
        return layers.ReLU(6.0, name=f"{prefix}_activation")(x)

    x = conv_bn_relu6(x, 32, 3, 2, "stem")
    for stage, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(B0_STAGES):
        fixed = stage in (0, len(B0_STAGES) - 1)
        count = repeats if fixed else int(math.ceil(depth * repeats))
        in_ch = 32 if stage == 0 else _round_filters(in_ch, width)
        out_ch = _round_filters(out_ch, width)
        for index in range(count):
            block = f"block{stage + 1}{chr(ord('a') + index)}"
            block_in, block_stride = (in_ch, stride) if index == 0 else (out_ch, 1)
            inputs = x
            if expand != 1:
                x = conv_bn_relu6(x, block_in * expand, 1, 1, f"{block}_expand")
            x = layers.DepthwiseConv2D(kernel, strides=block_stride, padding="same", use_bias=False, name=f"{block}_dwconv")(x)
            x = layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=f"{block}_bn")(x)
            x = layers.ReLU(6.0, name=f"{block}_activation")(x)
            x = layers.Conv2D(out_ch, 1, padding="same", use_bias=False, name=f"{block}_project_conv")(x)
            x = layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=f"{block}_project_bn")(x)
            if block_stride == 1 and block_in == out_ch:
                x = layers.Add(name=f"{block}_add")([x, inputs])
    x = conv_bn_relu6(x, 1280, 1, 1, "top")
    return layers.GlobalAveragePooling2D(name="avg_pool")(x)


def _application(name: str, tensor: Any, alpha: float | None) -> Any:
    """Pooled features of a keras.applications backbone built on `tensor` (flat: its layers join the caller's graph)."""
    from tensorflow import keras

    apps = keras.applications
    common: dict[str, Any] = {"include_top": False, "weights": None, "input_tensor": tensor, "pooling": "avg"}
    if name == "mobilenet_v2":
        return apps.MobileNetV2(alpha=alpha or 1.0, **common).output
    if name in ("mobilenet_v3_small_minimalistic", "mobilenet_v3_large_minimalistic"):
        build = apps.MobileNetV3Small if "small" in name else apps.MobileNetV3Large
        return build(alpha=alpha or 1.0, minimalistic=True, include_preprocessing=False, **common).output
    raise JobError(f"backbone '{name}' has no IMX500 rebuild")


def _features(name: str, tensor: Any, alpha: float | None) -> Any:
    if name == "plain_cnn":
        return _plain_cnn(tensor, alpha)
    if name in LITE_SCALING:
        return _efficientnet_lite(tensor, name)
    return _application(name, tensor, alpha)


def _normalise(pixels: Any, spec: dict[str, Any]) -> Any:
    """(x - mean) / std as plain arithmetic on 0..255 RGB pixels: no Rescaling, Normalization or Lambda layer."""
    import tensorflow as tf

    mean, std = [float(v) for v in spec["mean"]], [float(v) for v in spec["std"]]
    x = pixels
    if spec.get("reverse_channels"):
        x = tf.concat([x[..., 2:3], x[..., 1:2], x[..., 0:1]], axis=-1)
    if len(set(mean)) == 1 and len(set(std)) == 1:
        return x * (1.0 / std[0]) + (-mean[0] / std[0])
    scale = tf.constant([1.0 / s for s in std], dtype=tf.float32)
    offset = tf.constant([-m / s for m, s in zip(mean, std)], dtype=tf.float32)
    return x * scale + offset


def rebuild(spec: dict[str, Any]) -> Any:
    """The classifier as edgecls trained it, flat (one functional graph), with the weights of spec['weights']."""
    from tensorflow import keras

    height, width = (int(v) for v in spec["input_size"])
    name, alpha, classes = spec["backbone"], spec.get("alpha"), int(spec["num_classes"])
    # 1. The structure Keras 3 saved (pixels -> normalise -> nested backbone -> head Sequential), so the weights file's
    #    layout matches; weightless layers (normalisation, activations) do not take part in loading.
    pixels = keras.Input((height, width, 3), name="pixels")
    backbone_input = keras.Input((height, width, 3), name="normalized")
    backbone = keras.Model(backbone_input, _features(name, backbone_input, alpha))
    layers = [keras.layers.Dropout(0.0, name="head_dropout"), keras.layers.Dense(classes, activation="softmax", name="logits")]
    head = keras.Sequential(layers, name="head")
    head.build((None, int(backbone.output.shape[-1])))
    nested = keras.Model(pixels, head(backbone(_normalise(pixels, spec))))
    try:
        nested.load_weights(spec["weights"])
    except (ValueError, OSError, KeyError) as exc:
        raise JobError(f"cannot load {spec['weights']} into a rebuilt {name}: {str(exc).strip().splitlines()[0][:300]}") from exc
    # 2. The same graph flat, for MCT: weights copied layer by layer, in order (same builder, same order).
    flat_pixels = keras.Input((height, width, 3), name="pixels")
    features = _features(name, _normalise(flat_pixels, spec), alpha)
    logits = keras.layers.Dense(classes, activation="softmax", name="logits")(features)
    flat = keras.Model(flat_pixels, logits, name=f"{name}_imx500")
    source = [layer for layer in backbone.layers if layer.weights] + [head.get_layer("logits")]
    target = [layer for layer in flat.layers if layer.weights]
    if len(source) != len(target):
        raise JobError(f"the rebuilt {name} has {len(target)} layers with weights, the saved one {len(source)}")
    for old, new in zip(source, target):
        new.set_weights(old.get_weights())
    return flat


# ----------------------------------------------------------------------------- MCT and the converter
TPC_VERSION = "1.0"  # Edge-MDT's IMX500 target platform capabilities v1: 8-bit weights and activations (MCT's default)


def _tpc() -> Any:
    from edgemdt_tpc import get_target_platform_capabilities

    return get_target_platform_capabilities(tpc_version=TPC_VERSION, device_type="imx500")


def quantize(model: Any, calibration: Any, batch: int) -> Any:
    import model_compression_toolkit as mct
    import numpy as np

    images = calibration.astype(np.float32)

    def representative() -> Any:
        for start in range(0, len(images), batch):
            yield [images[start:start + batch]]

    quantized, _ = mct.ptq.keras_post_training_quantization(model, representative, target_platform_capabilities=_tpc())
    return quantized


def convert(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import tensorflow as tf

    tf.keras.utils.set_random_seed(int(job.get("seed", 0)))
    began = time.perf_counter()
    arrays = np.load(job["arrays"], allow_pickle=False)
    model = rebuild(job["spec"])
    check = arrays["check_images"].astype(np.float32)
    float_scores = model.predict(check, batch_size=32, verbose=0)
    float_diff = float(np.abs(float_scores - arrays["check_reference"]).max())
    if float_diff > float(job["float_tolerance"]):
        raise JobError(f"the rebuilt float model differs from the Keras model by {float_diff:.2e} (tolerance {job['float_tolerance']})")
    rebuilt_s = time.perf_counter() - began
    quantized = quantize(model, arrays["calibration"], int(job.get("batch", 16)))
    quantized_s = time.perf_counter() - began - rebuilt_s
    import model_compression_toolkit as mct

    keras_path = Path(job["quantized_model"])
    mct.exporter.keras_export_model(model=quantized, save_model_path=str(keras_path))
    out = Path(job["converter_out"])
    command = [job["converter"], "-i", str(keras_path), "-o", str(out), "--overwrite-output"]
    if job.get("no_input_persistency"):
        command.append("--no-input-persistency")
    began_conversion = time.perf_counter()
    env = dict(os.environ)
    env.setdefault("JAVA_TOOL_OPTIONS", JVM_OPTIONS)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=int(job.get("converter_timeout", 1800)), env=env)
    converter_log = proc.stdout + proc.stderr
    Path(job["converter_log"]).write_text(converter_log, encoding="utf-8")
    return {"float_max_abs_diff": float_diff, "converter_exit": proc.returncode, "converter_command": command,
            "rebuild_seconds": round(rebuilt_s, 2), "quantize_seconds": round(quantized_s, 2),
            "convert_seconds": round(time.perf_counter() - began_conversion, 2), "tensorflow": tf.__version__,
            "mct": getattr(mct, "__version__", "")}


def predict(job: dict[str, Any]) -> dict[str, Any]:
    import model_compression_toolkit as mct
    import numpy as np

    model = mct.keras_load_quantized_model(job["quantized_model"])
    images = np.load(job["arrays"], allow_pickle=False)["images"].astype(np.float32)
    scores = model.predict(images, batch_size=32, verbose=0)
    np.save(job["scores"], np.asarray(scores, dtype=np.float32), allow_pickle=False)
    return {"images": int(len(images))}


def main(argv: list[str]) -> int:
    command, job_path = argv[1], Path(argv[2])
    job = json.loads(job_path.read_text(encoding="utf-8"))
    result_path = Path(job["result"])
    try:
        result = {"convert": convert, "predict": predict}[command](job)
    except JobError as exc:
        result_path.write_text(json.dumps({"error": str(exc)}), encoding="utf-8")
        return FAILED
    except Exception as exc:  # noqa: BLE001  reported as one line by edgecls; the traceback goes to stderr for the log
        import traceback

        traceback.print_exc()
        result_path.write_text(json.dumps({"error": f"{type(exc).__name__}: {str(exc).strip()[:400]}"}), encoding="utf-8")
        return FAILED
    result_path.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
