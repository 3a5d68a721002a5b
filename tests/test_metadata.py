"""edgecls.metadata on real tiny models: each format's standard metadata is written, read back without
TensorFlow, and the runtimes (LiteRT, ONNX Runtime, OpenVINO) still give identical outputs; golden sets
diagnose what a runtime got wrong. Third-party clients (MediaPipe, Model API) are in tests/clients/.
"""
from __future__ import annotations

import ast
import dataclasses
import io
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecls.errors import ModelError
from edgecls.meta import ModelMeta
from edgecls.metadata import (
    GOLDEN_FILE,
    META_KEY,
    OUTPUT_NAME,
    artifact_info,
    check_golden,
    client_notes,
    load_golden,
    make_golden,
    model_info,
    read_embedded_meta,
    read_onnx_meta,
    read_onnx_props,
    read_openvino_meta,
    read_rt_info,
    read_tflite_meta,
    read_tflite_standard,
    save_golden,
    static_batch,
    write_onnx_metadata,
    write_openvino_metadata,
    write_tflite_metadata,
    write_tflite_metadata_file,
)
from edgecls.metadata.golden import select_golden, tolerance_for
from tests.clients.tiny_models import LABELS, SIZE, fashion_rgb, tiny_meta, to_onnx, to_openvino, to_tflite
from tests.conftest import REPO
from tests.test_tf_free import BLOCKER

TFLITE_CASES = {  # name -> (precision, io_type)
    "fp32": ("fp32", "uint8"), "fp16": ("fp16", "uint8"), "dynamic": ("dynamic", "uint8"),
    "int8-uint8": ("int8", "uint8"), "int8-int8": ("int8", "int8"), "int8-float": ("int8", "float"),
}


@pytest.fixture(scope="module")
def keras_model() -> Any:
    """The tiny CNN barely trained (seeded): the metadata proofs need real graphs, not good scores."""
    import keras

    from tests.clients.tiny_models import train_tiny

    keras.utils.set_random_seed(0)
    return train_tiny(train_images=64, epochs=1)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return fashion_rgb("test", 16)[0]


@pytest.fixture(scope="module")
def tflite_files(keras_model: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    calibration = fashion_rgb("train", 32, offset=1000)[0]
    calibration[0, 0, 0] = 255  # the input range spans 0..255, so uint8 input quantisation is scale 1, zero point 0
    return {name: to_tflite(keras_model, precision, calibration, io_type) for name, (precision, io_type) in TFLITE_CASES.items()}


def _litert(model: bytes, images: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for image in images:
        pixels = image[None].astype(np.int16) - 128 if source["dtype"] == np.int8 else image[None]  # int8 I/O: scale 1, zero point -128
        interpreter.set_tensor(source["index"], pixels.astype(source["dtype"]))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target["index"])[0].copy())
    return np.stack(outputs)


# ----------------------------------------------------------------------------- TFLite
@pytest.mark.parametrize("case", list(TFLITE_CASES))
def test_tflite_metadata_round_trips_and_runs_identically(case: str, tflite_files: dict[str, bytes], images: np.ndarray) -> None:
    plain = tflite_files[case]
    meta = tiny_meta(format="tflite", precision=TFLITE_CASES[case][0])
    written = write_tflite_metadata(plain, meta)

    assert read_tflite_meta(written).to_dict() == meta.to_dict()  # type: ignore[union-attr]
    standard = read_tflite_standard(written)
    assert standard is not None
    # normalisation is inside the model: the client must pass pixels 0..255 through unchanged
    assert (standard.mean, standard.std) == ([0.0] * 3, [1.0] * 3)
    assert (standard.input_min, standard.input_max) == ([0.0] * 3, [255.0] * 3)
    assert standard.color_space == 1 and standard.default_size == SIZE and standard.input_name == "pixels"
    assert standard.output_name == OUTPUT_NAME and standard.labels_file == "labels.txt" and standard.labels == LABELS
    assert (standard.output_min, standard.output_max, standard.output_process_units) == ([0.0], [1.0], 0)  # no score calibration
    assert standard.min_parser_version == "1.0.0" and standard.version and standard.license and "tiny_cnn" in (standard.name or "")
    with zipfile.ZipFile(io.BytesIO(written)) as archive:
        assert archive.namelist() == ["labels.txt"]
    # the runtime gives exactly what it gave before the metadata
    np.testing.assert_array_equal(_litert(written, images), _litert(plain, images))
    # the writer is repeatable: a second write replaces, never stacks
    again = write_tflite_metadata(written, meta)
    assert read_tflite_standard(again).labels == LABELS  # type: ignore[union-attr]
    with zipfile.ZipFile(io.BytesIO(again)) as archive:
        assert archive.namelist() == ["labels.txt"]
    np.testing.assert_array_equal(_litert(again, images), _litert(plain, images))


