"""`edgecls bench` and device profiles, through the real CLI on real artifacts."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgecls.devices import PROFILE_DIR, list_profiles, load_profile
from tests.conftest import REPO, assert_clean_error, run_cli


def test_every_profile_loads_and_cites_its_references() -> None:
    assert {"pi4", "pi5", "coral-usb-pi", "coral-usb-x86", "coral-devboard", "intel-cpu"} <= set(list_profiles())
    for name in list_profiles():
        profile = load_profile(name)
        assert profile.preferred_target in ("tflite", "edgetpu", "openvino", "onnx", "imx500")  # imx500: the Pi AI Camera
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
def test_bench_run_folder_with_accuracy_and_reference(plain_int8_exports: Path, fmnist_tree: Path, tmp_path: Path) -> None:
    shutil.copytree(plain_int8_exports, tmp_path / "exp")  # the session's `export PLAIN_RUN --int8 --target all`, gate off
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


def test_typed_report_writes_the_same_json_as_the_measuring_process(plain_int8_exports: Path, fmnist_tree: Path, tmp_path: Path) -> None:
    """bench() returns a BenchReport; its JSON (file and --json) has the keys, order and values the measuring process
    printed, plus the reference and outputs, exactly as when the report was a dict; a failed artifact keeps its two keys."""
    import subprocess
    import sys

    from edgecls.bench.report import ArtifactResult, FailedArtifact, result_from_dict
    from edgecls.bench.runner import bench

    model = plain_int8_exports / "tflite-int8" / "model.tflite"  # the session's INT8 export (read only: bench writes to --out)
    broken = tmp_path / "broken" / "model.tflite"
    broken.parent.mkdir()
    broken.write_bytes(b"not a model")
    out = tmp_path / "report.json"
    report = bench([model, broken], data=fmnist_tree, device_profile="intel-cpu", runs=3, warmup=1, limit=10, out=out)
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(report.as_dict()))
    assert list(written) == ["profile", "threads", "device", "runs", "warmup", "results", "outputs"]
    measured, failed = report.results
    assert isinstance(measured, ArtifactResult) and isinstance(failed, FailedArtifact) and report.failed == [failed]
    assert list(written["results"][1]) == ["artifact", "error"] and "not a readable TFLite file" in failed.error
    entry = written["results"][0]
    assert list(entry)[-2:] == ["latency", "reference"] and "verdict" in entry["reference"]
    assert measured.scores is not None and entry["images"] == measured.scores.images == 10

    args = {"path": str(model), "device": "cpu", "threads": 2, "runs": 3, "warmup": 1, "data": str(fmnist_tree), "limit": 10}
    proc = subprocess.run([sys.executable, "-m", "edgecls.bench.measure", json.dumps(args)], capture_output=True, text=True, check=True)
    raw = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("EDGECLS-BENCH ")).split(" ", 1)[1])
    typed = result_from_dict(raw).as_dict()
    assert typed == raw and list(typed) == list(raw)  # same keys, same order, same values
    without_data = {k: v for k, v in raw.items() if k not in ("images", "skipped_images", "accuracy", "top5")}
    assert list(result_from_dict(without_data).as_dict()) == list(without_data)
    timed_out = {"artifact": "a", "error": "e", "timed_out": True}
    assert result_from_dict(timed_out).as_dict() == timed_out
