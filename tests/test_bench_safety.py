"""`edgecls bench` and `edgecls data` never write onto their inputs; bench survives a hung artifact and reports
top-5 honestly; the Pi-side bench stays TF- and quantize-free. Real CLI on real (tiny, hand-built) ONNX artifacts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.data.labelled import read_labelled_folder
from edgecls.data.sampling import stratified_sample
from edgecls.errors import DataError
from edgecls.fsutil import OUTPUT_MARKER, has_marker
from edgecls.meta import ModelMeta
from tests.conftest import REPO, assert_clean_error, run_cli

COLOURS = {"red": (220, 20, 20), "green": (20, 220, 20), "blue": (20, 20, 220)}


def tiny_onnx(path: Path, classes: int = 3, size: int = 8, hang: bool = False) -> Path:
    """A real ONNX classifier: mean colour -> class c follows channel c % 3, classes 3+ (extra*) slightly stronger than
    the colour they share; `hang` adds a Loop that never ends."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = np.zeros((3, classes), np.float32)
    for c in range(classes):
        weights[c % 3, c] = (1.0 if c < 3 else 1.1) / 8
    nodes = [helper.make_node("ReduceMean", ["pixels", "axes"], ["mean"], keepdims=0),
             helper.make_node("MatMul", ["mean", "w"], ["logits"])]
    inits = [numpy_helper.from_array(np.array([1, 2], np.int64), "axes"), numpy_helper.from_array(weights, "w")]
    last = "logits"
    if hang:
        value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, classes]) for n in ("v_in", "v_out")]
        step = [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])]
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])], "body",
            [*step, value[0]], [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), value[1]])
        inits += [numpy_helper.from_array(np.array(2**62, np.int64), "trips"), numpy_helper.from_array(np.array(True), "true")]
        nodes.append(helper.make_node("Loop", ["trips", "true", "logits"], ["looped"], body=body))
        last = "looped"
    nodes.append(helper.make_node("Softmax", [last], ["scores"], axis=-1))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, size, size, 3])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    labels = [*COLOURS, *(f"extra{i}" for i in range(classes - 3))]
    ModelMeta(architecture="tiny_colour", input_size=(size, size), labels=labels, format="onnx", precision="fp32").save(path.parent)
    return path