def test_tflite_existing_inspector_still_reads_the_meta(tflite_files: dict[str, bytes], tmp_path: Path) -> None:
    from edgecls.export.tflite_inspect import read_embedded_meta as inspect_meta

    meta = tiny_meta(format="tflite")
    path = tmp_path / "model.tflite"
    path.write_bytes(tflite_files["fp32"])
    write_tflite_metadata_file(path, meta)
    assert inspect_meta(path) == json.loads(json.dumps(meta.to_dict()))
    assert read_embedded_meta(path).to_dict() == meta.to_dict()  # type: ignore[union-attr]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]  # no temp file left


def test_tflite_normalisation_outside_the_model_is_written_as_is(tflite_files: dict[str, bytes]) -> None:
    meta = tiny_meta(normalization_baked_in=False, mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4))
    standard = read_tflite_standard(write_tflite_metadata(tflite_files["fp32"], meta))
    assert standard is not None
    assert standard.mean == pytest.approx([123.7, 116.3, 103.5]) and standard.std == pytest.approx([58.4, 57.1, 57.4])
    assert standard.input_max == pytest.approx([(255 - m) / s for m, s in zip(meta.mean, meta.std)])


@pytest.mark.parametrize(("change", "fragment"), [
    ({"input_size": (48, 48)}, "input is [1, 32, 32, 3] but the meta says [1, 48, 48, 3]"),
    ({"labels": ["a", "b"]}, "lists 2 labels"),
    ({"color_order": "BGR"}, "only describe RGB"),
    ({"labels": [*LABELS[:9], "two\nlines"]}, "holds a control character"),  # meta's own check, before the writer's
])
def test_tflite_writer_refuses_a_meta_that_does_not_fit(change: dict[str, Any], fragment: str, tflite_files: dict[str, bytes]) -> None:
    meta = dataclasses.replace(tiny_meta(), **change)
    with pytest.raises(ModelError) as raised:
        write_tflite_metadata(tflite_files["fp32"], meta)
    assert fragment in str(raised.value) and "\n" not in str(raised.value).replace("two\nlines", "")


def test_tflite_readers_on_plain_and_damaged_files(tflite_files: dict[str, bytes], tmp_path: Path) -> None:
    assert read_tflite_meta(tflite_files["fp32"]) is None and read_tflite_standard(tflite_files["fp32"]) is None
    written = write_tflite_metadata(tflite_files["fp32"], tiny_meta())
    damaged = tmp_path / "cut.tflite"
    damaged.write_bytes(written[:40])
    with pytest.raises(ModelError, match="not a readable TFLite file"):
        read_tflite_meta(damaged)
    with pytest.raises(ModelError, match="cannot read"):
        read_tflite_meta(tmp_path / "missing.tflite")


def test_tflite_client_notes_name_inputs_mediapipe_cannot_take(tflite_files: dict[str, bytes], keras_model: Any) -> None:
    assert client_notes(tflite_files["int8-uint8"]) == [] and client_notes(tflite_files["fp32"]) == []
    assert "int8 input" in client_notes(tflite_files["int8-int8"])[0]
    # calibration images that never reach 255 give a uint8 input scale below 1: raw-pixel clients would be off
    narrow = to_tflite(keras_model, "int8", np.minimum(fashion_rgb("train", 8, offset=1000)[0], 250), "uint8")
    assert "scale 0.98" in client_notes(write_tflite_metadata(narrow, tiny_meta()))[0]


