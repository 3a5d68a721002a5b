"""`edgecls export` writes each format's standard metadata and a golden set: read back with edgecls.metadata's readers
(no runtime), and `edgecls verify` / a lone copy work on what it published.

`check_published` is also called by tests/test_export_cli.py on its exports of every target (no extra export there);
`check_lone_copy` too; this file adds the Edge TPU compile branch, with a stand-in `edgetpu_compiler` that writes what the real one writes.
"""
from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgecls.meta import ModelMeta
from edgecls.metadata import (
    GOLDEN_FILE,
    load_golden,
    read_embedded_meta,
    read_onnx_props,
    read_rt_info,
    read_tflite_standard,
)
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

NO_GATE = ("--max-drop", "none", "--min-agreement", "none")
SUFFIXES = (".tflite", ".onnx", ".xml")


def artifact_of(folder: Path) -> Path:
    (found,) = [p for p in folder.iterdir() if p.suffix in SUFFIXES and not p.name.startswith(".") and "_edgetpu" not in p.name]
    return found


def check_embedded(path: Path, meta: ModelMeta) -> None:
    """`path` carries the edgecls meta and its format's standard metadata, as the meta.json beside it says."""
    embedded = read_embedded_meta(path)
    assert embedded is not None and embedded.to_dict() == meta.to_dict(), path
    height, width = meta.input_size
    if path.suffix == ".tflite":
        standard = read_tflite_standard(path)
        assert standard is not None, path
        assert standard.labels == meta.labels and standard.labels_file == "labels.txt" and standard.default_size == (height, width)
        assert (standard.mean, standard.std) == ([0.0] * 3, [1.0] * 3)  # normalisation is inside every edgecls model
        assert standard.input_name == "pixels" and standard.output_name == "probabilities"
    elif path.suffix == ".onnx":
        props = read_onnx_props(path)
        assert json.loads(props["labels"]) == meta.labels and json.loads(props["imgsz"]) == [height, width], path
        assert props["task"] == "classify" and props["precision"] == meta.precision and props["mean"] == "baked in"
        assert props["model_info model_type"] == "Classification"
    else:
        info = read_rt_info(path)
        assert info["model_info"]["model_type"] == "Classification", path
        assert info["model_info"]["labels"].split() == ["_".join(label.split()) for label in meta.labels]
        assert info["edgecls_info"]["source_run"], path


def check_published(folder: Path) -> Path:
    """An export folder: metadata embedded in its artifact (and a compiled Edge TPU model), golden.npz of the validated
    artifact; an IR is a static [1, h, w, 3] unless `dynamic`. Returns the artifact."""
    meta = ModelMeta.load(folder)
    path = artifact_of(folder)
    for tflite in [path, *folder.glob("*_edgetpu.tflite")]:
        check_embedded(tflite, meta)
    golden = load_golden(folder)
    assert golden.labels == meta.labels and golden.precision == meta.precision, folder
    assert golden.images.shape[1:] == (*meta.input_size, 3) and len(golden.images) >= 1
    assert golden.runtime["runtime"] in {"litert", "tflite-runtime", "onnxruntime", "openvino"}, golden.runtime
    report = json.loads((folder / "export_report.json").read_text())
    assert GOLDEN_FILE in report["files"] and report["notes"]["metadata"]["bytes_added"] > 0
    return path


def ir_input_shape(xml: Path) -> list[int | None]:
    import openvino as ov

    shape = ov.Core().read_model(str(xml)).input(0).get_partial_shape()
    return [d.get_length() if d.is_static else None for d in shape]


def test_edgetpu_compiled_model_and_its_cpu_model_carry_the_metadata(plain_run: Path, tmp_path: Path) -> None:
    """With edgetpu_compiler on PATH (a stand-in that copies the model, as the real one keeps the metadata entries):
    both files carry the metadata, the golden set comes from the CPU model, and verify says the Edge TPU is missing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "edgetpu_compiler"
    fake.write_text(textwrap.dedent("""\
        #!/bin/sh
        # edgetpu_compiler -s -o DIR MODEL.tflite
        out="$3"; model="$4"; stem=$(basename "$model" .tflite)
        cp "$model" "$out/${stem}_edgetpu.tflite"
        echo "Edge TPU Compiler version 16.0.384591198"
        """))
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = tmp_path / "exports"
    result = run_cli("export", plain_run, "--target", "edgetpu", "--allow-cpu-ops", *NO_GATE, "--out", out, env=env)
    assert result.returncode == 0, result.output
    folder = out / "edgetpu-int8"
    compiled = folder / "model_edgetpu.tflite"
    assert compiled.is_file() and check_published(folder) == folder / "model.tflite"
    assert json.loads((folder / "export_report.json").read_text())["notes"]["metadata"]["files"] == ["model_edgetpu.tflite",
                                                                                                       "model.tflite"]
    assert run_cli("verify", folder / "model.tflite").returncode == 0
    missing = run_cli("verify", compiled)
    assert missing.returncode == 1 and "Edge TPU missing" in missing.stderr, missing.output


def check_lone_copy(path: Path, lone_dir: Path, images: list[Path]) -> None:
    """The artifact copied alone (no meta.json, no golden set) classifies with its own labels exactly as it does beside
    its meta.json."""
    from edgecls.runtime import Classifier

    lone_dir.mkdir(parents=True)
    for part in [path, path.with_suffix(".bin")]:
        if part.is_file():
            shutil.copy(part, lone_dir / part.name)
    with Classifier(path) as beside, Classifier(lone_dir / path.name) as alone:
        assert alone.meta.labels == beside.meta.labels and alone.meta.input_size == beside.meta.input_size
        for image in images:
            got, want = alone.predict([image], top_k=3)[0], beside.predict([image], top_k=3)[0]
            assert [c.label for c in got] == [c.label for c in want], (path, image)
            np.testing.assert_allclose([c.score for c in got], [c.score for c in want], atol=1e-6)
