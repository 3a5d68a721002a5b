"""`edgecls predict` through the real CLI: folders, --recursive, quoted globs, one bad file among good ones,
--backend-device, a model that fails at run time, a lone artifact, help text. Models are tiny real ONNX graphs."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, CliResult, assert_clean_error, run_cli
from tests.test_runtime_face import LABELS, onnx_model
from tests.test_tf_free import BLOCKER

NEEDED = ("onnx", "onnxruntime")
pytestmark = pytest.mark.skipif(any(importlib.util.find_spec(n) is None for n in NEEDED), reason=f"needs {', '.join(NEEDED)}")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onnx_model(tmp_path_factory.mktemp("model") / "onnx")


def colour_png(path: Path, channel: int) -> Path:
    pixels = np.zeros((20, 20, 3), np.uint8)
    pixels[..., channel] = 240
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def shots(folder: Path) -> Path:
    """red.png, green.png, blue.png and a corrupt one in between (sorted: blue, broken, green, red)."""
    for channel, label in enumerate(LABELS):
        colour_png(folder / f"{label}.png", channel)
    (folder / "broken.png").write_text("not a picture")
    (folder / "notes.txt").write_text("not an image suffix: a folder scan skips it")
    return folder


def labels_of(result: CliResult) -> dict[str, str]:
    return {Path(r["image"]).name: r["top"][0]["label"] for r in json.loads(result.stdout)}


def error_lines(result: CliResult) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_folder_with_one_corrupt_file_prints_the_others_and_exits_1(model: Path, tmp_path: Path) -> None:
    folder = shots(tmp_path / "shots")
    result = run_cli("predict", model, folder, "--json", "--top-k", "1")
    assert result.returncode == 1 and "Traceback" not in result.output, result.output
    assert labels_of(result) == {"blue.png": "blue", "green.png": "green", "red.png": "red"}
    (line,) = error_lines(result)
    assert str(folder / "broken.png") in line and "not a readable image" in line
    assert "1 of 4 inputs could not be classified" in result.stderr
    table = run_cli("predict", model, folder, "--top-k", "1")  # the table, too, holds the good ones
    assert table.returncode == 1 and all(name in table.stdout for name in ("blue.png", "green.png", "red.png")), table.output
    assert "broken.png" not in table.stdout


def test_a_single_bad_image_is_one_line_and_exit_1(model: Path, tmp_path: Path) -> None:
    (tmp_path / "zero.png").write_bytes(b"")
    result = run_cli("predict", model, tmp_path / "zero.png")
    assert_clean_error(result, str(tmp_path / "zero.png"), "empty (0 bytes)")
    assert result.returncode == 1 and "inputs could not be classified" not in result.stderr


def test_quoted_globs_are_expanded_and_literal_names_win(model: Path, tmp_path: Path) -> None:
    folder = shots(tmp_path / "shots")
    odd = colour_png(folder / "odd [r].png", 0)  # exists as named: taken literally, not as a pattern
    result = run_cli("predict", model, str(folder / "[rg]*.png"), str(folder / "b?ue.png"), odd, "--json", "--top-k", "1")
    assert result.returncode == 0, result.output
    assert labels_of(result) == {"red.png": "red", "green.png": "green", "blue.png": "blue", "odd [r].png": "red"}
    nothing = run_cli("predict", model, str(folder / "*.jpeg"), str(folder / "red.png"), "--json")
    assert nothing.returncode == 1 and labels_of(nothing) == {"red.png": "red"}, nothing.output
    (line,) = error_lines(nothing)
    assert f"no file matches '{folder / '*.jpeg'}'" in line


def test_recursive_reaches_subfolders(model: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    colour_png(root / "day" / "a.png", 0)
    colour_png(root / "day" / "late" / "b.png", 2)
    colour_png(root / ".hidden" / "c.png", 1)  # hidden folders are left out
    flat = run_cli("predict", model, root)
    assert_clean_error(flat, str(root), "holds no images at its top level", "--recursive")
    assert flat.returncode == 1
    deep = run_cli("predict", model, root, "--recursive", "--json", "--top-k", "1")
    assert deep.returncode == 0 and labels_of(deep) == {"a.png": "red", "b.png": "blue"}, deep.output
    pattern = run_cli("predict", model, str(root / "**" / "*.png"), "-r", "--json", "--top-k", "1")
    assert pattern.returncode == 0 and labels_of(pattern) == {"a.png": "red", "b.png": "blue"}, pattern.output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(run_cli("predict", model, empty), str(empty), "is a folder, not an image", "holds none")


def test_onnx_model_failing_at_run_time_is_one_line(tmp_path: Path) -> None:
    bad = onnx_model(tmp_path / "bad", fail=True)
    image = colour_png(tmp_path / "red.png", 0)
    result = run_cli("predict", bad, image)
    assert_clean_error(result, f"'{bad}' failed while running in onnxruntime", "Reshape", "export it again")
    assert result.returncode == 2
    assert "ONNXRuntimeError" not in result.output and "onnxruntime_src" not in result.output, result.output


def test_backend_device_and_the_deprecated_device(model: Path, tmp_path: Path) -> None:
    image = colour_png(tmp_path / "red.png", 0)
    assert_clean_error(run_cli("predict", model, image, "--backend-device", "quantum"), "device 'quantum'")
    old = run_cli("predict", model, image, "--device", "cpu", "--json")
    assert old.returncode == 0 and labels_of(old) == {"red.png": "red"}, old.output
    assert "--device is deprecated: use --backend-device cpu" in old.stderr
    assert_clean_error(run_cli("predict", model, image, "--device", "cpu", "--backend-device", "gpu"), "disagree")


def test_lone_artifact_says_what_is_missing_and_what_to_do(model: Path, tmp_path: Path) -> None:
    lone = tmp_path / "plain-copy" / "model.onnx"
    lone.parent.mkdir()
    shutil.copy(model, lone)
    image = colour_png(tmp_path / "red.png", 0)
    assert_clean_error(run_cli("predict", lone, image), f"no meta.json beside '{lone}'", f"looked for '{lone.parent / 'meta.json'}'",
                       "Copy the meta.json that was exported with it")


def test_meaningless_meta_is_one_line_naming_the_field(model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "a" / "model.onnx"
    copy.parent.mkdir()
    shutil.copy(model, copy)
    meta = json.loads((model.parent / "meta.json").read_text())
    (copy.parent / "meta.json").write_text(json.dumps({**meta, "std": [128.0, 0.0, 128.0]}))
    image = colour_png(tmp_path / "red.png", 0)
    assert_clean_error(run_cli("predict", copy, image), "std [128.0, 0.0, 128.0]", "above 0", "Fix it in")


def test_every_option_has_help_and_device_is_hidden() -> None:
    import inspect

    from edgecls.cli.predict import predict_command

    for name, parameter in inspect.signature(predict_command).parameters.items():
        assert getattr(parameter.default, "help", None), f"predict {name} has no help text"
    shown = run_cli("predict", "--help")
    assert shown.returncode == 0
    for option in ("--backend-device", "--recursive", "--top-k", "--json", "--threads", "--batch"):
        assert option in shown.stdout, option
    assert "--device " not in shown.stdout.replace("--backend-device", "")


def test_predict_on_a_folder_without_tensorflow(model: Path, tmp_path: Path) -> None:
    folder = shots(tmp_path / "shots")
    code = BLOCKER + textwrap.dedent(
        f"""
        import sys
        from edgecls.cli.app import main
        sys.argv = ["edgecls", "predict", {str(model)!r}, {str(folder)!r}, "--json", "--top-k", "1"]
        try:
            main()
        finally:
            heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
            print("HEAVY", heavy, file=sys.stderr)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1 and "HEAVY []" in proc.stderr, proc.stderr
    assert {Path(r["image"]).name for r in json.loads(proc.stdout)} == {"blue.png", "green.png", "red.png"}
