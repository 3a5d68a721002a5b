"""Which artifact a `--model` names, where the report goes by default, and which files a run reads.

Shared by `edgecls camera` (edgecls.camera.loop) and `edgecls serve` (edgecls.camera.api).
"""
from __future__ import annotations

import os
from pathlib import Path

from edgecls.errors import ConfigError, ModelError

ARTIFACT_NAMES = ("model.tflite", "model.onnx", "model.xml")
REPORT_NAME = "camera_report.json"


def resolve_model(model: str | Path) -> Path:
    """An artifact file, or a folder holding exactly one model.tflite / model.onnx / model.xml."""
    path = Path(model).expanduser()
    if path.is_dir():
        found = [path / name for name in ARTIFACT_NAMES if (path / name).is_file()]
        if len(found) == 1:
            return found[0]
        if (path / "model.keras").is_file():
            raise ModelError(
                f"'{path}' is a training run folder; the camera runs exported artifacts (no TensorFlow)",
                f"Export it first: edgecls export {path} --int8 --target tflite, then pass {path}/export/tflite-int8/model.tflite",
            )
        what = "several artifacts" if found else "no model.tflite, model.onnx or model.xml"
        raise ModelError(f"folder '{path}' holds {what}", "Pass the artifact file itself, e.g. EXPORT/tflite-int8/model.tflite")
    if not path.exists() and path.suffix.lower() == ".rpk":
        raise ModelError(f"model '{path}' does not exist",
                         "Package the IMX500 export on the Pi: imx500-package -i packerOut.zip -o OUT "
                         "(sudo ./install.sh of the pi-ai-camera bundle does it)")
    if not path.exists():
        raise ModelError(f"model '{path}' does not exist", "Pass an exported .tflite, .onnx or .xml file (made by 'edgecls export')")
    return path


def default_report_path(model: str | Path) -> Path:
    """Where `edgecls camera` writes its report unless told: beside the model artifact."""
    folder = resolve_model(model).parent
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"cannot write the camera report beside the model: '{folder}' is not writable",
                          "Pass --report PATH in a writable folder")
    return folder / REPORT_NAME


def run_inputs(artifact: Path, source: object = None, token_file: Path | None = None) -> dict[str, Path | None]:
    """What a run reads, by the option the user named it with: no output may be, or lie inside, one of them."""
    spec = str(source) if isinstance(source, (str, Path)) else ""
    device = Path(spec).expanduser() if spec and not spec.isdigit() and "://" not in spec and Path(spec).expanduser().exists() else None
    weights = artifact.with_suffix(".bin") if artifact.suffix.lower() == ".xml" else None
    return {"--model": artifact, "--model's meta.json": artifact.parent / "meta.json", "--model's weights": weights,
            "--device": device, "--token-file": token_file}


__all__ = ["ARTIFACT_NAMES", "REPORT_NAME", "default_report_path", "resolve_model", "run_inputs"]
