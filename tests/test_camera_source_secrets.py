"""A stream URL's password (`rtsp://user:PASS@camera/...`, as IP cameras are usually given) never reaches the camera's
log lines, its errors or its report: they show `user:***@host`. A real MJPEG stream over HTTP (FFmpeg sends the
credentials), the real CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.camera_helpers import free_port, mjpeg_camera, shared_tflite
from tests.conftest import assert_clean_error, run_cli

SECRET = "Hunter2-cam-pw"


@pytest.fixture(scope="module")
def model(plain_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tflite(plain_run, tmp_path_factory.getbasetemp())


def test_a_stream_password_stays_out_of_logs_errors_and_the_report(model: Path, tmp_path: Path) -> None:
    pictures = [np.full((120, 160, 3), value, np.uint8) for value in (40, 120, 200)]
    report = tmp_path / "r.json"
    with mjpeg_camera(pictures) as url:
        with_password = url.replace("http://", f"http://viewer:{SECRET}@")
        result = run_cli("camera", "--device", with_password, "--model", model, "--frames", "5", "--headless", "--report", report,
                         "--json")
    assert result.returncode == 0, result.output
    assert SECRET not in result.output
    text = report.read_text()
    data = json.loads(text)
    assert SECRET not in text and data["frames"] == 5
    assert data["source"]["spec"] == url.replace("http://", "http://viewer:***@") and "viewer:***@" in data["source"]["description"]

    nobody = f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/stream1"  # nothing listens: the error names the stream, redacted
    failed = run_cli("camera", "--device", nobody, "--model", model, "--frames", "1", "--headless", "--report", tmp_path / "x.json")
    assert failed.returncode != 0 and SECRET not in failed.output and "admin:***@127.0.0.1" in failed.output, failed.output
    typo = run_cli("camera", "--device", f"rstp://admin:{SECRET}@cam/stream1", "--model", model, "--report", tmp_path / "y.json")
    assert_clean_error(typo, "admin:***@cam")
    assert SECRET not in typo.output
