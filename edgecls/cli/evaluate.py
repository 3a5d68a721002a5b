"""`edgecls eval`: metrics of a run (its test split, another split, or a labelled folder) or of an exported artifact.

Defaults come from edgecls.training.evaluate.evaluate's signature: declared once.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import typer

from edgecls.cli.common import format_value, print_json, print_table, say
from edgecls.training.evaluate import SPLITS, evaluate

_DEFAULTS = {name: parameter.default for name, parameter in inspect.signature(evaluate).parameters.items()}


_HELP = {
    "model": "Run folder made by 'edgecls train', or an exported artifact (.tflite/.onnx/.xml, or its export folder).",
    "data": "Labelled ImageFolder tree (its test/ folder when pre-split); required for an artifact.",
    "split": f"Run folders: which of the run's own splits, {' | '.join(SPLITS)}.",
    "batch": "Images per inference batch.",
    "backend_device": "Artifacts: cpu | coral (Edge TPU) | gpu | npu | auto.",
    "threads": "Artifacts: runtime threads; default: the runtime's.",
    "json": "Print the report as JSON only.",
}


def eval_command(
    model: Path = typer.Argument(..., help=_HELP["model"]),
    data: Path | None = typer.Option(None, "--data", help=_HELP["data"]),
    split: str = typer.Option(_DEFAULTS["split"], "--split", help=_HELP["split"]),
    batch: int = typer.Option(_DEFAULTS["batch"], "--batch", help=_HELP["batch"]),
    backend_device: str = typer.Option(_DEFAULTS["device"], "--backend-device", help=_HELP["backend_device"]),
    threads: int | None = typer.Option(_DEFAULTS["threads"], "--threads", help=_HELP["threads"]),
    as_json: bool = typer.Option(False, "--json", help=_HELP["json"]),
) -> None:
    """Accuracy, top-k, per-class precision/recall/F1, confusion matrix (PNG + CSV), written beside the model."""
    report = evaluate(model, data=data, batch=batch, split=split, device=backend_device, threads=threads)
    if as_json:
        print_json(report)
        return
    rows = [(c["label"], c["precision"], c["recall"], c["f1"], c["support"]) for c in report["per_class"]]
    rows.append(("macro avg", report["macro"]["precision"], report["macro"]["recall"], report["macro"]["f1"], report["num_images"]))
    weighted = report["weighted"]
    rows.append(("weighted avg", weighted["precision"], weighted["recall"], weighted["f1"], report["num_images"]))
    print_table(f"Evaluation on {report['source']}", ["class", "precision", "recall", "F1", "support"], rows)
    extra = ", ".join(f"{k} {format_value(v)}" for k, v in report["top_k"].items())
    if "roc_auc" in report:
        extra += f", ROC-AUC {format_value(report['roc_auc'])}"
    say(f"accuracy {format_value(report['accuracy'])} on {report['num_images']} images ({extra})")
    outputs = report["outputs"]
    say(f"confusion matrix: {outputs['confusion_png']}, {outputs['confusion_csv']}; report: {outputs['json']}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