def colour_tree(root: Path, per_class: int = 4) -> Path:
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (12, 12), tuple(max(0, v - 10 * i) for v in rgb)).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run-shaped folder (meta.json + export/) with one ONNX artifact, as `edgecls export` lays it out."""
    run = tmp_path / "run"
    tiny_onnx(run / "export" / "onnx-fp32" / "model.onnx")
    (run / "meta.json").write_text((run / "export" / "onnx-fp32" / "meta.json").read_text())
    return run


def test_bench_report_goes_beside_the_run_and_top5_is_null_under_five_classes(run: Path, tmp_path: Path) -> None:
    data = colour_tree(tmp_path / "data")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = run_cli("bench", run, "--data", data, "--runs", "3", "--warmup", "1", cwd=cwd)
    assert result.returncode == 0, result.output
    assert list(cwd.iterdir()) == []  # nothing lands in the current folder
    report = json.loads((run / "bench" / "bench_report.json").read_text())
    (measured,) = report["results"]
    assert measured["images"] == 12 and measured["accuracy"] == 1.0
    assert measured["top5"] is None  # 3 classes: not top-1 reported as top-5
    assert report["outputs"]["json"] == str(run / "bench" / "bench_report.json")
    assert "n/a (< 5 classes)" in result.stdout and str(run / "bench" / "bench_report.json") in result.stdout


def test_bench_reports_top5_with_five_classes_or_more(tmp_path: Path) -> None:
    artifact = tiny_onnx(tmp_path / "six" / "model.onnx", classes=6)
    data = colour_tree(tmp_path / "data")
    result = run_cli("bench", artifact, "--data", data, "--runs", "2", "--warmup", "0", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.output
    (measured,) = json.loads(result.stdout)["results"]
    assert measured["accuracy"] == 0.0 and measured["top5"] == 1.0  # each colour loses top-1 to its extra* twin: a real top-5
    assert (tmp_path / "six" / "bench" / "bench_report.json").is_file()  # an artifact outside a run: bench/ beside it


@pytest.mark.parametrize("target", ["artifact", "meta", "data", "inside data", "folder of artifact"])
def test_bench_out_onto_an_input_is_refused_before_any_work(run: Path, tmp_path: Path, target: str) -> None:
    data = colour_tree(tmp_path / "data")
    artifact = run / "export" / "onnx-fp32" / "model.onnx"
    out = {"artifact": artifact, "meta": artifact.parent / "meta.json", "data": data, "inside data": data / "red" / "r.json",
           "folder of artifact": artifact.parent}[target]
    before = {p: p.read_bytes() for p in artifact.parent.iterdir()}
    result = run_cli("bench", run, "--data", data, "--runs", "2", "--out", out, cwd=tmp_path)
    assert_clean_error(result, "--out", str(out), "the input", "Choose an output path outside")
    assert "measured" not in result.stderr  # refused before any measurement
    assert {p: p.read_bytes() for p in artifact.parent.iterdir()} == before
    assert sorted(p.name for p in (data / "red").iterdir()) == [f"{i}.png" for i in range(4)]


def test_bench_chart_beside_out_onto_an_input_is_refused(tmp_path: Path) -> None:
    """--out X.json puts the chart at X.png: that path is checked too (here --data is a folder named X.png)."""
    artifact = tiny_onnx(tmp_path / "a" / "model.onnx")
    data = colour_tree(tmp_path / "shots.png")
    result = run_cli("bench", artifact, "--data", data, "--out", tmp_path / "shots.json", cwd=tmp_path)
    assert_clean_error(result, f"--out chart '{data}' would overwrite the input --data '{data}'")
    assert not (tmp_path / "shots.json").exists() and sorted(p.name for p in data.iterdir()) == sorted(COLOURS)


def test_bench_out_onto_a_folder_is_refused_before_any_work(run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    result = run_cli("bench", run, "--runs", "2", "--out", folder, cwd=tmp_path)
    assert_clean_error(result, f"--out '{folder}' is a folder", "Pass a file name")
    assert "measured" not in result.stderr and list(folder.iterdir()) == []


def test_a_hung_artifact_times_out_and_the_others_are_still_measured(tmp_path: Path) -> None:
    hung = tiny_onnx(tmp_path / "exp" / "onnx-hang" / "model.onnx", hang=True)
    good = tiny_onnx(tmp_path / "exp" / "onnx-fp32" / "model.onnx")
    out = tmp_path / "report.json"
    result = run_cli("bench", hung, good, "--runs", "2", "--warmup", "1", "--timeout", "20", "--out", out, cwd=tmp_path)
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    first, second = json.loads(out.read_text())["results"]
    assert first["artifact"] == str(hung) and "timed out after 20 s" in first["error"] and first["timed_out"] is True
    assert second["artifact"] == str(good) and "error" not in second and second["latency"]["runs"] == 2


def test_data_video_out_inside_its_input_folder_is_refused(tmp_path: Path) -> None:
    images = colour_tree(tmp_path / "images")
    before = sorted(p.relative_to(images) for p in images.rglob("*"))
    assert_clean_error(run_cli("data", "video", images, images / "clip.mp4", cwd=tmp_path),
                       "OUT", "lies inside the input FOLDER", str(images))
    (tmp_path / "alias").symlink_to(images)  # the same folder under another name
    assert_clean_error(run_cli("data", "video", images, tmp_path / "alias" / "clip.mp4", cwd=tmp_path), "lies inside the input FOLDER")
    assert sorted(p.relative_to(images) for p in images.rglob("*")) == before


def test_data_fashion_mnist_out_onto_its_source_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "idx"
    source.mkdir()
    (source / "keep.txt").write_text("mine")
    for out in (source, source / "tree", tmp_path):
        result = run_cli("data", "fashion-mnist", out, "--source", source, "--no-download", cwd=tmp_path)
        assert_clean_error(result, "OUT", "the input --source", str(source))
    assert sorted(p.name for p in source.iterdir()) == ["keep.txt"]


def test_data_fashion_mnist_replaces_its_own_trees_only(fmnist_tree: Path, tmp_path: Path) -> None:
    """Marked trees (this edgecls) and empty folders are replaced; anything else is not, even a tree of the same shape
    (train/Bag/...: it may hold the user's own images)."""
    assert has_marker(fmnist_tree)
    same_shape = tmp_path / "same-shape"
    (same_shape / "train" / "Bag").mkdir(parents=True)
    (same_shape / "train" / "Bag" / "my_bag.png").write_bytes(b"png")
    assert_clean_error(run_cli("data", "fashion-mnist", same_shape, "--per-class", "1", "--no-download", cwd=tmp_path),
                       str(same_shape), "holds other files")
    assert [p.name for p in (same_shape / "train" / "Bag").iterdir()] == ["my_bag.png"]
    old = tmp_path / "old"
    old.mkdir()
    result = run_cli("data", "fashion-mnist", old, "--per-class", "1", "--no-download", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert has_marker(old) and len(list(old.glob("*/*/*.png"))) == 20
    again = run_cli("data", "fashion-mnist", old, "--per-class", "2", "--no-download", cwd=tmp_path)
    assert again.returncode == 0 and len(list(old.glob("*/*/*.png"))) == 40, again.output
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"jpg")
    assert_clean_error(run_cli("data", "fashion-mnist", foreign, "--per-class", "1", "--no-download", cwd=tmp_path),
                       str(foreign), "holds other files")
    assert [p.name for p in foreign.iterdir()] == ["holiday.jpg"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert (old / OUTPUT_MARKER).is_file()


def test_stratified_sample_moved_without_changing_its_choices() -> None:
    """Same indices as quantize.calibration.stratified_sample gave before it moved to edgecls.data.sampling."""
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 1, 0])
    assert stratified_sample(labels, 5, seed=0) == [1, 3, 4, 8, 11]  # values of the original implementation
    assert stratified_sample(labels, 7, seed=4) == [0, 1, 2, 3, 8, 9, 10]
    assert stratified_sample(labels, 100, seed=3) == list(range(12))
    assert stratified_sample(np.array([], np.int64), 4, seed=0) == []
    from edgecls.quantize.calibration import stratified_sample as calibration_sample

    for seed in range(5):
        for size in (1, 4, 7, 12):
            assert calibration_sample(labels, size, seed) == stratified_sample(labels, size, seed)


