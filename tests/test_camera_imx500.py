"""`edgecls camera --device imx500`: the Raspberry Pi AI Camera runs the network on its sensor and picamera2 hands over
each frame with the sensor's output tensor; the camera loop scores that tensor instead of running a model.

picamera2 (apt's python3-picamera2, built on libcamera) and the IMX500 sensor cannot be had on this machine. The tests
below therefore inject a test double for the hardware where `Imx500Reader` takes its device (`devices=(Picamera2,
IMX500)`): `FakePicamera2` / `FakeImx500` imitate picamera2's capture_request / get_outputs. Everything from the reader
up (the grabber, the loop, the report, sinks, the CLI's errors) is the real code. The frame's pixels encode its number
and the output tensor is a function of that number, so the tests check that every frame stays paired with its scores.
"""
from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecls.camera.imx500 import Imx500Reader, SensorBackend
from edgecls.camera.loop import CameraRunError, FrameResult, run_camera
from edgecls.meta import ModelMeta
from edgecls.postprocess import softmax
from tests.conftest import assert_clean_error, run_cli

LABELS = ["cat", "dog", "bird"]
LOADING_FRAMES = 2  # frames the fake sensor delivers before its network gives results


def logits_of(number: int) -> np.ndarray:
    """The fake network's output for frame `number`: a different winner for consecutive frames."""
    values = np.full(len(LABELS), -1.0, np.float32)
    values[number % len(LABELS)] = 2.0 + (number % 5) * 0.1
    return values


class FakeRequest:
    def __init__(self, number: int, outputs: Any) -> None:
        self.number, self.outputs, self.released = number, outputs, False

    def make_array(self, stream: str) -> np.ndarray:
        assert stream == "main"
        return np.full((24, 32, 3), self.number % 256, np.uint8)  # the frame's number in its pixels

    def get_metadata(self) -> dict[str, Any]:
        return {"number": self.number, "outputs": self.outputs}

    def release(self) -> None:
        self.released = True


class FakeImx500:
    """Stands in for picamera2.devices.IMX500 (no sensor here)."""

    def __init__(self, network: str) -> None:
        self.network, self.camera_num = network, 0

    def show_network_fw_progress_bar(self) -> None:
        pass

    def get_outputs(self, metadata: dict[str, Any]) -> Any:
        return metadata["outputs"]


def loading_then_every_third(number: int) -> Any:
    """No result while the network loads, then none for every third frame (a sensor slower than its frames)."""
    return None if number <= LOADING_FRAMES or number % 3 == 0 else [logits_of(number)]


def fake_picamera2(outputs_of: Any = loading_then_every_third) -> type:
    """A Picamera2 stand-in whose frame n carries outputs_of(n); frames at most every 2 milliseconds."""

    class FakePicamera2:
        instances: list[FakePicamera2] = []

        def __init__(self, camera_num: int) -> None:
            self.camera_num, self.started, self.closed, self.count = camera_num, False, False, 0
            self.lock = threading.Lock()
            FakePicamera2.instances.append(self)

        def create_preview_configuration(self, main: dict[str, Any], controls: dict[str, Any], buffer_count: int) -> dict[str, Any]:
            return {"main": main, "controls": controls, "buffer_count": buffer_count}

        def start(self, config: dict[str, Any]) -> None:
            self.config, self.started = config, True

        def capture_request(self) -> FakeRequest:
            time.sleep(0.002)
            with self.lock:
                self.count += 1
                return FakeRequest(self.count, outputs_of(self.count))

        def stop(self) -> None:
            self.started = False

        def close(self) -> None:
            self.closed = True

    return FakePicamera2


def export_folder(tmp_path: Path, meta: bool = True) -> Path:
    """network.rpk (the bytes do not matter to the fake) with the export's meta.json or only labels.txt beside it."""
    folder = tmp_path / "rpk"
    folder.mkdir()
    network = folder / "network.rpk"
    network.write_bytes(b"rpk")
    if meta:
        ModelMeta(architecture="mobilenet_v2", input_size=(96, 96), labels=LABELS, format="imx500", precision="int8").save(folder)
    else:
        (folder / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS))
    return network


def opener(network: Path, picamera: type) -> Any:
    def open_imx500() -> Imx500Reader:
        return Imx500Reader(network, devices=(picamera, FakeImx500))

    return open_imx500


def test_the_loop_uses_the_sensors_scores_paired_with_their_frames(tmp_path: Path) -> None:
    network = export_folder(tmp_path)
    picamera = fake_picamera2()
    results: list[FrameResult] = []
    report = tmp_path / "report.json"
    summary = run_camera(network, opener(network, picamera), frames=12, report=report, on_result=results.append)
    assert summary["counts"]["processed"] == 12 and len(results) == 12
    counts = summary["counts"]
    # every frame the loop took was classified or counted as without a result (one may be left in the grabber's slot)
    assert counts["captured"] - counts["dropped"] - counts["processed"] - counts["awaiting_network"] in (0, 1)
    assert counts["awaiting_network"] >= 1 or counts["dropped"] > 0
    for result in results:
        number = int(result.frame[0, 0, 0])
        assert loading_then_every_third(number) is not None  # no frame without a result was classified
        np.testing.assert_allclose(result.raw, softmax(logits_of(number)), rtol=1e-6)  # the scores of this very frame
        assert result.label == LABELS[number % len(LABELS)]
    assert summary["backend"]["name"] == "imx500" and summary["settings"]["pipeline"] is False
    assert "AI Camera" in summary["source"]["description"] and summary["source"]["live"] is True
    assert {"capture_wait", "inference", "end_to_end"} <= set(summary["stages_ms"])
    assert json.loads(report.read_text())["status"] == "finished"
    camera = picamera.instances[0]
    assert camera.closed and camera.config["main"] == {"size": (640, 480), "format": "RGB888"}


