"""The runtime's public face: one Backend protocol every backend fulfils, one Classifier, helpers out of
`runtime/__init__.py`, and run-time failures of any backend as one typed line (BackendRunError).

Models are real and tiny: ONNX graphs written with onnx.helper (no TensorFlow), OpenVINO IRs converted from
them, and one .tflite converted with TensorFlow where LiteRT needs it.
"""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgecls.errors import ConfigError, EdgeclsError, ImageError, ModelError
from edgecls.meta import ModelMeta
from edgecls.runtime import Backend, BackendRunError, Classifier, load_backend
from tests.conftest import REPO

NEEDED = ("onnx", "onnxruntime", "openvino")
pytestmark = pytest.mark.skipif(any(importlib.util.find_spec(n) is None for n in NEEDED), reason=f"needs {', '.join(NEEDED)}")

SIZE = 16
LABELS = ["red", "green", "blue"]


def onnx_model(folder: Path, *, fail: bool = False, symbolic_classes: bool = False, labels: list[str] | None = None) -> Path:
    """A real ONNX classifier: mean colour -> x10 -> softmax, so a red image is "red".

    fail=True: a Reshape to (-1, 7) that no (N, 16, 16, 3) input fits: it loads and fails at run time.
    symbolic_classes=True: the output's class dimension is declared symbolic, so it is only known when run.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    classes = 7 if fail else 3
    pixels = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])
    probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", "C" if symbolic_classes else classes])
    if fail:
        inits = [numpy_helper.from_array(np.array([-1, 7], np.int64), "shape")]
        nodes = [helper.make_node("Reshape", ["pixels", "shape"], ["scores"], name="impossible_reshape")]
    else:
        inits = [numpy_helper.from_array(np.float32(10 / 255).reshape(()), "gain")]
        nodes = [helper.make_node("ReduceMean", ["pixels"], ["colour"], axes=[1, 2], keepdims=0),
                 helper.make_node("Mul", ["colour", "gain"], ["scores" if not symbolic_classes else "fixed"])]
        if symbolic_classes:  # reshape to (-1, k) where k = 0 * max(pixels) + 3 is computed: no shape inference can know it
            inits += [numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
                      numpy_helper.from_array(np.array([0.0], np.float32), "zero"),
                      numpy_helper.from_array(np.array([3.0], np.float32), "three")]
            nodes += [helper.make_node("ReduceMax", ["pixels"], ["peak"], keepdims=0),
                      helper.make_node("Mul", ["peak", "zero"], ["nothing"]),
                      helper.make_node("Add", ["nothing", "three"], ["k_float"]),
                      helper.make_node("Cast", ["k_float"], ["k"], to=TensorProto.INT64),
                      helper.make_node("Concat", ["minus_one", "k"], ["shape"], axis=0),
                      helper.make_node("Reshape", ["fixed", "shape"], ["scores"])]
    nodes.append(helper.make_node("Softmax", ["scores"], ["probs"], axis=-1))
    model = helper.make_model(helper.make_graph(nodes, "tiny", [pixels], [probs], inits), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    names = labels if labels is not None else ([f"c{i}" for i in range(classes)] if fail else LABELS)
    ModelMeta("tiny_colour", (SIZE, SIZE), names, format="onnx").save(folder)
    return path


def openvino_model(onnx_path: Path, folder: Path) -> Path:
    import openvino as ov

    folder.mkdir(parents=True, exist_ok=True)
    xml = folder / "model.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    (folder / "meta.json").write_bytes((onnx_path.parent / "meta.json").read_bytes())
    return xml


def colour_images() -> np.ndarray:
    images = np.zeros((3, SIZE, SIZE, 3), np.float32)
    for channel in range(3):
        images[channel, ..., channel] = 250.0
    return images


# --- the face: __init__ re-exports only, no backend climbs back up into the package ------------------

RUNTIME = REPO / "edgecls" / "runtime"


def test_runtime_init_only_re_exports() -> None:
    tree = ast.parse((RUNTIME / "__init__.py").read_text())
    kinds = {type(node).__name__ for node in tree.body}
    assert kinds <= {"Expr", "ImportFrom", "Import", "Assign"}, kinds  # docstring, imports, __all__
    assigned = [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)]
    assert assigned == ["__all__"]


def test_backends_import_helpers_from_their_modules_not_the_package() -> None:
    for path in RUNTIME.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "edgecls.runtime", f"{path.name} imports from the package __init__"


def test_public_names_other_modules_use_still_import() -> None:
    from edgecls.runtime import RUNTIMES, Classifier, EdgeTPUError, check_batch, load_backend, run_chunked  # noqa: F401

    assert set(RUNTIMES) == {".tflite", ".onnx", ".xml"} and issubclass(EdgeTPUError, EdgeclsError)


# --- one protocol, fulfilled by every backend ----------------------------------------------------

PROTOCOL_MEMBERS = sorted(
    set(Backend.__annotations__) | {name for name in vars(Backend) if not name.startswith("_") or name in ("__enter__", "__exit__")}
)


def assert_fulfils_protocol(backend: object) -> None:
    missing = [name for name in PROTOCOL_MEMBERS if not hasattr(backend, name)]
    assert not missing, f"{type(backend).__name__} lacks {missing}"
    assert isinstance(backend, Backend)


def test_protocol_names_what_callers_use() -> None:
    used = {"name", "path", "meta", "device", "threads", "precision_ran", "input_hw", "num_classes", "input_quantization",
            "output_quantization", "run", "close", "closed", "__enter__", "__exit__"}
    assert used <= set(PROTOCOL_MEMBERS), used - set(PROTOCOL_MEMBERS)


def test_onnx_and_openvino_backends_fulfil_the_protocol(tmp_path: Path) -> None:
    onnx_path = onnx_model(tmp_path / "onnx")
    for path, name in ((onnx_path, "onnxruntime"), (openvino_model(onnx_path, tmp_path / "ov"), "openvino")):
        with load_backend(path, threads=1) as backend:
            assert_fulfils_protocol(backend)
            assert backend.name == name and backend.path == path and backend.threads == 1
            assert backend.input_hw == (SIZE, SIZE) and backend.num_classes == 3 and backend.input_quantization is None
            assert backend.run(colour_images()).argmax(1).tolist() == [0, 1, 2]
        assert backend.closed
        with pytest.raises(ConfigError, match="is closed"):
            backend.run(colour_images())


@pytest.fixture(scope="module")
def keras_and_tflite(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, Path]:
    """A tiny Keras colour classifier and a .tflite of it with a batch-1 Reshape (fails for batch 2 at run time)."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    import keras
    import tensorflow as tf

    inputs = keras.Input((SIZE, SIZE, 3))
    scores = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Rescaling(10 / 255)(scores)))
    root = tmp_path_factory.mktemp("keras")
    good = root / "good" / "model.tflite"
    good.parent.mkdir()
    good.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    ModelMeta("tiny_colour", (SIZE, SIZE), LABELS, format="tflite").save(good.parent)

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
    def batch_one_only(x: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(tf.reshape(tf.reduce_mean(x, axis=[1, 2]), [1, 3]))

    bad = root / "bad" / "model.tflite"
    bad.parent.mkdir()
    bad.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([batch_one_only.get_concrete_function()], batch_one_only).convert())
    ModelMeta("tiny_colour", (SIZE, SIZE), LABELS, format="tflite").save(bad.parent)
    return model, good, bad


