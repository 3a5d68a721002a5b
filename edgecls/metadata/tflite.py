"""Standard TFLite metadata (TFLITE_METADATA, schema "M001") plus edgecls' own ModelMeta in every .tflite.

What a .tflite carries after `write_tflite_metadata`:
  - Model.metadata "TFLITE_METADATA": a ModelMetadata flatbuffer (name, version, description, author,
    licence, min_parser_version) with one SubGraphMetadata: input "pixels" with ImageProperties (RGB,
    default size) and NormalizationOptions that match what the model really takes (mean 0 / std 1
    when normalisation is inside the model), output "probabilities" with FeatureProperties, stats
    0..1 and labels.txt as a TENSOR_AXIS_LABELS associated file; no score calibration.
  - labels.txt packed as a zip appended to the flatbuffer (the TFLite metadata convention that
    MediaPipe Tasks and TFLite Support read).
  - Model.metadata "edgecls_meta": the full ModelMeta as UTF-8 JSON.
The metadata flatbuffer is built by hand with `flatbuffers.Builder` (the field order of
metadata_schema.fbs is written down below); the model itself passes through `flatbuf.add_metadata`.
Readers need neither TensorFlow nor any runtime.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecls.errors import ModelError
from edgecls.meta import ModelMeta
from edgecls.metadata.common import (
    INPUT_NAME,
    LABELS_FILE,
    META_KEY,
    OUTPUT_NAME,
    ArtifactInfo,
    artifact_info,
    input_range,
    labels_text,
    meta_from_json,
    meta_json,
    pixel_normalization,
)
from edgecls.metadata.flatbuf import TFLITE_IDENTIFIER, Table, add_metadata, metadata_entries

TFLITE_METADATA = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"  # no member added after 1.0.0 is used (MediaPipe's metadata_version.cc rules)
TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8"}
# metadata_schema.fbs enums and union tags
COLOR_RGB, ASSOCIATED_TENSOR_AXIS_LABELS = 1, 2
CONTENT_FEATURE, CONTENT_IMAGE = 1, 2
PROCESS_NORMALIZATION = 1
_FIX = "Export the artifact again with 'edgecls export'"


@dataclass
class TensorInfo:
    """One model input or output as the flatbuffer declares it."""

    name: str
    dtype: str
    shape: list[int]
    scale: float | None = None
    zero_point: int | None = None


@dataclass
class StandardMetadata:
    """What a TFLITE_METADATA reader (MediaPipe, TFLite Support) sees in a file."""

    name: str | None = None
    version: str | None = None
    description: str | None = None
    author: str | None = None
    license: str | None = None
    min_parser_version: str | None = None
    input_name: str | None = None
    color_space: int | None = None
    default_size: tuple[int, int] | None = None  # (height, width)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    input_min: list[float] = field(default_factory=list)
    input_max: list[float] = field(default_factory=list)
    output_name: str | None = None
    output_content: int | None = None
    output_min: list[float] = field(default_factory=list)
    output_max: list[float] = field(default_factory=list)
    labels_file: str | None = None  # the output's TENSOR_AXIS_LABELS file name
    output_process_units: int = 0  # score calibration and the like: edgecls writes none
    labels: list[str] | None = None  # read from the packed associated file
    packed_files: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- writing
def write_tflite_metadata(model: bytes, meta: ModelMeta, info: ArtifactInfo | None = None) -> bytes:
    """`model` with TFLITE_METADATA, labels.txt packed after it and the ModelMeta JSON under META_KEY.

    Earlier edgecls/standard metadata and packed files are replaced: writing twice gives the same metadata (the
    replaced entries stay in the file as a few unreferenced bytes).
    Raises ModelError when the model's I/O does not match `meta` (size, class count, one image input).
    """
    flatbuffer = strip_packed_files(model)
    check_model_against_meta(flatbuffer, meta)
    info = info or artifact_info(meta)
    standard = build_metadata_buffer(meta, info)
    try:
        with_entries = add_metadata(flatbuffer, {TFLITE_METADATA: standard, META_KEY: meta_json(meta).encode("utf-8")})
    except ValueError as exc:
        raise ModelError(f"cannot add metadata to this .tflite: {exc}", _FIX) from exc
    return pack_files(with_entries, {LABELS_FILE: labels_text(meta).encode("utf-8")})


def write_tflite_metadata_file(path: str | Path, meta: ModelMeta, info: ArtifactInfo | None = None) -> Path:
    """Rewrite the .tflite at `path` in place (through a temp file and a rename), metadata added."""
    from edgecls.fsutil import atomic_path

    path = Path(path)
    content = write_tflite_metadata(path.read_bytes(), meta, info)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(content)
    return path


def build_metadata_buffer(meta: ModelMeta, info: ArtifactInfo) -> bytes:
    """The ModelMetadata flatbuffer ("M001") describing `meta` (see the module docstring)."""
    import flatbuffers

    if meta.color_order != "RGB":
        raise ModelError(f"the model takes {meta.color_order} pixels; TFLite metadata can only describe RGB input",
                         "Export an RGB model (every edgecls model is)")
    b = flatbuffers.Builder(1024)
    mean, std = pixel_normalization(meta)
    low, high = input_range(meta)

    def floats(values: Any) -> int:
        b.StartVector(4, len(values), 4)
        for value in reversed(list(values)):
            b.PrependFloat32(float(value))
        return int(b.EndVector())

    def offsets(items: list[int]) -> int:
        b.StartVector(4, len(items), 4)
        for item in reversed(items):
            b.PrependUOffsetTRelative(item)
        return int(b.EndVector())

    def table(fields: list[tuple[str, int, int]]) -> int:  # (kind, slot, value); kinds: ref, u32, u8, i8
        b.StartObject(max(slot for _, slot, _ in fields) + 1 if fields else 0)
        for kind, slot, value in fields:
            {"ref": b.PrependUOffsetTRelativeSlot, "u32": b.PrependUint32Slot, "u8": b.PrependUint8Slot,
             "i8": b.PrependInt8Slot}[kind](slot, value, 0)
        return int(b.EndObject())

    def stats(minimum: list[float], maximum: list[float]) -> int:
        maxima, minima = floats(maximum), floats(minimum)
        return table([("ref", 0, maxima), ("ref", 1, minima)])  # Stats: max, min

    # input: ImageSize(width, height) -> ImageProperties(color_space, default_size) -> Content(type, properties)
    height, width = meta.input_size
    size = table([("u32", 0, width), ("u32", 1, height)])
    image = table([("i8", 0, COLOR_RGB), ("ref", 1, size)])
    input_content = table([("u8", 0, CONTENT_IMAGE), ("ref", 1, image)])
    mean_vector, std_vector = floats(mean), floats(std)
    normalization = table([("ref", 0, mean_vector), ("ref", 1, std_vector)])
    process_units = offsets([table([("u8", 0, PROCESS_NORMALIZATION), ("ref", 1, normalization)])])
    input_stats = stats(low, high)
    input_name = b.CreateString(INPUT_NAME)
    how = "normalised inside the model" if meta.normalization_baked_in else "normalised as the process unit says"
    input_text = b.CreateString(f"Input image: {meta.color_order} pixels 0..255 ({height}x{width}, NHWC), {how}.")
    tensor_in = table([("ref", 0, input_name), ("ref", 1, input_text), ("ref", 3, input_content),
                       ("ref", 4, process_units), ("ref", 5, input_stats)])
    # output: FeatureProperties content, stats 0..1 for probabilities, labels.txt as TENSOR_AXIS_LABELS
    feature = table([])
    output_content = table([("u8", 0, CONTENT_FEATURE), ("ref", 1, feature)])
    labels_name, labels_text_ = b.CreateString(LABELS_FILE), b.CreateString("Labels for the classes the model recognises, in output order.")
    labels_file = table([("ref", 0, labels_name), ("ref", 1, labels_text_), ("i8", 2, ASSOCIATED_TENSOR_AXIS_LABELS)])
    output_files = offsets([labels_file])
    output_stats = stats([0.0], [1.0]) if meta.output == "probabilities" else None
    output_name = b.CreateString(OUTPUT_NAME)
    kind = "Probabilities" if meta.output == "probabilities" else "Logits"
    output_text = b.CreateString(f"{kind} of the {meta.num_classes} labels, in labels.txt order.")
    output_fields = [("ref", 0, output_name), ("ref", 1, output_text), ("ref", 3, output_content), ("ref", 6, output_files)]
    if output_stats is not None:
        output_fields.append(("ref", 5, output_stats))
    tensor_out = table(output_fields)
    inputs, outputs = offsets([tensor_in]), offsets([tensor_out])
    subgraph_name = b.CreateString("image_classifier")
    subgraph = offsets([table([("ref", 0, subgraph_name), ("ref", 2, inputs), ("ref", 3, outputs)])])
    strings = [b.CreateString(text) for text in (info.name, info.description, info.version, info.author, info.license, MIN_PARSER_VERSION)]
    root = table([("ref", 0, strings[0]), ("ref", 1, strings[1]), ("ref", 2, strings[2]), ("ref", 3, subgraph),
                  ("ref", 4, strings[3]), ("ref", 5, strings[4]), ("ref", 7, strings[5])])
    b.Finish(root, file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


def pack_files(flatbuffer: bytes, files: dict[str, bytes]) -> bytes:
    """`flatbuffer` followed by a zip of `files` (stored, not compressed), as TFLite metadata packs associated files."""
    buffer = io.BytesIO()
    buffer.write(flatbuffer)
    with zipfile.ZipFile(buffer, "a") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def strip_packed_files(model: bytes) -> bytes:
    """The flatbuffer part of a .tflite: anything packed after it (a zip of associated files) removed."""
    if not zipfile.is_zipfile(io.BytesIO(model)):
        return model
    with zipfile.ZipFile(io.BytesIO(model)) as archive:
        starts = [entry.header_offset for entry in archive.infolist()]
    end = min(starts) if starts else model.rfind(b"PK\x05\x06")
    return model[:end] if end > 8 else model


# ----------------------------------------------------------------------------- reading
def _load(source: str | Path | bytes) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "the .tflite bytes"
    path = Path(source)
    try:
        return path.read_bytes(), f"'{path}'"
    except OSError as exc:
        raise ModelError(f"cannot read '{path}': {exc.strerror}", "Check the path") from exc


def read_tflite_meta(source: str | Path | bytes) -> ModelMeta | None:
    """The ModelMeta embedded in a .tflite (path or bytes); None when it carries none. No TensorFlow."""
    data, name = _load(source)
    try:
        raw = metadata_entries(data).get(META_KEY)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{name} is not a readable TFLite file ({exc})", _FIX) from exc
    return None if raw is None else meta_from_json(raw, name)


def model_io(model: bytes) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """(inputs, outputs) of subgraph 0, read from the flatbuffer (schema.fbs: SubGraph, Tensor, QuantizationParameters)."""
    root = Table.root(model, TFLITE_IDENTIFIER)
    subgraphs = root.tables(2)
    if not subgraphs:
        raise ValueError("the model has no subgraph")
    graph = subgraphs[0]
    tensors = graph.tables(0)

    def info(index: int) -> TensorInfo:
        if not 0 <= index < len(tensors):
            raise ValueError(f"tensor index {index} of {len(tensors)}")
        tensor = tensors[index]
        kind = int(tensor.scalar(1, "b"))
        quant = tensor.table(4)
        scales = quant.scalars(2, "f") if quant else []
        zeros = quant.scalars(3, "q") if quant else []
        return TensorInfo(name=tensor.string(3) or "", dtype=TENSOR_TYPES.get(kind, f"type {kind}"),
                          shape=[int(d) for d in tensor.scalars(0, "i")],
                          scale=float(scales[0]) if scales else None, zero_point=int(zeros[0]) if zeros else None)

    return [info(int(i)) for i in graph.scalars(1, "i")], [info(int(i)) for i in graph.scalars(2, "i")]


def check_model_against_meta(model: bytes, meta: ModelMeta) -> None:
    """One image input (1, h, w, 3) of meta's size and one output of meta's class count, or ModelError."""
    try:
        inputs, outputs = model_io(model)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"the model is not a readable TFLite flatbuffer ({exc})", _FIX) from exc
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"the .tflite has {len(inputs)} inputs and {len(outputs)} outputs; a classifier has 1 and 1", _FIX)
    shape, want = inputs[0].shape, [1, *meta.input_size, 3]
    if shape != want:
        raise ModelError(f"the .tflite input is {shape} but the meta says {want} (batch 1, height, width, RGB)",
                         "Export the model and its meta.json from the same run")
    if not outputs[0].shape or outputs[0].shape[-1] != meta.num_classes:
        raise ModelError(f"the .tflite output is {outputs[0].shape} but the meta lists {meta.num_classes} labels",
                         "Export the model and its meta.json from the same run")


def client_notes(model: bytes) -> list[str]:
    """What third-party TFLite clients will make of this file's input (empty when MediaPipe Tasks takes it as is)."""
    inputs, _ = model_io(strip_packed_files(model))
    tensor = inputs[0]
    if tensor.dtype == "int8":
        return ["int8 input: MediaPipe Tasks takes only uint8 or float32 image inputs (export --io-type uint8 for it)"]
    if tensor.dtype == "uint8" and (tensor.scale, tensor.zero_point) not in ((1.0, 0), (None, None), (0.0, 0)):
        return [f"uint8 input quantised with scale {tensor.scale} zero point {tensor.zero_point}: clients that feed raw pixels "
                "(MediaPipe Tasks, Coral examples) expect scale 1 and zero point 0; calibrate with images spanning 0..255"]
    return []


