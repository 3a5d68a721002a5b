"""The Raspberry Pi AI Camera as a classifier: the network runs on the Sony IMX500 sensor, picamera2 hands over each
frame with the sensor's output tensor, and edgecls turns that tensor into ranked classes with the export's own labels
(so a custom N-class model needs no code edits, unlike picamera2's 1,000-class demo). No TensorFlow here.

`network.rpk` comes from `imx500-package -i packerOut.zip -o OUT` on the Pi (imx500-tools); the labels come from the
export folder's meta.json / labels.txt copied beside it. picamera2 (apt's python3-picamera2) is imported only when a
reader is opened; `output_scores` and `classes_of` are plain numpy and run anywhere.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.camera.sources import CameraError, to_bgr
from edgecls.errors import ConfigError
from edgecls.meta import META_FILENAME, ModelMeta
from edgecls.postprocess import Class, softmax, top_k

PROBABILITY_SLACK = 0.05  # a tensor whose values are >= 0 and sum to 1 within this is already softmax'ed
LABEL_FILES = ("meta.json", "labels.txt")


def output_scores(outputs: Any, num_classes: int) -> np.ndarray:
    """Class probabilities (float32, num_classes) from the sensor's output tensors (picamera2's IMX500.get_outputs):
    the first tensor, flattened; softmax applied when the network's last layer did not (values that are no distribution)."""
    if outputs is None or len(outputs) == 0:
        raise CameraError("the IMX500 returned no output tensor for this frame", "Wait for the network firmware to finish loading")
    tensor = np.asarray(outputs[0], dtype=np.float32).reshape(-1)
    if tensor.size != num_classes:
        raise CameraError(f"the network on the IMX500 outputs {tensor.size} values, the model has {num_classes} labels",
                          "Package the packerOut.zip of this export (imx500-package) and load that network.rpk")
    if not np.all(np.isfinite(tensor)):
        raise CameraError("the IMX500 output tensor holds NaN or infinite values", "Re-package and reload the network.rpk")
    if tensor.min() >= -1e-6 and abs(float(tensor.sum()) - 1.0) <= PROBABILITY_SLACK:
        return tensor
    return softmax(tensor).astype(np.float32)


def classes_of(outputs: Any, labels: list[str], k: int = 5) -> list[Class]:
    """The k best classes of one frame's output tensors, with the export's labels."""
    return top_k(output_scores(outputs, len(labels)), labels, k)


def check_network(network: Path) -> None:
    """CameraError unless `network` is an existing .rpk file (what imx500-package writes)."""
    if network.suffix != ".rpk" or not network.is_file():
        raise CameraError(f"'{network}' is not a network.rpk file",
                          "Package the export on the Pi: imx500-package -i packerOut.zip -o OUT, then pass OUT/network.rpk")


def picamera2_classes() -> tuple[Any, Any]:
    """(Picamera2, IMX500) from picamera2, or the one-line CameraError saying how to install it."""
    try:
        from picamera2 import Picamera2
        from picamera2.devices import IMX500
    except ImportError as exc:
        raise CameraError("picamera2 with IMX500 support is not installed in this Python environment",
                          "sudo apt install python3-picamera2 imx500-firmware; make the venv with --system-site-packages") from exc
    return Picamera2, IMX500


def network_meta(network: Path) -> ModelMeta:
    """The export's meta.json beside network.rpk; without one, a meta made from labels.txt beside it."""
    meta_file = network.parent / META_FILENAME
    if meta_file.is_file():
        return ModelMeta.load(meta_file)
    return ModelMeta(architecture="imx500 network", input_size=(1, 1), labels=labels_beside(network), format="imx500", precision="int8")


