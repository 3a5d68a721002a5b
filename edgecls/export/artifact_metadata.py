"""What export adds to an artifact after its writer: the standard metadata of its format, and a golden set.

`embed_metadata` runs in api._post_process (before validation, on every judged candidate): the ecosystem's own
metadata, written by edgecls.metadata (the one place that decides what each format carries):
  - tflite / edgetpu: TFLITE_METADATA + labels.txt + edgecls_meta (write_tflite_metadata_file), in the compiled
    *_edgetpu.tflite and in the CPU model it came from;
  - onnx: per-key metadata_props + "model_info <key>" + edgecls_meta (write_onnx_metadata);
  - openvino: rt_info model_info / edgecls_info / edgecls_meta, NHWC layout, output name (write_openvino_metadata).
`with_metadata` gives the INT8 fallback a writer that embeds it too (its candidates are judged as lone files).
`store_golden` runs after validation passed: golden.npz beside the artifact (edgecls.metadata.golden), the scores
that this machine's edgecls runtime gives the held-out images, as `edgecls verify` will feed them.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ExportError, ModelError
from edgecls.export.base import Artifact, ExportRequest, artifact_meta
from edgecls.export.formats import Format
from edgecls.meta import ModelMeta
from edgecls.metadata import ArtifactInfo, artifact_info

GOLDEN_CANDIDATES = 128  # held-out images run to pick the golden set from (make_golden keeps DEFAULT_COUNT)
GOLDEN_SUFFIXES = (".tflite", ".onnx", ".xml")  # what edgecls.runtime runs, so what `edgecls verify` can check
_FIX = "Report this with the model architecture"


def embed_artifact(artifact: Artifact, source_meta: ModelMeta, source_run: str = "") -> Artifact:
    """`artifact` with its format's metadata embedded (the meta as it describes this artifact: format, precision, I/O
    quantization), and notes["metadata"] saying what was written. An Edge TPU model's CPU model gets it too."""
    meta = artifact_meta(source_meta, artifact.format, artifact.precision, artifact.input_quantization, artifact.output_quantization)
    cpu_model = artifact.notes.get("cpu_model")
    extra = (artifact.path.parent / cpu_model,) if cpu_model and cpu_model != artifact.path.name else ()
    notes = embed_metadata(artifact.path, artifact.format, meta, source_run, extra)
    return dataclasses.replace(artifact, notes={**artifact.notes, "metadata": notes})


@dataclass(frozen=True)
class EmbeddingFormat(Format):
    """A format whose writer embeds the metadata too: the INT8 fallback judges its candidates as lone files (no
    meta.json beside them) before the chosen one reaches api._post_process."""

    source_meta: ModelMeta | None = None
    source_run: str = ""

    def load_writer(self) -> Callable[[ExportRequest], Artifact]:
        write = super().load_writer()

        def write_and_embed(request: ExportRequest) -> Artifact:
            return embed_artifact(write(request), self.source_meta or request.meta, self.source_run)

        return write_and_embed


def with_metadata(fmt: Format, source_meta: ModelMeta, source_run: str = "") -> EmbeddingFormat:
    fields = {field.name: getattr(fmt, field.name) for field in dataclasses.fields(fmt)}
    return EmbeddingFormat(**fields, source_meta=source_meta, source_run=source_run)


def embed_metadata(path: Path, fmt: str, meta: ModelMeta, source_run: str = "", extra: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Write the standard metadata of `fmt` into the artifact at `path` (and the `extra` tflite files, e.g. the CPU model
    an Edge TPU model was compiled from), in place; a note for the export report (what was written, bytes it added)."""
    info = artifact_info(meta, source_run=source_run)
    files = [path, *extra]
    before = sum(_size(p, fmt) for p in files)
    try:
        if fmt in ("tflite", "edgetpu"):
            from edgecls.metadata import write_tflite_metadata_file

            for tflite in files:
                write_tflite_metadata_file(tflite, meta, info)
            written = ["TFLITE_METADATA", "labels.txt", "edgecls_meta"]
        elif fmt == "onnx":
            _embed_onnx(path, meta, info)
            written = ["metadata_props", "model_info", "edgecls_meta"]
        elif fmt == "openvino":
            _embed_openvino(path, meta, info)
            written = ["rt_info model_info", "edgecls_info", "edgecls_meta"]
        else:  # e.g. imx500's packerOut.zip: no metadata format of its own that edgecls writes
            return {"written": [], "files": [], "bytes_added": 0}
    except ModelError as exc:  # the artifact does not match its meta: a writer bug, not the user's input
        raise ExportError(f"cannot embed the {fmt} metadata into {path.name}: {exc.message}", _FIX) from exc
    return {"written": written, "files": [p.name for p in files], "bytes_added": sum(_size(p, fmt) for p in files) - before}


def _size(path: Path, fmt: str) -> int:
    return path.stat().st_size + (path.with_suffix(".bin").stat().st_size if fmt == "openvino" else 0)


def _embed_onnx(path: Path, meta: ModelMeta, info: ArtifactInfo) -> None:
    import onnx

    from edgecls.fsutil import atomic_path
    from edgecls.metadata import write_onnx_metadata

    proto = write_onnx_metadata(onnx.load(str(path)), meta, info)
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save(proto, str(tmp))


def _embed_openvino(xml: Path, meta: ModelMeta, info: ArtifactInfo) -> None:
    """Set the metadata on the IR read back, save it beside, then replace the .xml and .bin (weights stay as saved:
    f16 constants of an fp16 IR are not compressed again, i8 ones stay i8)."""
    from edgecls.openvino_import import import_openvino

    ov = import_openvino("export")

    from edgecls.metadata import write_openvino_metadata

    model = write_openvino_metadata(ov.Core().read_model(str(xml)), meta, info)
    tmp = xml.with_name(f".{xml.stem}.metadata.xml")
    try:
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        del model  # it maps the old .bin
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp, xml)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".bin").unlink(missing_ok=True)


def store_golden(checked: Path, folder: Path, images: np.ndarray, threads: int | None = None) -> Path:
    """golden.npz in `folder`: up to GOLDEN_CANDIDATES held-out `images` (uint8 at the input size) run through the
    validated file `checked` by edgecls.runtime here, fed as `edgecls verify` feeds them (edgecls' preprocessing, no
    resize), with the runtime that ran them. For an Edge TPU export `checked` is the CPU model it was compiled from."""
    from edgecls.metadata import make_golden, save_golden
    from edgecls.preprocess import prepare
    from edgecls.runtime import load_backend
    from edgecls.runtime.common import describe_runtime

    pixels = np.asarray(images[:GOLDEN_CANDIDATES])
    with load_backend(checked, threads=threads) as backend:
        meta = backend.meta
        as_is = dataclasses.replace(meta, crop_fraction=1.0)  # the golden pixels are at the input size already
        scores = np.concatenate([backend.run(np.stack([prepare(image, as_is) for image in pixels[i : i + 32]]))
                                 for i in range(0, len(pixels), 32)])
        golden = make_golden(pixels, scores, list(meta.labels), meta.precision, runtime=describe_runtime(backend))
    return save_golden(golden, folder)
