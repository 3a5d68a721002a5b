"""`edgecls predict`: top-k classes for image files, folders and glob patterns.

Exit codes: 0 when every image was classified; 1 when some could not be read (one `error:` line each, the
others are still printed); 2 for a bad argument or a model that cannot load or run.
"""
from __future__ import annotations

from pathlib import Path

import typer

from edgecls.cli.common import print_json, print_table, say, warn

PARTIAL_FAILURE = 1


def predict_command(
    model: str = typer.Argument(..., help="Run folder, export folder, exported artifact (.tflite/.onnx/.xml: meta.json beside it, "
                                          "or the metadata embedded in it), "
                                          "or a zoo name such as efficientnet_lite0 (pretrained ImageNet classifier)."),
    images: list[str] = typer.Argument(..., help="Image files, folders of images, or quoted glob patterns such as 'shots/*.jpg'."),
    top_k: int = typer.Option(5, "--top-k", help="How many classes to print per image, best first."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Also classify the images in subfolders of the folders given "
                                                                   "(and let '**' in a pattern match any depth)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON only (errors still go to stderr)."),
    backend_device: str = typer.Option("cpu", "--backend-device", help="Inference device for artifacts: cpu | coral (Edge TPU) | "
                                       "gpu | npu | auto. Keras models (run folders, zoo names) run where TensorFlow puts them."),
    device: str | None = typer.Option(None, "--device", hidden=True, help="Deprecated spelling of --backend-device."),
    threads: int | None = typer.Option(None, "--threads", help="Runtime threads for artifacts (the runtime's default when left out)."),
    batch: int = typer.Option(16, "--batch", help="Images per inference call."),
) -> None:
    """Classify images with a trained run, an exported artifact or a pretrained backbone."""
    from edgecls.errors import ConfigError
    from edgecls.predictor import as_json as results_json
    from edgecls.predictor import find_images, load_classifier

    if top_k < 1:
        raise ConfigError(f"--top-k {top_k} must be at least 1", "Use e.g. --top-k 5")
    if threads is not None and threads < 1:  # a run folder (Keras) ignores --threads: check it here, not only in the runtime
        raise ConfigError(f"--threads {threads} must be at least 1", "Pass e.g. --threads 4, or leave it out for the runtime's default")
    if batch < 1:
        raise ConfigError(f"--batch {batch} must be at least 1", "Use e.g. --batch 16")
    if device is not None:
        if backend_device != "cpu" and device != backend_device:
            raise ConfigError(f"--device {device} and --backend-device {backend_device} disagree", "Pass --backend-device only")
        warn(f"predict --device is deprecated: use --backend-device {device} (--device names the camera in 'edgecls camera')")
        backend_device = device

    found = find_images(images, recursive)  # before the model loads: a wrong path is reported at once
    for error in found.errors:
        say(f"error: {error}", stderr=True)
    results, failed = [], len(found.errors)
    if found.paths or not found.errors:  # nothing to classify but errors: the model is not loaded for nothing
        with load_classifier(model, backend_device, threads) as classifier:
            for prediction in classifier.predict_each(found.paths, top_k, batch):
                if prediction.error is not None:
                    say(f"error: {prediction.error}", stderr=True)
                    failed += 1
                else:
                    results.append(prediction)
    if as_json:
        print_json(results_json(results))
    elif results:
        rows = [(Path(r.image).name if rank == 0 else "", rank + 1, c.label, f"{c.score:.4f}")
                for r in results for rank, c in enumerate(r.top)]
        print_table(f"Predictions of {model}", ["image", "rank", "label", "score"], rows)
    if failed:
        total = len(results) + failed
        if total > 1:
            say(f"{failed} of {total} inputs could not be classified (see the error lines above); {len(results)} were", stderr=True)
        raise typer.Exit(PARTIAL_FAILURE)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
