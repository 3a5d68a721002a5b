"""Runtime backends on tiny REAL artifacts converted from a Keras model once per session.

Tolerances: fp32 artifacts match Keras within 1e-4 (abs); int8 artifacts agree on top-1 for >= 90%
of held-out images with probabilities within 0.1 (abs).
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.errors import ConfigError, EdgeclsError, ModelError
from edgecls.meta import META_FILENAME, ModelMeta, Quantization
from edgecls.postprocess import dequantize, softmax
from edgecls.postprocess import top_k as rank
from edgecls.preprocess import prepare
from edgecls.runtime import Classifier, EdgeTPUError, load_backend
from tests.conftest import REPO

NEEDED = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "openvino", "ai_edge_litert")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(name) is None for name in NEEDED), reason=f"needs {', '.join(NEEDED)}"
    ),
]

SIZE = 16
LABELS = ["red", "green", "blue"]
FP32_ATOL = 1e-4
INT8_TOP1 = 0.90
INT8_ATOL = 0.1


def make_images(seed: int, n: int) -> np.ndarray:
    """Tinted, textured pixels (whole numbers in 0..255) varied enough that the tiny model's classes differ."""
    rng = np.random.default_rng(seed)
    tint = rng.uniform(0, 255, (n, 1, 1, 3))
    ramp = np.linspace(-60, 60, SIZE)[None, None, :, None] * rng.uniform(-1, 1, (n, 1, 1, 3))
    noise = rng.normal(0, 25, (n, SIZE, SIZE, 3))
    return np.clip(np.round(tint + ramp + noise), 0, 255).astype(np.float32)


IMAGES = make_images(seed=1, n=64)  # held out: never used for calibration (seed 2)


@dataclass
class Tiny:
    """The Keras reference and one folder (artifact + meta.json) per artifact kind."""

    reference: Callable[[np.ndarray], np.ndarray]
    paths: dict[str, Path]


def _meta(folder: Path, fmt: str, precision: str, output: str = "probabilities", **quant: Quantization) -> None:
    ModelMeta("tiny_cnn", (SIZE, SIZE), LABELS, format=fmt, precision=precision, output=output, **quant).save(folder)