class SensorBackend:
    """The network on the IMX500 in the loop's place of a model backend: its meta and labels come from the export beside
    network.rpk; inference runs on the sensor, so frames arrive with their scores (Imx500Reader.read_scored) and
    `run` refuses images from anywhere else (an upload to the live view's API)."""

    name = "imx500"
    device = "imx500"
    classifies_uploads = False  # the live view's POST /api/classify answers 501
    threads: int | None = None
    precision_ran = "int8 (on the IMX500 sensor)"
    input_quantization = None
    output_quantization = None

    def __init__(self, network: Path) -> None:
        network = Path(network)
        check_network(network)
        self.path = network
        self.meta = network_meta(network)
        self.input_hw: tuple[int | None, int | None] = tuple(self.meta.input_size)  # type: ignore[assignment]
        self.num_classes: int | None = len(self.meta.labels)
        self.closed = False

    def scores(self, outputs: Any) -> np.ndarray:
        """A frame's output tensors (Imx500Reader.read_outputs) as class probabilities; CameraError for a malformed one."""
        return output_scores(outputs, len(self.meta.labels))

    def run(self, batch: np.ndarray) -> np.ndarray:  # noqa: ARG002  nothing runs here
        raise ConfigError(f"the network {self.path.name} runs on the IMX500 sensor: it classifies only what the camera sees",
                          "Classify images with the export's mct_quantized.keras on a PC, or point the camera at them")

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> SensorBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def labels_beside(network: Path) -> list[str]:
    """The labels of the network: meta.json (edgecls' export) or labels.txt beside the .rpk (or beside packerOut.zip)."""
    folder = network.parent
    meta = folder / LABEL_FILES[0]
    if meta.is_file():
        with contextlib.suppress(OSError, ValueError):
            labels = json.loads(meta.read_text(encoding="utf-8")).get("labels")
            if isinstance(labels, list) and labels and all(isinstance(label, str) for label in labels):
                return labels
    text = folder / LABEL_FILES[1]
    if text.is_file():
        labels = [line.strip() for line in text.read_text(encoding="utf-8").splitlines() if line.strip()]
        if labels:
            return labels
    raise CameraError(f"no labels beside {network} (meta.json or labels.txt)",
                      "Copy meta.json and labels.txt from RUN/export/imx500-int8/ next to network.rpk")


class Imx500Reader:
    """picamera2 with the network on the IMX500: `read_outputs()` gives (BGR frame, output tensors or None) per frame,
    `read_scored()` (BGR frame, probabilities or None). The camera loop reads the outputs and scores them itself."""

    is_live = True

    def __init__(self, network: Path, labels: list[str] | None = None, width: int = 640, height: int = 480,
                 fps: float | None = None, *, devices: tuple[Any, Any] | None = None) -> None:
        """devices: (Picamera2, IMX500) classes to use instead of picamera2's (tests without the camera); None imports them."""
        network = Path(network)
        check_network(network)
        self.labels = labels or labels_beside(network)
        Picamera2, IMX500 = devices if devices is not None else picamera2_classes()  # noqa: N806  picamera2's class names
        try:
            self._imx500 = IMX500(str(network))  # before Picamera2(): it selects the network firmware
            self._camera = Picamera2(self._imx500.camera_num)
            controls = {"FrameRate": float(fps)} if fps else {}
            config = self._camera.create_preview_configuration(main={"size": (int(width), int(height)), "format": "RGB888"},
                                                               controls=controls, buffer_count=4)
            self._imx500.show_network_fw_progress_bar()  # the first upload of a network takes minutes
            self._camera.start(config)
        except Exception as exc:  # noqa: BLE001  picamera2 raises many types depending on what is missing
            raise CameraError(f"cannot start the AI Camera with {network} ({type(exc).__name__}: {exc})",
                              "Check 'rpicam-hello --list-cameras' lists an imx500 and that imx500-firmware is installed") from exc
        self.network = network
        self.fps = float(fps) if fps else None
        self.size = (int(width), int(height))

    def read_outputs(self) -> tuple[np.ndarray | None, Any]:
        """The next frame (BGR) and the sensor's output tensors for it (None while the network has no result yet)."""
        try:
            request = self._camera.capture_request()
        except Exception:  # noqa: BLE001  a camera that went away
            return None, None
        try:
            frame = np.asarray(request.make_array("main"))
            metadata = request.get_metadata()
        finally:
            request.release()
        return to_bgr(frame), self._imx500.get_outputs(metadata)

    def read_scored(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The next frame (BGR) and the sensor's class probabilities for it (None while the network has no result yet)."""
        frame, outputs = self.read_outputs()
        return frame, None if outputs is None else output_scores(outputs, len(self.labels))

    def read(self) -> np.ndarray | None:
        return self.read_outputs()[0]

    def close(self) -> None:
        from edgecls.camera.sources import close_picamera

        close_picamera(self._camera)

    def describe(self) -> str:
        return f"Raspberry Pi AI Camera (IMX500 runs {self.network.name}, {len(self.labels)} classes; main {self.size[0]}x{self.size[1]})"
