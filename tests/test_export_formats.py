"""The FORMATS table and the one options check, the typed reports, and the export CLI's argument
errors and help: no conversion, no training (the option errors come before any model is loaded)."""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

import edgecls
from edgecls.errors import ConfigError
from edgecls.export.formats import FORMATS, OPTIONS, PRECISIONS, check_options, plan_exports
from edgecls.export.report import CalibrationInfo, ClassAccuracy, ExportReport, ExportResult, ValidationReport
from tests.conftest import assert_clean_error, run_cli


def test_table_is_consistent() -> None:
    for name, fmt in FORMATS.items():
        assert fmt.name == name and set(fmt.precisions) <= set(PRECISIONS) and set(fmt.options) <= set(OPTIONS)
        module, function = fmt.writer.split(":")
        assert importlib.util.find_spec(module) is not None and function.startswith("export_")
    assert FORMATS["edgetpu"].default_precision == "int8" and FORMATS["onnx"].default_precision == "fp32"
    assert [f.name for f, _ in plan_exports("all", None)] == ["tflite", "onnx", "openvino"]  # edgetpu takes no fp32
    assert [(f.name, p) for f, p in plan_exports("all", "int8")] == [(n, "int8") for n in FORMATS if FORMATS[n].in_all]
    assert [(f.name, p) for f, p in plan_exports("edgetpu", None)] == [("edgetpu", "int8")]


@pytest.mark.parametrize("target, precision, options, message", [
    ("onnx", "int8", {"io_type": "int8"},
     "--io int8 only applies to tflite int8 exports, not onnx int8. Drop --io, or export --target tflite --precision int8"),
    ("tflite", "fp32", {"io_type": "float"}, "--io float only applies to tflite int8 exports, not tflite fp32"),
    ("tflite", None, {"opset": 13}, "--opset 13 only applies to onnx exports, not tflite fp32. Drop --opset, or export --target onnx"),
    ("all", "fp16", {"opset": 13}, "--opset 13 only applies to onnx exports, not tflite fp16, openvino fp16"),
    ("edgetpu", None, {"batch": 1}, "--batch 1 only applies to openvino exports, not edgetpu int8"),
    ("tflite", "int8", {"io_type": "int16"}, "--io 'int16' is not one of uint8, int8, float. Did you mean 'int8'? Use --io uint8"),
    ("tflite", "int8", {"io_type": "unit8"}, "Did you mean 'uint8'?"),
    ("onnx", None, {"opset": 11}, "--opset 11 is outside 13..18. Use e.g. --opset 17"),
    ("openvino", None, {"batch": -1}, "--batch -1 is outside at least 0"),  # 0 keeps a dynamic batch
    ("openvino", None, {"batch": "two"}, "--batch 'two' is not a whole number"),
    ("onnx", None, {"opst": 13}, "unknown export option 'opst'. Did you mean 'opset'?"),
])
def test_options_a_plan_does_not_take_are_refused(target: str, precision: str | None, options: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_options(plan_exports(target, precision), options)
    assert message in str(info.value)


def test_options_taken_by_some_export_of_the_plan_pass() -> None:
    check_options(plan_exports("all", "int8"), {"io_type": "int8", "opset": 13, "batch": 1})  # each applies to one target
    check_options(plan_exports("tflite", None), {"io_type": None, "opset": None, "batch": None})  # None: not given


def test_validation_report_keeps_the_json_keys() -> None:
    bare = ValidationReport(images=4, source="test split", precision_ran="fp32", max_abs_diff=1e-6, mean_abs_diff=1e-7,
                            top1_agreement=1.0, tolerance=1e-3)
    assert list(bare.as_dict()) == ["images", "source", "precision_ran", "max_abs_diff", "mean_abs_diff", "top1_agreement",
                                    "tolerance", "failures", "passed"]
    labelled = ValidationReport(4, "test split", "int8", 0.1, 0.01, 0.75, reference_accuracy=1.0, artifact_accuracy=0.75,
                                accuracy_drop=0.25, per_class=[ClassAccuracy("cat", 4, 1.0, 0.75, 0.25)],
                                classes_that_lost_accuracy=["cat"], integer_check={"integer": True}, quantized=True,
                                failures=["accuracy drop 25.00 points exceeds --max-drop 1.00 points"])
    data = labelled.as_dict()
    assert data["per_class"] == [{"label": "cat", "images": 4, "reference_accuracy": 1.0, "artifact_accuracy": 0.75, "drop": 0.25}]
    assert data["passed"] is False and not labelled.passed and data["quantized"] is True and "tolerance" not in data


def test_export_report_and_result_json() -> None:
    failed = ExportReport("onnx", "int8", "runs/a", error="unknown precision")
    assert failed.as_dict() == {"target": "onnx", "precision": "int8", "source": "runs/a", "error": "unknown precision"}
    float_report = ExportReport("tflite", "fp32", "runs/a", artifact="model.tflite", files=["model.tflite"], size_bytes=10,
                                notes={"edgetpu": {"ops_on_tpu": 3, "ops_total": 4, "tpu_share": 0.75, "cut": "cut at #3",
                                                   "compiler": {"ran": False, "message": "no compiler", "command": "edgetpu_compiler"}}})
    assert float_report.as_dict()["calibration"] is None  # written as null once there is an artifact, as always
    assert float_report.edgetpu is not None and float_report.edgetpu.ops_on_tpu == 3 and not float_report.edgetpu.compiler_ran
    calibration = CalibrationInfo("train split", 300, "m.json")
    int8_report = ExportReport("tflite", "int8", "runs/a", artifact="model.tflite", calibration=calibration)
    assert int8_report.as_dict()["calibration"] == {"source": "train split", "images": 300, "manifest": "m.json"}
    result = ExportResult("tflite", "int8", Path("e/tflite-int8"), Path("e/tflite-int8/model.tflite"), 10, 1.5, int8_report)
    assert result.passed and result.as_dict()["folder"] == "e/tflite-int8" and result.as_dict()["error"] is None


def test_api_docstring_calls_resolve() -> None:
    """The api docstring once advertised `edgecls.export(...)`, a module (TypeError when called)."""
    from edgecls.export import api

    cited = re.findall(r"`(edgecls(?:\.\w+)+)\(", inspect.getdoc(api) or "")
    assert cited
    for dotted in cited:
        target: object = edgecls
        for part in dotted.split(".")[1:]:
            target = getattr(target, part)
        assert callable(target), dotted


def test_every_export_option_has_help() -> None:
    from edgecls.cli.export import export_command

    for name, parameter in inspect.signature(export_command).parameters.items():
        assert getattr(parameter.default, "help", None), name


@pytest.mark.parametrize("args, fragments", [
    (["--target", "tflite", "--opset", "13"], ["--opset 13 only applies to onnx exports, not tflite fp32"]),
    (["--target", "tflite", "--batch", "2"], ["--batch 2 only applies to openvino exports", "--target openvino"]),
    (["--target", "onnx", "--opset", "30"], ["--opset 30 is outside 13..18"]),
    (["--target", "openvino", "--batch", "-1"], ["--batch -1 is outside"]),
    (["--int8", "--target", "edgetpu", "--io", "int8"], ["--io int8 only applies to tflite int8 exports, not edgetpu int8"]),
])
def test_cli_refuses_options_before_loading_anything(args: list[str], fragments: list[str], tmp_path: Path) -> None:
    result = run_cli("export", "no_such_model", *args, cwd=tmp_path)  # the model is never looked up
    assert_clean_error(result, *fragments)
    assert list(tmp_path.iterdir()) == []