@pytest.mark.slow
def test_keras_and_litert_backends_fulfil_the_protocol_and_agree(keras_and_tflite: tuple[object, Path, Path]) -> None:
    from edgecls.predictor import KerasBackend

    model, good, _ = keras_and_tflite
    keras_backend = KerasBackend(model, ModelMeta("tiny_colour", (SIZE, SIZE), LABELS), "tiny_colour")
    with load_backend(good) as litert:
        for backend in (keras_backend, litert):
            assert_fulfils_protocol(backend)
        assert keras_backend.name == "keras" and keras_backend.input_hw == (SIZE, SIZE) and keras_backend.num_classes == 3
        np.testing.assert_allclose(keras_backend.run(colour_images()), litert.run(colour_images()), atol=1e-5)
        with Classifier(keras_backend) as from_keras, Classifier(good) as from_artifact:  # one classifier type for both
            images = list(colour_images().astype(np.uint8))
            labels = [[c.label for c in top] for top in from_keras.predict(images, top_k=2)]
            assert labels == [[c.label for c in top] for top in from_artifact.predict(images, top_k=2)] and labels[0][0] == "red"
            assert from_keras.source == "tiny_colour (keras, fp32)" and from_artifact.source.endswith("(litert, fp32)")
            assert from_keras.model is model
            with pytest.raises(AttributeError, match="not Keras"):
                from_artifact.model  # noqa: B018