def _tflite_quant(path: Path) -> dict[str, Quantization]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    result = {}
    details = {"input_quantization": interpreter.get_input_details()[0], "output_quantization": interpreter.get_output_details()[0]}
    for key, detail in details.items():
        scale, zero_point = detail["quantization"]
        result[key] = Quantization(float(scale), int(zero_point), np.dtype(detail["dtype"]).name)
    return result


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    import keras
    import openvino as ov
    import tensorflow as tf
    import tf2onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    root = tmp_path_factory.mktemp("runtime")
    paths: dict[str, Path] = {}

    def folder(kind: str, filename: str) -> Path:
        (root / kind).mkdir()
        paths[kind] = root / kind / filename
        return paths[kind]

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    conv = keras.layers.Conv2D(4, 3, activation="relu")
    dense = keras.layers.Dense(3)
    logits = dense(keras.layers.GlobalAveragePooling2D()(conv(x)))
    model = keras.Model(inputs, keras.layers.Softmax()(logits))
    logits_model = keras.Model(inputs, logits)
    # Fixed random weights, nudged so the dominant colour picks the class (every class occurs).
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 0.05, (3, 3, 3, 4))
    for channel in range(3):
        kernel[:, :, channel, channel] += 1 / 9
    conv.set_weights([kernel, rng.normal(0, 0.05, 4)])
    dense.set_weights([rng.normal(0, 0.5, (4, 3)) + np.pad(6 * np.eye(3), ((0, 1), (0, 0))), rng.normal(0, 0.1, 3)])

    def static_batch(m: keras.Model) -> keras.Model:  # batch 1, as the Edge TPU needs
        fixed = keras.Input((SIZE, SIZE, 3), batch_size=1)
        return keras.Model(fixed, m(fixed))

    calibration = make_images(seed=2, n=64)

    def representative():
        for image in calibration:
            yield [image[None]]

    def tflite(m: keras.Model, int8: bool) -> bytes:
        converter = tf.lite.TFLiteConverter.from_keras_model(m)
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
        return converter.convert()

    folder("tflite", "model.tflite").write_bytes(tflite(static_batch(model), int8=False))
    folder("tflite_dynamic", "model.tflite").write_bytes(tflite(model, int8=False))
    folder("tflite_int8", "model_int8.tflite").write_bytes(tflite(static_batch(model), int8=True))
    folder("tflite_int8_logits", "model_int8.tflite").write_bytes(tflite(static_batch(logits_model), int8=True))
    _meta(paths["tflite"].parent, "tflite", "fp32")
    _meta(paths["tflite_dynamic"].parent, "tflite", "fp32")
    _meta(paths["tflite_int8"].parent, "tflite", "int8", **_tflite_quant(paths["tflite_int8"]))
    _meta(paths["tflite_int8_logits"].parent, "tflite", "int8", "logits", **_tflite_quant(paths["tflite_int8_logits"]))

    # ONNX: tf2onnx.convert.from_keras works with Keras 3.15 + TF 2.21 (dynamic batch, NHWC).
    spec = [tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="pixels")]
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(folder("onnx", "model.onnx")))
    _meta(paths["onnx"].parent, "onnx", "fp32")

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"pixels": image[None]} for image in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(
        str(paths["onnx"]), str(folder("onnx_qdq", "model_int8.onnx")), Calibration(),
        quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
    )
    _meta(paths["onnx_qdq"].parent, "onnx", "int8")

    # OpenVINO IR from the ONNX files. save_model compresses weights to fp16 unless told not to.
    ov.save_model(ov.convert_model(str(paths["onnx"])), str(folder("openvino", "model.xml")), compress_to_fp16=False)
    ov.save_model(ov.convert_model(str(paths["onnx"])), str(folder("openvino_fp16w", "model.xml")))
    ov.save_model(ov.convert_model(str(paths["onnx_qdq"])), str(folder("openvino_int8", "model.xml")))
    for kind, precision in (("openvino", "fp32"), ("openvino_fp16w", "fp16"), ("openvino_int8", "int8")):
        _meta(paths[kind].parent, "openvino", precision)

    def reference(batch: np.ndarray) -> np.ndarray:
        return np.asarray(model(tf.constant(batch, tf.float32), training=False))

    predicted = reference(IMAGES).argmax(axis=1)
    assert len(set(predicted.tolist())) == 3, "test images must exercise every class"
    return Tiny(reference, paths)


