"""`load_backend`: pick LiteRT, onnxruntime or OpenVINO by file suffix, find the model's meta, check the contract.

numpy only at import time; each backend module imports its runtime package when it is loaded.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecls.errors import ConfigError, ModelError, suggest
from edgecls.meta import META_FILENAME, ModelMeta
from edgecls.runtime.base import Backend
from edgecls.runtime.common import label_mismatch

log = logging.getLogger("edgecls.runtime")


@dataclass(frozen=True)
class RuntimeFormat:
    """One artifact kind a runtime reads."""

    suffix: str
    module: str
    cls: str


RUNTIMES = {
    ".tflite": RuntimeFormat(".tflite", "edgecls.runtime.litert", "LiteRTBackend"),
    ".onnx": RuntimeFormat(".onnx", "edgecls.runtime.onnx", "OnnxBackend"),
    ".xml": RuntimeFormat(".xml", "edgecls.runtime.openvino", "OpenVinoBackend"),
}
_NOT_ARTIFACTS = {
    ".bin": "pass the .xml beside it (an OpenVINO IR is an .xml plus its .bin)",
    ".keras": "a Keras model runs with 'edgecls predict RUN_FOLDER'; export it first to run it here",
    ".h5": "a Keras model runs with 'edgecls predict RUN_FOLDER'; export it first to run it here",
    ".json": "pass the model file beside meta.json, not meta.json itself",
}


def find_meta(path: Path) -> tuple[ModelMeta, str]:
    """The artifact's meta and where it came from: meta.json beside it when that is a file, else the metadata
    embedded in the artifact (a lone .tflite/.onnx/.xml is enough), else a one-line ModelError.

    meta.json is the readable copy and wins; when the embedded copy says otherwise (labels, input size, colour
    order, normalisation), one warning line says so (logger "edgecls.runtime").
    """
    from edgecls.metadata import read_embedded_meta

    sidecar = path.parent / META_FILENAME
    if sidecar.is_file():
        meta = ModelMeta.load(sidecar)
        try:
            embedded = read_embedded_meta(path)
        except ModelError:
            embedded = None  # the sidecar is the contract; the runtime itself names a damaged model file
        if embedded is not None:
            differences = meta_differences(meta, embedded)
            if differences:
                log.warning("warning: %s and the metadata embedded in '%s' disagree (%s); using %s",
                            sidecar, path.name, "; ".join(differences), META_FILENAME)
        return meta, str(sidecar)
    embedded = read_embedded_meta(path)
    if embedded is not None:
        return embedded, f"the metadata embedded in '{path}'"
    why = f"'{sidecar}' is a folder" if sidecar.is_dir() else f"looked for '{sidecar}'"
    raise ModelError(
        f"no {META_FILENAME} beside '{path}' and no edgecls metadata embedded in it ({why})",
        f"Copy the {META_FILENAME} that was exported with it (RUN/export/<target>-<precision>/{META_FILENAME}) into "
        f"'{path.parent}', or export the artifact again (exports embed it): it holds the labels and the input contract",
    )


def meta_differences(sidecar: ModelMeta, embedded: ModelMeta) -> list[str]:
    """What meta.json says differently from the artifact's embedded metadata, about what the runtime uses; one phrase each."""
    differences = []
    if sidecar.labels != embedded.labels:
        if len(sidecar.labels) != len(embedded.labels):
            differences.append(f"{len(sidecar.labels)} labels vs {len(embedded.labels)} embedded")
        else:
            first = next(i for i, (a, b) in enumerate(zip(sidecar.labels, embedded.labels)) if a != b)
            order = "the same labels in another order: " if sorted(sidecar.labels) == sorted(embedded.labels) else ""
            differences.append(f"{order}label {first} is '{sidecar.labels[first]}' vs '{embedded.labels[first]}' embedded")
    for name in ("input_size", "color_order", "normalization_baked_in", "mean", "std", "output"):
        mine, theirs = getattr(sidecar, name), getattr(embedded, name)
        if name in ("mean", "std") and (sidecar.normalization_baked_in or embedded.normalization_baked_in):
            continue  # baked into the model: mean/std are informational
        if _plain(mine) != _plain(theirs):
            differences.append(f"{name} {_plain(mine)} vs {_plain(theirs)} embedded")
    return differences


def _plain(value: Any) -> Any:
    return [float(v) if isinstance(v, float) else v for v in value] if isinstance(value, (tuple, list)) else value


def check_contract(backend: Backend, meta: ModelMeta, meta_source: str) -> None:
    """The artifact's input size and class count must match its meta."""
    height, width = backend.input_hw
    if (height is not None and height != meta.input_size[0]) or (width is not None and width != meta.input_size[1]):
        raise ModelError(
            f"'{backend.path}' takes {height}x{width} input but {meta_source} says input_size {meta.input_size[0]}x{meta.input_size[1]}",
            "Export the artifact again from the same run, or use the meta.json it was exported with",
        )
    if backend.num_classes is not None and backend.num_classes != meta.num_classes:
        raise label_mismatch(backend.path, backend.num_classes, meta, meta_source)


def load_backend(
    path: str | Path, device: str = "cpu", threads: int | None = None, *, meta: ModelMeta | None = None, **options: Any
) -> Backend:
    """Load a .tflite, .onnx or .xml artifact with the meta.json beside it, else its embedded metadata (or `meta`).

    device: "cpu" | "coral" (.tflite) | "cuda"/"gpu"/"auto" (.onnx) | "gpu"/"npu"/"auto" (.xml).
    options: .tflite edgetpu_device; .onnx providers; .xml precision_hint, config, batch (1 by default; None keeps it dynamic).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in RUNTIMES:
        hint = _NOT_ARTIFACTS.get(suffix, f"Pass a {', '.join(RUNTIMES)} file{suggest(suffix, RUNTIMES)}")
        raise ModelError(f"'{path}' has suffix '{suffix}', which no edgecls runtime reads", hint)
    if not path.is_file():
        raise ModelError(f"model file '{path}' does not exist", "Check the path, or export the model first")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer; got {threads!r}", "Pass e.g. threads=4, or None for the runtime's default")
    spec = RUNTIMES[suffix]
    module = importlib.import_module(spec.module)
    unknown = sorted(set(options) - set(module.OPTIONS))
    if unknown:
        choices = ", ".join(module.OPTIONS) or "none"
        raise ConfigError(
            f"option '{unknown[0]}' does not apply to {suffix} files{suggest(unknown[0], module.OPTIONS)}",
            f"Options for {suffix}: {choices}",
        )
    if meta is None:
        meta, meta_source = find_meta(path)
    else:
        meta_source = "the meta passed in"
        meta.check(meta_source)
    backend: Backend = getattr(module, spec.cls)(path, meta, device=device, threads=threads, **options)
    # run-time class-count errors name it: "meta.json" (as ever) or the embedded metadata
    beside = meta_source == str(path.parent / META_FILENAME)
    backend.meta_source = META_FILENAME if beside else meta_source  # type: ignore[attr-defined]
    try:
        check_contract(backend, meta, meta_source)
    except ModelError:
        backend.close()
        raise
    return backend