def test_labelled_folder_reader(tmp_path: Path) -> None:
    root = tmp_path / "set"
    colour_tree(root / "test", per_class=5)
    labels = ["blue", "green", "red", "unused"]
    sample = read_labelled_folder(root, labels, limit=6)
    assert sample.folder == root / "test" and np.bincount(sample.labels).tolist() == [2, 2, 2]  # the test/ split, stratified
    (root / "test" / "red" / "broken.png").write_bytes(b"not a png")
    every = read_labelled_folder(root, labels)
    assert len(every) == 15 and np.bincount(every.labels).tolist() == [5, 5, 5]
    assert [p.name for p, _ in every.skipped] == ["broken.png"]
    assert all(p.parent.name == labels[i] for p, i in zip(every.paths, every.labels))
    with pytest.raises(DataError, match=r"classes \['red'\] .* not among the model's labels"):
        read_labelled_folder(root, ["blue", "green"])
    with pytest.raises(DataError, match="is not a folder"):
        read_labelled_folder(root / "missing", labels)
    (tmp_path / "empty" / "red").mkdir(parents=True)
    with pytest.raises(DataError, match="no readable labelled images"):
        read_labelled_folder(tmp_path / "empty", labels)


def test_pi_side_bench_imports_neither_tensorflow_nor_quantize() -> None:
    code = ("import sys, edgecls.bench.measure, edgecls.bench.runner, edgecls.cli.bench, edgecls.data.labelled\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('edgecls.quantize', 'edgecls.training', 'tensorflow', 'keras')))\n"
            "print(bad)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
