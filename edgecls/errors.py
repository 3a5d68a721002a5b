"""Typed user-facing errors. The CLI prints `str(error)` as one line and exits with `exit_code`."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgeclsError(Exception):
    """An error caused by user input or environment, with the fix to apply."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if not self.hint:
            return self.message
        return f"{self.message}{'' if self.message.endswith(('.', '?', '!')) else '.'} {self.hint}"


class DataError(EdgeclsError):
    """Bad dataset, folder or image."""


class ImageError(DataError):
    """An image that cannot be decoded or is refused (bomb, empty, truncated)."""


class ModelError(EdgeclsError):
    """Unknown model, bad run folder, inconsistent meta.json or model file."""


class CheckpointError(ModelError):
    """A weights checkpoint that is corrupt or tries to run code."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights that have to be downloaded and cannot be (offline, or a broken cache)."""


class ConfigError(EdgeclsError):
    """An argument value out of range or a combination that cannot work."""


class ExportError(EdgeclsError):
    """An export or its validation failed."""


class MissingDependencyError(EdgeclsError):
    """An optional dependency is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"this command needs the Python package '{module}', which is not installed",
            f"Install it with: pip install 'edgecls[{extra}]'",
        )


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemctl stop, docker stop, kill) raised in the main thread: unwinds like Ctrl-C, so every
    `finally` and `except BaseException` clean-up runs; the CLI exits 143."""


def suggest(value: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean X?' for a near miss, else ''."""
    scored = [(difflib.SequenceMatcher(None, value, choice).ratio(), choice) for choice in choices]
    best = sorted((s for s in scored if s[0] >= 0.6), key=lambda s: (-s[0], s[1]))
    return f" Did you mean '{best[0][1]}'?" if best else ""


def require(module: str, extra: str):
    """Import a heavy optional module, or raise MissingDependencyError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name and module.split(".")[0] != exc.name.split(".")[0]:
            raise
        raise MissingDependencyError(module, extra) from exc
