"""Choosing the validated artifact a bundle ships: RUN/export/<target>-<precision>/ and its export report."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edgecls.deploy.safe_text import CONTROL_CHARS
from edgecls.errors import ExportError, ModelError
from edgecls.fsutil import has_marker
from edgecls.meta import META_FILENAME

PRECISION_FLAGS = {"int8": "--int8", "fp16": "--fp16", "fp32": "", "dynamic": "--precision dynamic"}
VALIDATION_KEYS = ("passed", "top1_agreement", "reference_accuracy", "artifact_accuracy", "accuracy_drop", "images",
                   "max_abs_diff")


def export_command(run: Path, target: str, precision: str) -> str:
    """The `edgecls export` command line that makes RUN/export/<target>-<precision>/."""
    flag = PRECISION_FLAGS.get(precision, f"--precision {precision}")
    return " ".join(part for part in ("edgecls export", str(run), flag, f"--target {target}") if part)


def find_artifact(run: Path, target: str, precision: str) -> tuple[Path, str, dict[str, Any]]:
    """(export folder, artifact file name, export report) for RUN/export/<target>-<precision>/."""
    folder = run / "export" / f"{target}-{precision}"
    command = export_command(run, target, precision)
    if not folder.is_dir():
        made = sorted(p.name for p in (run / "export").glob("*-*") if p.is_dir()) if (run / "export").is_dir() else []
        have = f" (it has: {', '.join(made)})" if made else ""
        raise ModelError(f"run '{run}' has no validated {target} {precision} export at '{folder}'{have}", f"Make it first: {command}")
    report_path = folder / "export_report.json"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read '{report_path}': {exc}", f"Re-export: {command}") from exc
    validation = report.get("validation") if isinstance(report, dict) else None
    if not has_marker(folder) or not isinstance(validation, dict) or validation.get("passed") is not True:
        raise ModelError(f"'{folder}' is not a published export that passed validation (its report or marker says otherwise)",
                         f"Re-export: {command}")
    name = str(report.get("artifact") or "")
    if name and (Path(name).name != name or name in (".", "..") or CONTROL_CHARS.search(name)):
        raise ModelError(f"'{report_path}' names the artifact {name!r}: not a plain file name on one line", f"Re-export: {command}")
    if target == "edgetpu" and not name.endswith("_edgetpu.tflite"):
        compiled = sorted(folder.glob("*_edgetpu.tflite"))
        if not compiled:
            raise ExportError(
                f"'{folder}' holds only the uncompiled INT8 model: edgetpu_compiler did not run, so nothing would run on the Edge TPU",
                f"Install edgetpu_compiler on an x86-64 Debian host (coral.ai/docs/edgetpu/compiler) and re-run: {command}",
            )
        name = compiled[0].name
    if not name or not (folder / name).is_file():
        raise ModelError(f"'{folder}' lacks its artifact '{name or '?'}'", f"Re-export: {command}")
    if not (folder / META_FILENAME).is_file():
        raise ModelError(f"'{folder}' lacks {META_FILENAME}", f"Re-export: {command}")
    return folder, name, report


def validation_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The export report's validation numbers a bundle repeats (agreement, accuracies, images, max |diff|)."""
    validation = report.get("validation") or {}
    return {key: validation[key] for key in VALIDATION_KEYS if key in validation}


def copy_published_files(folder: Path, report: dict[str, Any], artifact_name: str, model_dir: Path, command: str) -> None:
    """The export's own files into the bundle's model/: those its report lists, the artifact, meta.json and the report.
    Never a link (it could point anywhere on this machine) nor what was put in the folder since (eval reports, notes)."""
    listed = report.get("files")
    names = sorted({*(str(name) for name in (listed if isinstance(listed, list) else [])), artifact_name, META_FILENAME,
                    "export_report.json"})
    model_dir.mkdir(parents=True)
    for name in names:
        source = folder / name
        if Path(name).name != name or name in (".", "..") or source.is_symlink() or not source.is_file():
            raise ModelError(f"'{source}', listed by the export, is not a plain file in its folder (a link, a folder or missing)",
                             f"Re-export: {command}")
        shutil.copy2(source, model_dir / name, follow_symlinks=False)
