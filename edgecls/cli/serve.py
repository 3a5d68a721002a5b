"""`edgecls serve MODEL`: the HTTP JSON API (GET /api/info, POST /api/classify) and a page to try it, no camera.

Runs until Ctrl-C (exit 130) or SIGTERM (exit 143), like `edgecls camera`.
"""
from __future__ import annotations

from pathlib import Path

import typer


def serve_command(
    model: Path = typer.Argument(..., help="Exported artifact: .tflite, .onnx or OpenVINO .xml (with meta.json beside it)."),
    address: str = typer.Option("127.0.0.1:8080", "--serve", "--address",
                                help="HOST:PORT to listen on (127.0.0.1 keeps it local; 0.0.0.0 needs the token)."),
    token_file: Path | None = typer.Option(
        None, "--token-file",
        help="File holding the access token (one line, 16+ URL-safe characters, mode 0600), required on every route. Without it, "
             "a non-loopback address makes a new token and prints the URL with it once."),
    backend_device: str = typer.Option("cpu", "--backend-device", help="Inference device: cpu | coral | gpu | npu | auto."),
    threads: int | None = typer.Option(None, "--threads", help="Runtime threads (the runtime's default when left out)."),
    top_k: int = typer.Option(3, "--top-k", help="Classes in each answer (a request may ask ?top_k=N)."),
    threshold: float = typer.Option(0.0, "--threshold", help="Top-1 scores below this are answered as 'uncertain'."),
    max_body: int = typer.Option(8_000_000, "--max-body", help="Largest request body in bytes; larger ones get 413."),
) -> None:
    """Serve a model over HTTP: GET /api/info, POST /api/classify (image bytes or multipart), same token rules as the live view."""
    from edgecls.camera.api import serve_model
    from edgecls.cli.camera import log_to_console

    with log_to_console():
        serve_model(model, address, device=backend_device, threads=threads, top_k=top_k, threshold=threshold,
                    max_body=max_body, token_file=token_file)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
