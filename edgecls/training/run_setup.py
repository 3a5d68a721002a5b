"""Opening the run folder of `edgecls train` (new, or --resume) before any work: checked, locked, swept.

The folder stays locked (locks.folder_lock) for the whole training, so a second `train --out SAME` or
`train --resume SAME` gets one clean line instead of writing into it at the same time.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgecls.errors import ConfigError, ModelError
from edgecls.fsutil import OUTPUT_MARKER, TEMP_PREFIX, check_outputs, has_marker, make_marker, sweep_stale_temps
from edgecls.locks import folder_lock
from edgecls.run_folder import MODEL_FILE, STATE_FILE

_LOCKED = "trained"  # "'RUN' is being trained by another edgecls process"


def default_run_dir(model: str) -> Path:
    from edgecls.zoo.registry import get_spec

    return Path("models") / f"{get_spec(model).name}-{time.strftime('%Y%m%d-%H%M%S')}"


@contextlib.contextmanager
def new_run_folder(run: Path, data: str) -> Iterator[Path]:
    """Create `run`, or reuse an empty folder or one edgecls made (its marker), and hold its lock; refuse a run inside
    --data, a finished or interrupted run, and a folder holding files edgecls did not make (left untouched).

    When training fails before it began (state.json not yet written), a folder this call created is removed again,
    and the marker this call wrote into an empty folder the user made is removed when nothing else was written.
    """
    check_outputs({"--out": run}, {"--data": data})
    if run.exists() and not run.is_dir():
        raise ConfigError(f"--out '{run}' is a file", "Pass a folder path to --out")
    created = _make_folder(run)
    with folder_lock(run, what=_LOCKED):
        marked = False
        try:
            if (run / MODEL_FILE).exists():
                raise ConfigError(f"run folder '{run}' already holds a trained model", "Pass a new --out, or delete it")
            if (run / STATE_FILE).exists():
                raise ConfigError(f"run folder '{run}' holds an interrupted run",
                                  f"Continue it with: edgecls train --resume {run}; or pass a new --out")
            if not created and not has_marker(run) and _holds_user_files(run):
                raise ConfigError(f"--out '{run}' already exists and holds files edgecls did not make",
                                  "Pass a new --out, or remove it yourself")
            sweep_stale_temps(run)
            if not has_marker(run):
                make_marker(run, "train")
                marked = True
            yield run
        except BaseException:
            if not (run / STATE_FILE).exists():  # nothing trained yet
                if created:
                    shutil.rmtree(run, ignore_errors=True)  # leave no empty run behind
                elif marked and _only_marker(run):
                    (run / OUTPUT_MARKER).unlink(missing_ok=True)  # the user's empty folder, as it was
            raise


def _holds_user_files(run: Path) -> bool:
    """Whether `run` holds anything but edgecls temp files (a SIGKILLed start leaves only those)."""
    with os.scandir(run) as entries:
        return any(not entry.name.startswith(TEMP_PREFIX) for entry in entries)


def _only_marker(run: Path) -> bool:
    with os.scandir(run) as entries:
        return [entry.name for entry in entries] == [OUTPUT_MARKER]


def _make_folder(run: Path) -> bool:
    """mkdir; True only for the one process whose mkdir made the folder."""
    try:
        run.parent.mkdir(parents=True, exist_ok=True)
        run.mkdir()
        return True
    except FileExistsError:
        if not run.is_dir():
            raise ConfigError(f"--out '{run}' is a file", "Pass a folder path to --out") from None
        return False
    except OSError as exc:
        raise ConfigError(f"cannot create run folder '{run}': {exc.strerror}", "Pass a writable --out folder") from exc


@contextlib.contextmanager
def resumed_run_folder(run: Path) -> Iterator[dict[str, Any]]:
    """Lock an interrupted run and yield its state.json; refuse a finished run, or one whose --data it lies in."""
    read_state(run)  # a clear line for a folder that is no run, before locking it
    with folder_lock(run, what=_LOCKED):
        state = read_state(run)  # again, now that no other process can change it
        if state["phase"] == "done":
            raise ConfigError(f"run '{run}' already finished", "Start a new run with --out")
        data = state["config"].get("data")
        if isinstance(data, str):
            check_outputs({"--resume": run}, {"--data": data})
        sweep_stale_temps(run)
        yield state


def read_state(run: Path) -> dict[str, Any]:
    """The resume state of an interrupted run, or ModelError saying what is wrong with it."""
    path = run / STATE_FILE
    if not path.is_file():
        raise ModelError(f"'{run}' has no {STATE_FILE} to resume from", "Pass a run folder made by 'edgecls train'")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read '{path}': {exc}", "Start a new run with --out; this one cannot be resumed") from exc
    if (not isinstance(state, dict) or not isinstance(state.get("config"), dict) or state.get("phase") not in ("head", "fine_tune", "done")
            or not isinstance(state.get("epochs_done"), int)):
        raise ModelError(f"'{path}' is not an edgecls training state (config, phase, epochs_done)",
                         "Start a new run with --out; this one cannot be resumed")
    return state