# --- run-time failures: one typed line naming the artifact and the backend ------------------------

def assert_one_line_run_error(caught: pytest.ExceptionInfo[BackendRunError], path: Path, backend: str) -> None:
    message = str(caught.value)
    assert isinstance(caught.value, ModelError) and caught.value.path == path and caught.value.backend == backend
    assert f"'{path}' failed while running in {backend}" in message and "\n" not in message, message
    assert "onnxruntime_src" not in message and ".cpp:" not in message and len(message) < 500, message


def test_onnx_model_failing_at_run_time_is_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = onnx_model(tmp_path, fail=True)
    backend = load_backend(path)  # it loads: the shapes only clash when it runs
    capfd.readouterr()
    with pytest.raises(BackendRunError) as caught:
        backend.run(colour_images()[:1])
    assert_one_line_run_error(caught, path, "onnxruntime")
    assert "Reshape" in str(caught.value) and "cannot be reshaped" in str(caught.value)
    assert capfd.readouterr().err == ""  # onnxruntime's own log line is silenced: the error is said once


def test_openvino_model_failing_at_run_time_is_one_line(tmp_path: Path) -> None:
    path = openvino_model(onnx_model(tmp_path / "onnx", fail=True), tmp_path / "ov")
    with pytest.raises(ModelError, match="cannot give .* a static batch of 1") as at_load:  # OpenVINO fixes batch 1 by default
        load_backend(path)
    assert "\n" not in str(at_load.value)
    backend = load_backend(path, batch=None)  # a dynamic batch loads: the shapes only clash when it runs
    with pytest.raises(BackendRunError) as caught:
        backend.run(colour_images()[:1])
    assert_one_line_run_error(caught, path, "openvino")
    assert "reshape" in str(caught.value).lower()
    with pytest.raises(ConfigError, match="batch must be a positive integer"):
        load_backend(path, batch=0)


@pytest.mark.slow
def test_litert_model_failing_at_run_time_is_one_line(keras_and_tflite: tuple[object, Path, Path]) -> None:
    _, _, bad = keras_and_tflite
    backend = load_backend(bad)
    assert backend.run(colour_images()[:1]).shape == (1, 3)  # batch 1 fits the fixed Reshape
    with pytest.raises(BackendRunError) as caught:
        backend.run(colour_images()[:2])
    assert_one_line_run_error(caught, bad, "litert")


def test_label_count_of_a_dynamic_output_is_checked_when_it_runs(tmp_path: Path) -> None:
    path = onnx_model(tmp_path, symbolic_classes=True, labels=LABELS + ["fish"])
    backend = load_backend(path)  # the class count is unknown until the model runs
    assert backend.num_classes is None
    with pytest.raises(ModelError, match="outputs 3 classes but meta.json lists 4 labels"):
        backend.run(colour_images())


# --- Classifier.predict_each: a bad image is reported, the rest still run --------------------------

def test_predict_each_reports_a_bad_image_and_runs_the_rest(tmp_path: Path) -> None:
    from PIL import Image

    files = []
    for index, image in enumerate(colour_images().astype(np.uint8)):
        files.append(tmp_path / f"{index}.png")
        Image.fromarray(image).save(files[-1])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    files.insert(1, tmp_path / "broken.png")
    with Classifier(onnx_model(tmp_path / "model")) as classifier:
        results = list(classifier.predict_each(files, top_k=1, batch_size=2))
        assert [r.image for r in results] == [str(f) for f in files]
        assert [r.top[0].label for r in results if r.ok] == LABELS
        assert isinstance(results[1].error, ImageError) and "broken.png" in str(results[1].error)
        with pytest.raises(ImageError, match="broken.png"):
            classifier.predict(files)
