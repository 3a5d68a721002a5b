"""OpenVINO IR metadata: rt_info["model_info"] in OpenVINO Model API's terms, edgecls' ModelMeta, static batch 1.

Model API (openvino-model-api, `model_api.models.Model.create_model("model.xml")`) reads
rt_info["model_info"][key] as strings and splits lists on whitespace. It hands the model BGR frames
as OpenCV reads them and builds its preprocessing into the graph (u8 NHWC BGR -> resize -> RGB ->
f32 -> minus mean_values -> divided by scale_values). For an edgecls model that takes RGB pixels
0..255 with normalisation inside, that means reverse_input_channels True, mean 0 and scale 1
(meta.json's mean/std there would normalise twice). Label names lose their spaces (Model API would
split them): "running shoe" becomes "running_shoe" there; edgecls_meta keeps the real names.
Writing needs an openvino.Model; reading a saved .xml needs only the standard library.
"""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

from edgecls.errors import ModelError
from edgecls.meta import ModelMeta
from edgecls.metadata.common import (
    LAYOUT,
    META_KEY,
    OUTPUT_NAME,
    ArtifactInfo,
    artifact_info,
    meta_from_json,
    meta_json,
    pixel_normalization,
)

MODEL_INFO = "model_info"
INFO_KEY = "edgecls_info"  # name, version, date, licence... beside model_info (which Model API owns)
MODEL_TYPE = "Classification"  # Model API's ClassificationModel.__model__
TOP_K = 5
# edgecls interpolation -> Model API interpolation_mode
INTERPOLATION = {"bicubic": "CUBIC", "bilinear": "LINEAR", "nearest": "NEAREST", "area": "LINEAR"}
_KEEP_DYNAMIC = "Keep a dynamic batch (batch=None)"
_FIX = "Export the artifact again with 'edgecls export'"


def model_info(meta: ModelMeta) -> dict[str, str]:
    """Model API's model_info for `meta`: enough for create_model() with no hand configuration."""
    mean, std = pixel_normalization(meta)
    return {
        "model_type": MODEL_TYPE,
        "labels": " ".join("_".join(label.split()) for label in meta.labels),
        "mean_values": " ".join(f"{v:g}" for v in mean),
        "scale_values": " ".join(f"{v:g}" for v in std),
        "reverse_input_channels": str(meta.color_order == "RGB"),  # Model API is given BGR frames (OpenCV)
        # edgecls resizes by a centre crop to the target aspect, then a resize: Model API's "crop"
        "resize_type": "crop",
        "interpolation_mode": INTERPOLATION.get(meta.interpolation, "LINEAR"),
        "topk": str(min(TOP_K, meta.num_classes)),
        "output_raw_scores": "True",
        "multilabel": "False",
        "hierarchical": "False",
    }


def write_openvino_metadata(model: Any, meta: ModelMeta, info: ArtifactInfo | None = None) -> Any:
    """Set rt_info (model_info, edgecls_info, edgecls_meta), the NHWC input layout and the output name on an openvino.Model."""
    from edgecls.openvino_import import import_openvino

    ov = import_openvino("intel")

    check_model_against_meta(model, meta)
    info = info or artifact_info(meta)
    for key, value in model_info(meta).items():
        model.set_rt_info(value, [MODEL_INFO, key])
    for key in ("name", "version", "description", "author", "license", "date", "source_run"):
        model.set_rt_info(str(getattr(info, key)), [INFO_KEY, key])
    model.set_rt_info(meta_json(meta), META_KEY)
    model.input(0).get_node().set_layout(ov.Layout(LAYOUT))
    name_output(model)
    return model


def check_model_against_meta(model: Any, meta: ModelMeta) -> None:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"the IR has {len(model.inputs)} inputs and {len(model.outputs)} outputs; a classifier has 1 and 1", _FIX)
    shape = model.input(0).get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else []
    if len(dims) != 4 or dims[1:] != [*meta.input_size, 3]:
        raise ModelError(f"the IR input is {shape} but the meta says (batch, {meta.input_size[0]}, {meta.input_size[1]}, 3)",
                         "Export the model and its meta.json from the same run")
    out = model.output(0).get_partial_shape()
    last = out[out.rank.get_length() - 1] if out.rank.is_static and out.rank.get_length() else None
    if last is not None and last.is_static and last.get_length() != meta.num_classes:
        raise ModelError(f"the IR output is {out} but the meta lists {meta.num_classes} labels",
                         "Export the model and its meta.json from the same run")


def static_batch(model: Any, batch: int = 1) -> Any:
    """Reshape the image input to a static (batch, h, w, 3) so benchmark_app and NPUs take the IR as is."""
    from edgecls.openvino_import import import_openvino

    ov = import_openvino("intel")

    shape = model.input(0).get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() != 4 or not all(shape[i].is_static for i in (1, 2, 3)):
        raise ModelError(f"the IR input {shape} has no static height, width and channels to keep", _FIX)
    target = ov.PartialShape([batch, shape[1].get_length(), shape[2].get_length(), shape[3].get_length()])
    try:
        model.reshape({model.input(0): target})
    except RuntimeError as exc:
        raise ModelError(f"the IR cannot be reshaped to {target}: {str(exc).strip().splitlines()[0]}", _KEEP_DYNAMIC) from exc
    if not model.output(0).get_partial_shape().is_static:
        raise ModelError(f"the IR output stays {model.output(0).get_partial_shape()} at input {target}", _KEEP_DYNAMIC)
    return model


def name_output(model: Any, name: str = OUTPUT_NAME) -> Any:
    """Give the single output tensor exactly the name `name` (OpenVINO frontends add their own)."""
    model.output(0).get_tensor().set_names({name})
    return model


def read_rt_info(source: str | Path) -> dict[str, Any]:
    """The model-level <rt_info> of a saved IR .xml as nested dicts of strings; no openvino import."""
    path = Path(source)
    try:
        root = ElementTree.parse(path).getroot()
    except OSError as exc:
        raise ModelError(f"cannot read '{path}': {exc.strerror or exc}", "Check the path") from exc
    except ElementTree.ParseError as exc:
        raise ModelError(f"'{path}' is not an OpenVINO IR .xml ({exc})", _FIX) from exc
    if root.tag != "net":
        raise ModelError(f"'{path}' is not an OpenVINO IR .xml (its root is <{root.tag}>, not <net>)", _FIX)
    info = root.find("rt_info")
    return {} if info is None else _as_dict(info)


def _as_dict(element: ElementTree.Element) -> dict[str, Any]:
    return {child.tag: child.attrib["value"] if "value" in child.attrib else _as_dict(child) for child in element}


def read_openvino_meta(source: str | Path | Any) -> ModelMeta | None:
    """The ModelMeta embedded in an IR (.xml path or openvino.Model); None when it carries none."""
    if isinstance(source, (str, Path)):
        value = read_rt_info(source).get(META_KEY)
        return None if not isinstance(value, str) else meta_from_json(value, f"'{source}'")
    if not source.has_rt_info(META_KEY):
        return None
    return meta_from_json(source.get_rt_info(META_KEY).astype(str), "the OpenVINO model")
