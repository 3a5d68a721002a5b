"""Helpers shared by CLI commands: console, tables, JSON output."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from edgecls.meta import CONTROL_CHARACTERS

# Piped output (CI logs, `| tee`) gets a wide console instead of rich's 80-column default.
_WIDTH = int(os.environ.get("COLUMNS", "0") or 0) or (None if sys.stdout.isatty() else 160)
# emoji=False: a file called "a:smile:.png" is printed as it is. Markup stays on for our own styles, so
# text from users (paths, labels, messages) goes through Text() or escape(): "[/x]" in a name must not crash.
console = Console(stderr=False, highlight=False, width=_WIDTH, emoji=False)
err_console = Console(stderr=True, highlight=False, width=_WIDTH, emoji=False)


def printable(text: str, keep_lines: bool = False) -> str:
    """`text` with its control characters (meta.CONTROL_CHARACTERS; but newlines and tabs when `keep_lines`) as '?':
    rich passes ESC through, and a file named ESC ] 0; ... BEL would retitle the terminal, ESC [ 2 J clear it."""
    return CONTROL_CHARACTERS.sub(lambda found: found[0] if keep_lines and found[0] in "\n\t" else "?", text)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    console.print(Text(printable(title), style="table.title"), soft_wrap=True)  # not the table's title: that wraps long paths to its width
    table = Table()
    for name in columns:
        table.add_column(Text(name), justify="left" if name == columns[0] else "right")
    for row in rows:
        table.add_row(*(Text(printable(format_value(v))) for v in row))
    console.print(table)


def say(message: str, stderr: bool = False) -> None:
    """Print a plain line (paths, labels, messages from users): no markup, and no wrapping of long paths."""
    (err_console if stderr else console).print(Text(printable(message, keep_lines=True)), soft_wrap=True)


def print_json(data: Any) -> None:
    """JSON to stdout, nothing else, so `--json` output can be piped."""
    sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {escape(printable(message, keep_lines=True))}")


def format_value(value: Any) -> str:
    """A table or report value: floats to 4 decimals (1 from 10 up), None (a metric undefined for these images) as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
