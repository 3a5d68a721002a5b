"""`edgecls predict`: top-k classes for image files."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgecls.cli.common import print_json, print_table


def predict_command(
    model: str = typer.Argument(..., help="Run folder, exported artifact (.tflite/.onnx/.xml), or a zoo name such as efficientnet_lite0."),
    images: list[Path] = typer.Argument(..., help="Image files."),
    top_k: int = typer.Option(5, "--top-k", help="How many classes per image."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    device: str = typer.Option("cpu", "--device", help="Artifacts: cpu | coral (Edge TPU) | gpu | npu | auto."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Artifacts: runtime threads."),
) -> None:
    """Classify images with a trained run or a pretrained backbone."""
    from edgecls.errors import ConfigError
    from edgecls.predictor import as_json as results_json
    from edgecls.predictor import predict

    if top_k < 1:
        raise ConfigError(f"--top-k {top_k} must be at least 1", "Use e.g. --top-k 5")
    if threads is not None and threads < 1:  # a run folder (Keras) ignores --threads: check it here, not only in the runtime
        raise ConfigError(f"--threads {threads} must be at least 1", "Pass e.g. --threads 4, or leave it out for the runtime's default")
    results = predict(model, images, top=top_k, device=device, threads=threads)
    if as_json:
        print_json(results_json(results))
        return
    rows = [(Path(r["image"]).name if rank == 0 else "", rank + 1, c.label, f"{c.score:.4f}") for r in results for rank, c in enumerate(r["top"])]
    print_table(f"Predictions of {model}", ["image", "rank", "label", "score"], rows)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