def read_tflite_standard(source: str | Path | bytes) -> StandardMetadata | None:
    """The TFLITE_METADATA of a .tflite as a reader sees it (labels from the packed file); None when absent."""
    data, name = _load(source)
    try:
        raw = metadata_entries(data).get(TFLITE_METADATA)
        if raw is None:
            return None
        return _parse_standard(raw, data)
    except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, KeyError) as exc:
        raise ModelError(f"the TFLite metadata in {name} is not readable ({exc})", _FIX) from exc


def _parse_standard(raw: bytes, model: bytes) -> StandardMetadata:
    root = Table.root(raw, METADATA_IDENTIFIER)
    found = StandardMetadata(name=root.string(0), description=root.string(1), version=root.string(2), author=root.string(4),
                             license=root.string(5), min_parser_version=root.string(7))
    subgraphs = root.tables(3)
    if subgraphs:
        inputs, outputs = subgraphs[0].tables(2), subgraphs[0].tables(3)
        if inputs:
            _read_input(inputs[0], found)
        if outputs:
            _read_output(outputs[0], found)
    if zipfile.is_zipfile(io.BytesIO(model)):
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            found.packed_files = archive.namelist()
            if found.labels_file in found.packed_files:
                found.labels = archive.read(found.labels_file).decode("utf-8").splitlines()
    return found