# ----------------------------------------------------------------------------- ONNX
def test_onnx_metadata_props_round_trip_and_run_identically(keras_model: Any, images: np.ndarray, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    plain = to_onnx(keras_model, tmp_path / "plain.onnx")
    proto = onnx.load(str(plain))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "kept_by_another_tool", "yes"
    meta = tiny_meta(format="onnx")
    info = artifact_info(meta, date="2026-11-30T00:00:00+00:00", source_run="runs/tiny", licence="Apache-2.0")
    write_onnx_metadata(proto, meta, info)
    write_onnx_metadata(proto, meta, info)  # twice: replaced, never duplicated
    onnx.checker.check_model(proto, full_check=True)
    path = tmp_path / "model.onnx"
    onnx.save(proto, str(path))

    props = read_onnx_props(path)
    assert props == {p.key: p.value for p in onnx.load(str(path)).metadata_props}  # the wire reader sees what onnx sees
    assert len(proto.metadata_props) == len(props)
    assert props["kept_by_another_tool"] == "yes"
    assert {int(k): v for k, v in ast.literal_eval(props["names"]).items()} == dict(enumerate(LABELS))  # Ultralytics reads it so
    assert json.loads(props["labels"]) == LABELS and json.loads(props["imgsz"]) == list(SIZE)
    assert (props["layout"], props["task"], props["batch"]) == ("NHWC", "classify", "dynamic")
    assert (props["mean"], props["std"]) == ("baked in", "baked in")
    assert (props["date"], props["source_run"], props["license"], props["version"]) == (info.date, "runs/tiny", "Apache-2.0", info.version)
    assert props["model_info model_type"] == "Classification" and props["model_info mean_values"] == "0 0 0"
    assert read_onnx_meta(path).to_dict() == meta.to_dict()  # type: ignore[union-attr]
    assert read_embedded_meta(path).to_dict() == meta.to_dict()  # type: ignore[union-attr]
    feed = {"pixels": images.astype(np.float32)}
    np.testing.assert_array_equal(ort.InferenceSession(str(path)).run(None, feed)[0], ort.InferenceSession(str(plain)).run(None, feed)[0])
    assert read_onnx_meta(plain) is None
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        read_onnx_props(cut)


# ----------------------------------------------------------------------------- OpenVINO
def test_openvino_rt_info_static_batch_and_identical_outputs(keras_model: Any, images: np.ndarray, tmp_path: Path) -> None:
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32"}

    def run(model: Any) -> np.ndarray:
        compiled = core.compile_model(model, "CPU", config)
        return np.concatenate([compiled(image[None].astype(np.float32))[0] for image in images])

    model = to_openvino(keras_model)
    dynamic = run(model)
    before = run(static_batch(model))
    np.testing.assert_allclose(before, dynamic, atol=1e-4)  # batch 1 may pick other CPU kernels than a dynamic batch
    meta = tiny_meta(format="openvino")
    write_openvino_metadata(model, meta)
    path = tmp_path / "model.xml"
    ov.save_model(model, str(path), compress_to_fp16=False)

    loaded = core.read_model(str(path))
    assert loaded.input(0).get_partial_shape().to_shape() == [1, *SIZE, 3] and loaded.output(0).get_partial_shape().is_static
    assert loaded.output(0).get_names() == {OUTPUT_NAME} and loaded.input(0).get_any_name() == "pixels"
    assert loaded.input(0).get_node().get_layout() == ov.Layout("NHWC")
    rt = read_rt_info(path)
    assert rt["model_info"] == model_info(meta)
    assert rt["model_info"]["labels"].split() == LABELS  # what Model API's ListValue.from_str makes of it
    wanted = {"mean_values": "0 0 0", "scale_values": "1 1 1", "reverse_input_channels": "True", "model_type": "Classification"}
    assert {key: rt["model_info"][key] for key in wanted} == wanted
    assert rt["edgecls_info"]["version"] and json.loads(rt[META_KEY]) == json.loads(json.dumps(meta.to_dict()))
    assert read_openvino_meta(path).to_dict() == meta.to_dict() == read_openvino_meta(loaded).to_dict()  # type: ignore[union-attr]
    assert read_embedded_meta(path).to_dict() == meta.to_dict()  # type: ignore[union-attr]
    np.testing.assert_array_equal(run(loaded), before)


def test_model_info_splits_label_spaces_and_keeps_outside_normalisation() -> None:
    meta = dataclasses.replace(tiny_meta(), labels=["running shoe", *LABELS[1:]], normalization_baked_in=False)
    info = model_info(meta)
    assert info["labels"].split()[0] == "running_shoe" and len(info["labels"].split()) == len(LABELS)
    assert (info["mean_values"], info["scale_values"]) == ("127 127 127", "128 128 128")


def test_openvino_reader_refuses_a_foreign_xml(tmp_path: Path) -> None:
    path = tmp_path / "model.xml"
    path.write_text("<svg></svg>")
    with pytest.raises(ModelError, match="not an OpenVINO IR"):
        read_rt_info(path)
    path.write_text("<net><layers>")
    with pytest.raises(ModelError, match="not an OpenVINO IR"):
        read_rt_info(path)
    assert read_embedded_meta(tmp_path / "model.bin") is None


def test_readers_import_no_tensorflow(tflite_files: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(write_tflite_metadata(tflite_files["int8-uint8"], tiny_meta(precision="int8")))
    code = BLOCKER + textwrap.dedent(f"""
        import sys
        from edgecls.metadata import read_embedded_meta, read_tflite_standard
        assert read_embedded_meta({str(path)!r}).precision == "int8"
        assert read_tflite_standard({str(path)!r}).labels[0] == "T-shirt_top"
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "onnx", "openvino"))
        assert not heavy, heavy
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# ----------------------------------------------------------------------------- golden sets
def _scores(count: int = 40, classes: int = len(LABELS)) -> np.ndarray:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(count, classes)) * 3
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def golden(tmp_path: Path) -> Any:
    pixels = np.random.default_rng(2).integers(0, 256, size=(40, *SIZE, 3), dtype=np.uint8)
    made = make_golden(pixels, _scores(), LABELS, "fp16", count=6, source="litert 2.3.0 x86_64")
    assert load_golden(save_golden(made, tmp_path)).labels == LABELS
    return load_golden(tmp_path / GOLDEN_FILE)


def test_golden_set_round_trip_and_selection(golden: Any, tmp_path: Path) -> None:
    assert golden.images.shape == (6, *SIZE, 3) and golden.images.dtype == np.uint8
    assert golden.precision == "fp16" and golden.tolerance == tolerance_for("fp16") and golden.source.startswith("litert")
    top = -np.sort(-golden.probabilities, axis=1)
    assert np.all(top[:, 0] - top[:, 1] > 2 * golden.tolerance)  # no near tie that rounding could flip
    assert len(set(golden.probabilities.argmax(axis=1))) >= 4  # spread over predicted classes
    with np.load(tmp_path / GOLDEN_FILE, allow_pickle=False) as data:
        assert data["top_indices"].shape == (6, 5) and data["top_scores"].shape == (6, 5)
    assert tolerance_for("int8-uint8") == tolerance_for("edgetpu") == tolerance_for("int8")
    assert list(select_golden(np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]), count=5, margin=0.1)) == [1, 2]


def test_golden_check_passes_and_diagnoses(golden: Any) -> None:
    expected = golden.probabilities
    report = check_golden(golden, expected + 1e-4, labels=LABELS)
    assert report.ok and report.top1_agreement == 1.0 and "6 images" in report.summary()

    permuted = [LABELS[1], LABELS[0], *LABELS[2:]]
    assert "another order" in check_golden(golden, expected, labels=permuted).problems[0]
    assert "lists 3 classes" in check_golden(golden, expected, labels=LABELS[:3]).problems[0]
    renamed = check_golden(golden, expected, labels=["shirt", *LABELS[1:]])
    assert not renamed.ok and "output 0 is named 'shirt'" in renamed.problems[0]

    logits = np.log(expected) + 3.0
    assert "logits" in check_golden(golden, logits).problems[0]
    drifted = expected.copy()
    drifted[np.arange(len(drifted)), drifted.argmax(axis=1)] -= 0.015  # same top-1 (lead > 0.02), beyond the fp16 tolerance 0.01
    drift = check_golden(golden, drifted)
    assert not drift.ok and "tolerance" in drift.problems[0] and "litert 2.3.0" in drift.problems[0]
    assert "shape" in check_golden(golden, expected[:, :3]).problems[0]
    assert "NaN" in check_golden(golden, expected * np.nan).problems[0]


def test_golden_check_names_preprocessing_mistakes(golden: Any) -> None:
    # a stand-in model whose scores depend on channel order: a runtime fed BGR returns what the model gives for swapped pixels
    table = golden.probabilities.copy()

    def model(pixels: np.ndarray) -> np.ndarray:
        key = pixels[..., 0].mean(axis=(1, 2)) - pixels[..., 2].mean(axis=(1, 2))
        return np.take(table, np.argsort(np.argsort(key)), axis=0)

    def runtime_that_swaps(pixels: np.ndarray) -> np.ndarray:
        return model(np.ascontiguousarray(pixels[..., ::-1]))

    golden.probabilities = model(golden.images).astype(np.float32)
    swapped = runtime_that_swaps(golden.images)
    report = check_golden(golden, swapped, run=runtime_that_swaps)
    assert not report.ok and "channels swapped" in report.problems[0]
    assert "channels swapped" not in " ".join(check_golden(golden, swapped, run=lambda p: swapped).problems)
    pre = check_golden(golden, golden.probabilities, preprocessed=swapped)
    assert not pre.ok and "preprocessing drift" in pre.problems[0]


def test_golden_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no golden.npz"):
        load_golden(tmp_path)
    (tmp_path / GOLDEN_FILE).write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a readable golden set"):
        load_golden(tmp_path / "model.tflite")
    with pytest.raises(ModelError, match="expected uint8"):
        make_golden(np.zeros((4, 8, 8, 3), np.float32), _scores(4), LABELS, "fp32")
    with pytest.raises(ModelError, match="no golden-set tolerance"):
        make_golden(np.zeros((4, 8, 8, 3), np.uint8), _scores(4), LABELS, "fp8")
    flat = np.full((4, len(LABELS)), 1 / len(LABELS), np.float32)
    with pytest.raises(ModelError, match="top-1 lead"):
        make_golden(np.zeros((4, 8, 8, 3), np.uint8), flat, LABELS, "fp32")


def test_artifact_info_defaults_describe_the_contract() -> None:
    meta: ModelMeta = tiny_meta()
    info = artifact_info(meta)
    assert "RGB pixels 0..255" in info.description and "inside the model" in info.description and info.source_run == "runs/tiny-fmnist"
    assert info.date.endswith("+00:00") and info.author == "edgecls"


def test_golden_records_the_runtime_that_made_it(tmp_path: Path) -> None:
    from edgecls.metadata import runtime_summary

    pixels = np.random.default_rng(3).integers(0, 256, size=(40, *SIZE, 3), dtype=np.uint8)
    runtime = {"runtime": "litert", "version": "2.3.0", "device": "coral", "delegate": "edgetpu", "precision_ran": "int8",
               "machine": "aarch64", "system": "Linux", "python": "3.11.2", "edgecls": "0.1.0"}
    made = make_golden(pixels, _scores(), LABELS, "int8", count=4, runtime=runtime)
    assert made.source == runtime_summary(runtime) == "litert 2.3.0 on coral + edgetpu delegate, Linux aarch64, Python 3.11.2"
    loaded = load_golden(save_golden(made, tmp_path))
    assert loaded.runtime == runtime and loaded.source == made.source
    with np.load(tmp_path / GOLDEN_FILE, allow_pickle=False) as data:
        info = json.loads(str(data["info"]))
    del info["runtime"]  # a set written before the runtime was recorded still loads
    np.savez_compressed(tmp_path / GOLDEN_FILE, images=loaded.images, probabilities=loaded.probabilities, info=np.array(json.dumps(info)))
    assert load_golden(tmp_path).runtime == {}
    np.savez_compressed(tmp_path / GOLDEN_FILE, images=loaded.images, probabilities=loaded.probabilities,
                        info=np.array(json.dumps({**info, "labels": "abc"})))
    with pytest.raises(ModelError, match="not a readable golden set"):
        load_golden(tmp_path)


def test_golden_of_a_weak_model_keeps_its_near_ties_on_scores_only() -> None:
    # int8 tolerance 0.06: a top-1 must lead by 0.12 to be decisive; this "model" has one such image and three near ties
    probabilities = np.array([[0.70, 0.20, 0.10], [0.40, 0.35, 0.25], [0.30, 0.42, 0.28], [0.36, 0.30, 0.34], [1 / 3] * 3], np.float32)
    pixels = np.zeros((5, 8, 8, 3), np.uint8)
    golden = make_golden(pixels, probabilities, ["a", "b", "c"], "int8", count=8)
    assert len(golden.images) == 4 and list(golden.decisive()) == [True, False, False, False]  # the exact tie is left out
    flipped = golden.probabilities.copy()
    flipped[1] = [0.37, 0.38, 0.25]  # a near tie flips within the tolerance: fine
    assert check_golden(golden, flipped).ok
    wrong = golden.probabilities.copy()
    wrong[0] = [0.30, 0.60, 0.10]  # the decisive image flips: a different model
    report = check_golden(golden, wrong)
    assert not report.ok and "top-1 differs on 1 of 1 golden images" in report.problems[0]