def test_labels_txt_alone_is_enough_and_probabilities_are_kept(tmp_path: Path) -> None:
    network = export_folder(tmp_path, meta=False)
    probabilities = np.array([0.1, 0.2, 0.7], np.float32)  # a network ending in softmax: no second softmax
    backend = SensorBackend(network)
    assert backend.meta.labels == LABELS
    np.testing.assert_allclose(backend.scores([probabilities]), probabilities)
    picamera = fake_picamera2(lambda n: [probabilities])
    results: list[FrameResult] = []
    run_camera(network, opener(network, picamera), frames=3, on_result=results.append)
    assert [r.label for r in results] == ["bird"] * 3


def test_a_network_with_other_classes_stops_the_run_with_one_line(tmp_path: Path) -> None:
    network = export_folder(tmp_path)
    picamera = fake_picamera2(lambda n: [np.zeros(1000, np.float32)])  # e.g. picamera2's 1,000-class demo network
    with pytest.raises(CameraRunError) as caught:
        run_camera(network, opener(network, picamera), frames=5, report=tmp_path / "report.json")
    assert "outputs 1000 values, the model has 3 labels" in caught.value.message
    assert caught.value.summary["counts"]["inference_failed"] >= 30  # type: ignore[attr-defined]


def test_frames_the_model_is_unsure_about_are_kept(tmp_path: Path) -> None:
    from edgecls.integrations.uncertain import UNLABELLED, UncertainKeeper

    network = export_folder(tmp_path)
    unsure = np.array([0.4, 0.35, 0.25], np.float32)
    keeper = UncertainKeeper(tmp_path / "keep", threshold=0.6, rate=1000.0)
    run_camera(network, opener(network, fake_picamera2(lambda n: [unsure])), frames=3, sinks=[keeper])
    sidecars = sorted((tmp_path / "keep" / UNLABELLED).glob("*.json"))
    assert sidecars, "no uncertain frame was kept"
    kept = json.loads(sidecars[0].read_text())
    assert kept["model"] == "network.rpk" or "network.rpk" in json.dumps(kept)


def test_the_rpk_needs_the_imx500_and_the_imx500_needs_an_rpk(tmp_path: Path) -> None:
    network = export_folder(tmp_path)
    report = tmp_path / "report.json"
    assert_clean_error(run_cli("camera", "--model", network, "--device", "0", "--frames", "1", "--report", report),
                       "runs on the AI Camera's sensor", "--device imx500")
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    from edgecls.camera.sources import CameraError, open_source

    with pytest.raises(CameraError, match="is no network.rpk"):
        open_source("imx500", network=tmp_path / "model.onnx")
    assert not report.exists()


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed here")
def test_without_picamera2_the_cli_says_how_to_install_it(tmp_path: Path) -> None:
    network = export_folder(tmp_path)
    result = run_cli("camera", "--model", network, "--device", "imx500", "--frames", "1", "--report", tmp_path / "report.json")
    assert_clean_error(result, "picamera2 with IMX500 support is not installed", "apt install python3-picamera2")


def test_live_view_shows_the_sensors_results_and_refuses_uploads(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    from tests.camera_helpers import free_port

    network = export_folder(tmp_path)
    token = "imx500-live-view-token-0123456789"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    port = free_port()
    first, release = threading.Event(), threading.Event()
    answers: dict[str, Any] = {}

    def hold_first_result(result: FrameResult) -> None:
        if not first.is_set():
            first.set()
            release.wait(60)  # the loop waits here while the test asks the live view

    def run() -> None:
        answers["summary"] = run_camera(network, opener(network, fake_picamera2()), frames=3, serve=f"127.0.0.1:{port}",
                                        token_file=token_file, on_result=hold_first_result)

    loop = threading.Thread(target=run, daemon=True)
    loop.start()
    try:
        assert first.wait(60), "no frame was classified"
        headers = {"Authorization": f"Bearer {token}"}
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/api/info", headers=headers), timeout=30) as reply:
            info = json.loads(reply.read())
        assert info["model"]["backend"] == "imx500" and info["labels"] == LABELS
        upload = urllib.request.Request(f"http://127.0.0.1:{port}/api/classify", data=b"\xff\xd8 not needed", method="POST",
                                        headers={**headers, "Content-Type": "image/jpeg"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(upload, timeout=30)
        assert refused.value.code == 501 and "runs on the camera's sensor" in json.loads(refused.value.read())["error"]
    finally:
        release.set()
        loop.join(60)
    assert answers["summary"]["counts"]["processed"] == 3 and answers["summary"]["settings"]["serve"]


def test_a_network_that_never_gives_a_result_is_one_line(tmp_path: Path) -> None:
    network = export_folder(tmp_path)
    with pytest.raises(CameraRunError) as caught:
        run_camera(network, opener(network, fake_picamera2(lambda n: None)), seconds=0.5, report=tmp_path / "report.json")
    assert "the IMX500 gave no result for the" in caught.value.message and "still loading" in caught.value.message
    assert json.loads((tmp_path / "report.json").read_text())["counts"]["awaiting_network"] > 0


def test_a_network_not_packaged_yet_says_how_to_package_it(tmp_path: Path) -> None:
    """A service started before imx500-package ran: the fix names the packager, not another export format."""
    result = run_cli("camera", "--model", tmp_path / "rpk" / "network.rpk", "--device", "imx500", "--frames", "1")
    assert_clean_error(result, "network.rpk' does not exist", "imx500-package -i packerOut.zip")
    assert not (tmp_path / "rpk").exists()