def copy_artifact(path: Path, dest: Path, name: str | None = None) -> Path:
    """Copy an artifact (and an IR's .bin) into `dest`, without meta.json."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / (name or path.name)
    shutil.copy(path, target)
    if path.suffix == ".xml":
        shutil.copy(path.with_suffix(".bin"), target.with_suffix(".bin"))
    return target


# --- numbers ------------------------------------------------------------------------------------

FP32_PRECISION = {"tflite": "fp32", "tflite_dynamic": "fp32", "onnx": "fp32", "openvino": "f32"}


@pytest.mark.parametrize("kind", sorted(FP32_PRECISION))
def test_fp32_artifacts_match_keras(tiny: Tiny, kind: str) -> None:
    backend = load_backend(tiny.paths[kind], threads=2)
    probabilities = backend.run(IMAGES)
    assert probabilities.shape == (len(IMAGES), 3) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, tiny.reference(IMAGES), atol=FP32_ATOL, rtol=0)
    assert backend.precision_ran == FP32_PRECISION[kind]
    assert backend.threads == 2 and backend.meta.labels == LABELS


INT8_PRECISION = {
    "tflite_int8": "int8 (uint8 I/O)",
    "tflite_int8_logits": "int8 (uint8 I/O)",
    "onnx_qdq": "int8 (QDQ)",
    "openvino_int8": "int8 (f32 elsewhere)",
}


@pytest.mark.parametrize("kind", sorted(INT8_PRECISION))
def test_int8_artifacts_agree_with_keras(tiny: Tiny, kind: str) -> None:
    backend = load_backend(tiny.paths[kind])
    probabilities, reference = backend.run(IMAGES), tiny.reference(IMAGES)
    agreement = float(np.mean(probabilities.argmax(1) == reference.argmax(1)))
    assert agreement >= INT8_TOP1, agreement
    assert float(np.abs(probabilities - reference).max()) <= INT8_ATOL
    assert backend.precision_ran == INT8_PRECISION[kind]


def test_openvino_fp16_weights_are_reported(tiny: Tiny) -> None:
    backend = load_backend(tiny.paths["openvino_fp16w"])
    assert backend.precision_ran == "f32 (fp16 weights)"
    np.testing.assert_allclose(backend.run(IMAGES), tiny.reference(IMAGES), atol=1e-2, rtol=0)


# --- batches and quantized I/O ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["tflite", "tflite_int8"])
def test_static_batch_tflite_runs_any_batch(tiny: Tiny, kind: str) -> None:
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_path=str(tiny.paths[kind])).get_input_details()[0]
    assert list(detail["shape_signature"]) == [1, SIZE, SIZE, 3]  # static batch 1, as for the Edge TPU
    backend = load_backend(tiny.paths[kind])
    batch = backend.run(IMAGES[:5])
    singles = np.concatenate([backend.run(IMAGES[i : i + 1]) for i in range(5)])
    np.testing.assert_array_equal(batch, singles)
    assert backend.run(IMAGES[:0]).shape == (0, 3)


def test_dynamic_batch_tflite_resizes(tiny: Tiny) -> None:
    backend = load_backend(tiny.paths["tflite_dynamic"])
    for n in (7, 3, 7):
        np.testing.assert_allclose(backend.run(IMAGES[:n]), tiny.reference(IMAGES[:n]), atol=FP32_ATOL, rtol=0)


def test_uint8_input_takes_raw_pixels(tiny: Tiny) -> None:
    backend = load_backend(tiny.paths["tflite_int8"])
    quant = backend.input_quantization
    assert quant is not None and quant.dtype == "uint8" and quant.zero_point == 0 and abs(quant.scale - 1) < 0.01
    extremes = np.stack([np.zeros((SIZE, SIZE, 3)), np.full((SIZE, SIZE, 3), 255.0), IMAGES[0], IMAGES[1]])
    probabilities, reference = backend.run(extremes), tiny.reference(extremes)
    np.testing.assert_array_equal(probabilities.argmax(1), reference.argmax(1))
    assert float(np.abs(probabilities - reference).max()) <= INT8_ATOL


def test_uint8_output_with_zero_point_is_dequantized(tiny: Tiny) -> None:
    from ai_edge_litert.interpreter import Interpreter

    path = tiny.paths["tflite_int8_logits"]
    backend = load_backend(path)
    quant = backend.output_quantization
    assert quant is not None and quant.dtype == "uint8" and quant.zero_point != 0  # logits: asymmetric range
    # By hand: the raw uint8 logits, cast before subtracting the zero point, then softmax.
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    image = IMAGES[:1]
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image.astype(np.uint8))  # scale ~1, zp 0
    interpreter.invoke()
    raw = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    by_hand = softmax((raw.astype(np.float64) - quant.zero_point) * quant.scale)
    np.testing.assert_allclose(backend.run(image), by_hand, atol=1e-5)
    # The helper itself: values below the zero point must go negative, not wrap around.
    np.testing.assert_allclose(
        dequantize(np.array([0, quant.zero_point, 255], np.uint8), quant),
        np.array([-quant.zero_point, 0, 255 - quant.zero_point]) * quant.scale, rtol=1e-6,
    )


# --- OpenVINO precision hints -------------------------------------------------------------------

def test_openvino_precision_hint(tiny: Tiny) -> None:
    import openvino as ov

    xml = tiny.paths["openvino"]
    assert load_backend(xml).precision_ran == "f32"  # the default for CPU
    assert load_backend(xml, device="CPU", precision_hint="f32").precision_ran == "f32"
    bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert load_backend(xml, precision_hint="auto").precision_ran == ("bf16" if bf16 else "f32")
    with pytest.raises(ConfigError, match="precision_hint 'fp64'"):
        load_backend(xml, precision_hint="fp64")


# --- meta.json contract and broken files --------------------------------------------------------

ONE_PER_FORMAT = ["tflite", "onnx", "openvino"]


@pytest.mark.parametrize("kind", ONE_PER_FORMAT)
def test_wrong_label_count_is_a_model_error(tiny: Tiny, kind: str, tmp_path: Path) -> None:
    artifact = copy_artifact(tiny.paths[kind], tmp_path)
    ModelMeta("tiny_cnn", (SIZE, SIZE), LABELS + ["fish"]).save(tmp_path)
    with pytest.raises(ModelError, match="outputs 3 classes but .* lists 4 labels"):
        load_backend(artifact)


@pytest.mark.parametrize("kind", ONE_PER_FORMAT)
def test_wrong_input_size_is_a_model_error(tiny: Tiny, kind: str, tmp_path: Path) -> None:
    artifact = copy_artifact(tiny.paths[kind], tmp_path)
    ModelMeta("tiny_cnn", (32, 24), LABELS).save(tmp_path)
    with pytest.raises(ModelError, match="takes 16x16 input but .* says input_size 32x24"):
        load_backend(artifact)


@pytest.mark.parametrize("kind", ONE_PER_FORMAT)
def test_missing_meta_is_a_model_error(tiny: Tiny, kind: str, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=META_FILENAME):
        load_backend(copy_artifact(tiny.paths[kind], tmp_path))


@pytest.mark.parametrize("kind", ONE_PER_FORMAT)
def test_truncated_artifact_is_a_one_line_model_error(tiny: Tiny, kind: str, tmp_path: Path) -> None:
    artifact = copy_artifact(tiny.paths[kind], tmp_path)
    shutil.copy(tiny.paths[kind].parent / META_FILENAME, tmp_path)
    artifact.write_bytes(artifact.read_bytes()[: artifact.stat().st_size // 2])
    with pytest.raises(ModelError) as caught:
        load_backend(artifact)
    assert str(artifact) in str(caught.value) and "\n" not in str(caught.value)


def test_openvino_without_its_bin_is_a_model_error(tiny: Tiny, tmp_path: Path) -> None:
    artifact = copy_artifact(tiny.paths["openvino"], tmp_path)
    shutil.copy(tiny.paths["openvino"].parent / META_FILENAME, tmp_path)
    artifact.with_suffix(".bin").unlink()
    with pytest.raises(ModelError, match=r"model\.bin' is missing"):
        load_backend(artifact)


def test_unknown_suffix_and_bad_arguments(tiny: Tiny, tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"suffix '\.pt'"):
        load_backend(tmp_path / "model.pt")
    with pytest.raises(ModelError, match=r"\.xml beside it"):
        load_backend(tiny.paths["openvino"].with_suffix(".bin"))
    with pytest.raises(ModelError, match="does not exist"):
        load_backend(tmp_path / "missing.onnx")
    with pytest.raises(ConfigError, match="Did you mean 'precision_hint'"):
        load_backend(tiny.paths["openvino"], precision_hnt="f32")
    with pytest.raises(ConfigError, match="threads"):
        load_backend(tiny.paths["onnx"], threads=0)
    for kind in ONE_PER_FORMAT:
        with pytest.raises(ConfigError, match="device 'quantum'"):
            load_backend(tiny.paths[kind], device="quantum")
    with pytest.raises(ConfigError, match=r"\(N, 16, 16, 3\); got \(16, 16, 3\)"):
        load_backend(tiny.paths["onnx"]).run(IMAGES[0])


def test_onnx_providers(tiny: Tiny) -> None:
    import onnxruntime as ort

    assert load_backend(tiny.paths["onnx"]).providers == ["CPUExecutionProvider"]
    assert load_backend(tiny.paths["onnx"], providers=["CPUExecutionProvider"]).providers == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ConfigError, match="CUDAExecutionProvider"):
            load_backend(tiny.paths["onnx"], device="cuda")


def _libedgetpu_present() -> bool:
    import ctypes

    from edgecls.runtime.litert import edgetpu_library

    try:
        ctypes.CDLL(edgetpu_library())
        return True
    except OSError:
        return False


@pytest.mark.skipif(_libedgetpu_present(), reason="libedgetpu is installed here")
def test_coral_without_libedgetpu_says_how_to_install(tiny: Tiny, tmp_path: Path) -> None:
    with pytest.raises(EdgeTPUError) as caught:
        load_backend(tiny.paths["tflite_int8"], device="coral")
    assert "libedgetpu" in str(caught.value) and "sudo apt-get install libedgetpu1-std" in str(caught.value)
    assert isinstance(caught.value, EdgeclsError)
    compiled = copy_artifact(tiny.paths["tflite_int8"], tmp_path, "model_edgetpu.tflite")  # the name alone asks for the TPU
    shutil.copy(tiny.paths["tflite_int8"].parent / META_FILENAME, tmp_path)
    with pytest.raises(EdgeTPUError, match="coral.ai/docs/accelerator/get-started"):
        load_backend(compiled)


# --- Classifier ---------------------------------------------------------------------------------

def test_classifier_predicts_paths_and_arrays(tiny: Tiny, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    arrays = [np.clip(rng.normal(c, 20, (20, 24, 3)), 0, 255).astype(np.uint8) for c in (30, 128, 220)]
    files = []
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(tmp_path / f"{i}.png")
        files.append(tmp_path / f"{i}.png")
    with Classifier(tiny.paths["onnx"], threads=1) as classifier:
        from_files = classifier.predict(files, top_k=2)
        from_arrays = classifier.predict(arrays, top_k=2)
        assert classifier.precision_ran == "fp32"
        probabilities = classifier.predict_arrays(np.stack([prepare(a, classifier.meta) for a in arrays]))
    assert from_files == from_arrays and len(from_files) == 3
    for ranked, scores in zip(from_files, probabilities):
        assert len(ranked) == 2 and ranked == rank(scores, LABELS, 2) and ranked[0].label in LABELS
    single = Classifier(tiny.paths["tflite"]).predict(files[0], top_k=1)  # one path, static-batch .tflite
    assert len(single) == 1 and single[0][0].label == from_files[0][0].label


# --- no TensorFlow on the runtime path ----------------------------------------------------------

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = {blocked!r}
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked in this test", name=name)
    sys.meta_path.insert(0, Blocker())
    """
)


