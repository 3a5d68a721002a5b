"""`edgecls eval`: metrics of a run on its test split or on a labelled folder."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgecls.cli.common import print_json, print_table, say


def eval_command(
    run: Path = typer.Argument(..., help="Run folder made by 'edgecls train'."),
    data: Optional[Path] = typer.Option(None, "--data", help="Labelled ImageFolder tree [default: the run's test split]."),
    split: str = typer.Option("test", "--split", help="Which of the run's own splits: test | val | train."),
    batch: int = typer.Option(64, "--batch"),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON only."),
) -> None:
    """Accuracy, top-k, per-class precision/recall/F1, confusion matrix (PNG + CSV)."""
    from edgecls.errors import ConfigError
    from edgecls.training.evaluate import evaluate

    if split not in ("test", "val", "train"):
        raise ConfigError(f"--split '{split}' is not test, val or train", "Pick one of test, val, train")
    if batch < 1:
        raise ConfigError(f"--batch {batch} must be positive", "Use e.g. --batch 64")
    report = evaluate(run, data=data, batch=batch, split=split)
    if as_json:
        print_json(report)
        return
    rows = [(c["label"], c["precision"], c["recall"], c["f1"], c["support"]) for c in report["per_class"]]
    rows.append(("macro avg", report["macro"]["precision"], report["macro"]["recall"], report["macro"]["f1"], report["num_images"]))
    rows.append(("weighted avg", report["weighted"]["precision"], report["weighted"]["recall"], report["weighted"]["f1"], report["num_images"]))
    print_table(f"Evaluation on {report['source']}", ["class", "precision", "recall", "F1", "support"], rows)
    extra = ", ".join(f"{k} {v:.4f}" for k, v in report["top_k"].items())
    if "roc_auc" in report:
        extra += f", ROC-AUC {report['roc_auc']:.4f}"
    say(f"accuracy {report['accuracy']:.4f} on {report['num_images']} images ({extra})")
    say(f"confusion matrix: {report['outputs']['confusion_png']}, {report['outputs']['confusion_csv']}; report: {report['outputs']['json']}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
