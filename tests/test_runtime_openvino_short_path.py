"""OpenVinoBackend.run's short path (one uint8 or float32 array of exactly the compiled shape, issue 12) gives the
generic BaseBackend.run path's result bit for bit, and the same errors. Real tiny IRs converted from onnx.helper graphs."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecls.errors import ConfigError
from edgecls.meta import ModelMeta
from edgecls.postprocess import softmax
from edgecls.runtime import common, load_backend
from edgecls.runtime.common import BaseBackend
from tests.test_runtime_face import SIZE, onnx_model, openvino_model

NEEDED = ("onnx", "onnxruntime", "openvino")
pytestmark = pytest.mark.skipif(any(importlib.util.find_spec(n) is None for n in NEEDED), reason=f"needs {', '.join(NEEDED)}")


def pixels(seed: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def irs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The probabilities IR, and the same IR with meta.json saying "logits" (so run applies softmax)."""
    root = tmp_path_factory.mktemp("ov")
    xml = openvino_model(onnx_model(root / "onnx"), root / "probabilities")
    logits = openvino_model(onnx_model(root / "onnx"), root / "logits")
    meta = ModelMeta.load(logits.parent / "meta.json")
    ModelMeta(meta.architecture, meta.input_size, meta.labels, format="openvino", output="logits").save(logits.parent)
    return {"probabilities": xml, "logits": logits}


def expected(xml: Path, image: np.ndarray, output: str) -> np.ndarray:
    """OpenVINO run directly (same properties as the backend), softmax applied for a "logits" model."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml))
    model.reshape({model.input(0): list(image.shape)})
    properties = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    compiled = core.compile_model(model, "CPU", properties)
    raw = np.array(compiled.create_infer_request().infer({0: image.astype(np.float32)})[0], dtype=np.float32)
    return softmax(raw) if output == "logits" else raw


@pytest.mark.parametrize("output", ["probabilities", "logits"])
def test_short_path_matches_the_generic_path_bit_for_bit(irs: dict[str, Path], output: str, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = load_backend(irs[output], threads=1)
    calls: list[int] = []
    generic_check = common.check_batch

    def counting_check(*args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(1)
        return generic_check(*args, **kwargs)

    monkeypatch.setattr(common, "check_batch", counting_check)
    assert isinstance(backend, BaseBackend)
    for seed in range(4):
        image = pixels(seed)
        calls.clear()
        short = [backend.run(image), backend.run(image.astype(np.float32)), backend.run(np.asfortranarray(image))]
        assert not calls, "a uint8 or float32 array of the compiled shape (any strides) takes the short path"
        generic = BaseBackend.run(backend, image)  # the generic path, as before issue 12's change
        assert calls == [1]
        assert generic.dtype == np.float32 and generic.shape == (1, 3)
        for scores in short:
            assert scores.dtype == np.float32
            np.testing.assert_array_equal(scores, generic)
        # other inputs still go the generic way, and agree: float64, a list
        np.testing.assert_array_equal(backend.run(image.astype(np.float64)), generic)
        np.testing.assert_array_equal(backend.run(image.tolist()), generic)
        assert len(calls) == 3
        np.testing.assert_array_equal(generic, expected(irs[output], image, output))
    batch = pixels(9, n=3)  # more than the static batch: chunks through the generic path, each equal to a single run
    np.testing.assert_array_equal(backend.run(batch), np.concatenate([backend.run(batch[i : i + 1]) for i in range(3)]))


def test_short_path_keeps_the_errors(irs: dict[str, Path]) -> None:
    backend = load_backend(irs["probabilities"])
    with pytest.raises(ConfigError, match=r"takes a batch of shape \(N, 16, 16, 3\); got \(1, 16, 15, 3\)"):
        backend.run(np.zeros((1, SIZE, SIZE - 1, 3), np.uint8))
    backend.close()
    with pytest.raises(ConfigError, match="is closed"):
        backend.run(pixels(0))  # the compiled shape exactly: still refused once closed