def _read_input(tensor: Table, found: StandardMetadata) -> None:
    found.input_name = tensor.string(0)
    content = tensor.table(3)
    if content is not None and int(content.scalar(0, "B")) == CONTENT_IMAGE:
        image = content.table(1)
        if image is not None:
            found.color_space = int(image.scalar(0, "b"))
            size = image.table(1)
            if size is not None:
                found.default_size = (int(size.scalar(1, "I")), int(size.scalar(0, "I")))
    for unit in tensor.tables(4):
        options = unit.table(1)
        if int(unit.scalar(0, "B")) == PROCESS_NORMALIZATION and options is not None:
            found.mean = [float(v) for v in options.scalars(0, "f")]
            found.std = [float(v) for v in options.scalars(1, "f")]
    stats = tensor.table(5)
    if stats is not None:
        found.input_max, found.input_min = [float(v) for v in stats.scalars(0, "f")], [float(v) for v in stats.scalars(1, "f")]


def _read_output(tensor: Table, found: StandardMetadata) -> None:
    found.output_name = tensor.string(0)
    content = tensor.table(3)
    found.output_content = int(content.scalar(0, "B")) if content is not None else None
    found.output_process_units = len(tensor.table_positions(4))
    stats = tensor.table(5)
    if stats is not None:
        found.output_max, found.output_min = [float(v) for v in stats.scalars(0, "f")], [float(v) for v in stats.scalars(1, "f")]
    for associated in tensor.tables(6):
        if int(associated.scalar(2, "b")) == ASSOCIATED_TENSOR_AXIS_LABELS:
            found.labels_file = associated.string(0)
            break
