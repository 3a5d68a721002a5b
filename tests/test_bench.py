"""`edgecls bench` and device profiles, through the real CLI on real artifacts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecls.devices import PROFILE_DIR, list_profiles, load_profile
from tests.conftest import REPO, assert_clean_error, run_cli


def test_every_profile_loads_and_cites_its_references() -> None:
    assert {"pi4", "pi5", "coral-usb-pi", "coral-usb-x86", "coral-devboard", "intel-cpu"} <= set(list_profiles())
    for name in list_profiles():
        profile = load_profile(name)
        assert profile.preferred_target in ("tflite", "edgetpu", "openvino", "onnx")
        assert profile.setup_notes and profile.camera
        for ref in profile.reference:
            assert ref.source and ref.latency_ms > 0 and 0 < ref.tolerance < 1
    assert (REPO / "devices").resolve() == PROFILE_DIR


def test_profile_errors(tmp_path: Path) -> None:
    from edgecls.errors import ConfigError

    with pytest.raises(ConfigError, match="Did you mean 'pi5'"):
        load_profile("pi55")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="malformed"):
        load_profile(bad)


@pytest.mark.slow
def test_bench_run_folder_with_accuracy_and_reference(plain_run: Path, fmnist_tree: Path, tmp_path: Path) -> None:
    exported = run_cli("export", plain_run, "--int8", "--target", "all", "--out", tmp_path / "exp",
                       "--max-drop", "none", "--min-agreement", "none", cwd=tmp_path)  # an untrained tiny CNN: bench, not the gate
    assert exported.returncode == 0, exported.output
    out = tmp_path / "report.json"
    result = run_cli("bench", tmp_path / "exp", "--data", fmnist_tree, "--device", "intel-cpu", "--runs", "20", "--warmup", "3",
                     "--out", out)
    assert result.returncode == 0, result.output
    report = json.loads(out.read_text())
    assert report["profile"] == "intel-cpu" and report["threads"] == 2
    formats = sorted(r["format"] for r in report["results"])
    assert formats == ["edgetpu", "onnx", "openvino", "tflite"]
    for r in report["results"]:
        assert r["images"] == 80 and 0 <= r["accuracy"] <= r["top5"] <= 1
        lat = r["latency"]
        assert lat["runs"] == 20 and 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert "int8" in r["precision_ran"] and "verdict" in r["reference"]
    assert out.with_suffix(".png").is_file()
    assert "p50 / p90 / p99 ms" in result.stdout


def test_bench_bad_inputs(plain_run: Path, tmp_path: Path) -> None:
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    assert_clean_error(run_cli("bench", empty_run, "--out", tmp_path / "r.json"), "holds no exported artifacts", "edgecls export")
    assert_clean_error(run_cli("bench", tmp_path / "missing.tflite", "--out", tmp_path / "r.json"), "does not exist")
    assert_clean_error(run_cli("bench", plain_run / "meta.json", "--out", tmp_path / "r.json"), "not an exported artifact")
    assert_clean_error(run_cli("bench", plain_run, "--device", "pi9", "--out", tmp_path / "r.json"), "unknown device profile 'pi9'")