def _run_blocked(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    script = BLOCKER.format(blocked=blocked) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_backends_run_without_tensorflow(tiny: Tiny, tmp_path: Path) -> None:
    """Like a Pi with edgecls[pi]: no tensorflow, keras or onnx package; inference still runs."""
    np.save(tmp_path / "images.npy", IMAGES[:8])
    kinds = ["tflite", "tflite_int8", "onnx", "onnx_qdq", "openvino"]
    proc = _run_blocked(
        ("tensorflow", "keras", "tf_keras", "onnx"),
        f"""
        import json, sys
        import numpy as np
        from edgecls.runtime import load_backend
        images = np.load({str(tmp_path / "images.npy")!r})
        out = {{}}
        for kind, path in {[(k, str(tiny.paths[k])) for k in kinds]!r}:
            backend = load_backend(path)
            out[kind] = {{"precision": backend.precision_ran, "name": backend.name, "probabilities": backend.run(images).tolist()}}
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "onnx"))
        print(json.dumps({{"results": out, "heavy": heavy}}))
        """,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    reference = tiny.reference(IMAGES[:8])
    results = report["results"]
    assert results["tflite"]["name"] == "litert" and results["onnx"]["name"] == "onnxruntime"
    assert results["onnx_qdq"]["precision"] == "int8 (QDQ)"  # found without the onnx package
    assert results["tflite_int8"]["precision"] == "int8 (uint8 I/O)"
    for kind in ("tflite", "onnx", "openvino"):
        np.testing.assert_allclose(results[kind]["probabilities"], reference, atol=FP32_ATOL, rtol=0)
    for kind in ("tflite_int8", "onnx_qdq"):
        assert float(np.abs(np.array(results[kind]["probabilities"]) - reference).max()) <= INT8_ATOL


def test_missing_runtime_packages_name_the_extra(tiny: Tiny) -> None:
    proc = _run_blocked(
        ("tensorflow", "keras", "ai_edge_litert", "tflite_runtime", "onnxruntime", "openvino"),
        f"""
        from edgecls.errors import MissingDependencyError
        from edgecls.runtime import load_backend
        for path in {[str(tiny.paths[k]) for k in ONE_PER_FORMAT]!r}:
            try:
                load_backend(path)
            except MissingDependencyError as exc:
                print(exc)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3, proc.stdout
    assert "'ai_edge_litert'" in lines[0] and "edgecls[pi]" in lines[0]
    assert "'onnxruntime'" in lines[1] and "pip install onnxruntime" in lines[1]
    assert "'openvino'" in lines[2] and "edgecls[intel]" in lines[2]


def test_tensorflow_lite_is_the_last_fallback(tiny: Tiny) -> None:
    proc = _run_blocked(
        ("ai_edge_litert", "tflite_runtime"),
        f"""
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        from edgecls.runtime import load_backend
        backend = load_backend({str(tiny.paths["tflite_int8"])!r})
        print(backend.name, backend.precision_ran)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "tensorflow-lite int8 (uint8 I/O)"
