"""`edgecls verify ARTIFACT`: the golden set stored beside an artifact, re-run on this machine's runtime and delegate.

Exit codes: 0 when it passes; 1 when it ran and failed (one `error:` line with the diagnosis, after the table);
2 for a bad argument (no artifact, no or damaged golden.npz).
"""
from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from edgecls.cli.common import console, print_json, print_table, say


def verify_command(
    artifact: Path = typer.Argument(..., help="Exported artifact (.tflite/.onnx/.xml) with golden.npz beside it, or its export folder."),
    backend_device: str = typer.Option("cpu", "--backend-device", help="Inference device: cpu | coral (Edge TPU) | gpu | npu | auto "
                                       "(a *_edgetpu.tflite file always runs on the Edge TPU)."),
    threads: int | None = typer.Option(None, "--threads", help="Runtime threads (the runtime's default when left out)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON only (the diagnosis still goes to stderr)."),
) -> None:
    """Check an artifact on this machine against the golden set made when it was exported."""
    from edgecls.errors import ConfigError
    from edgecls.metadata.golden import runtime_summary
    from edgecls.verify import VerificationError, failure_message, verify

    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads} must be at least 1", "Pass e.g. --threads 4, or leave it out for the runtime's default")
    result = verify(artifact, device=backend_device, threads=threads)
    if as_json:
        print_json(result.to_dict())
    else:
        made = result.made_with
        say(f"artifact: {result.artifact}" + (f" (meta: {result.meta_source})" if result.meta_source else ""))
        say(f"golden set made with: {runtime_summary(made) if 'runtime' in made else made.get('source') or 'not recorded'}")
        this = result.this_run
        here = f"{runtime_summary(this)}, precision ran {this['precision_ran']}" if this else "the model did not load"
        say(f"this machine:         {here}")
        if result.checks:
            rows = [(c.index, c.expected, f"{c.expected_score:.4f}", c.got, f"{c.got_score:.4f}", f"{c.drift:.4f}",
                     ("ok" if c.decisive else "ok (near tie)") if c.ok else "DIFFERS") for c in result.checks]
            print_table(f"Golden set of {result.artifact}", ["image", "expected", "score", "this machine", "score", "drift", ""], rows)
        console.print(Text(result.summary(), style="green" if result.ok else "red"), soft_wrap=True)
    if not result.ok:
        raise VerificationError(failure_message(result))


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_command)
