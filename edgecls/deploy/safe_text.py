"""Values written into the bundle's script, unit and text files: one check and one quoting function per language.

Every value from a profile, the command line, the run or the model that lands in install.sh, the systemd unit,
requirements.txt or README.md goes through here: it must be one printable line (a newline or other control
character is refused in every language), then it is quoted for the language it lands in. Nothing is pasted raw.
"""
from __future__ import annotations

import re
import shlex

from edgecls.errors import ConfigError

CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
SYSTEMD_PLAIN = re.compile(r"[A-Za-z0-9_+=:,./-]+")  # needs no quotes in an ExecStart argument (not the first)


def check_line(value: str, what: str, multiline: bool = False) -> str:
    """`value` unchanged, or ConfigError when it holds a newline (unless `multiline`), tab or other control character."""
    if CONTROL_CHARS.search(value.replace("\n", "") if multiline else value):
        raise ConfigError(f"{what} {value!r} holds a newline or control character, which no script or unit can carry safely",
                          "Use a value on one line without control characters")
    return value


def shell_quote(value: str, what: str = "value", multiline: bool = False) -> str:
    """`value` as one bash word that expands to exactly `value` (single quotes; nothing inside is interpreted).
    `multiline` lets through the line breaks of text edgecls made itself (the unit), never of a user value."""
    return shlex.quote(check_line(value, what, multiline))


def systemd_escape(value: str, what: str = "value") -> str:
    """`value` for a systemd setting read verbatim (a path, a description): specifiers `%` doubled."""
    return check_line(value, what).replace("%", "%%")


def systemd_program_text(value: str, what: str = "value") -> str:
    """`value` for the inside of ExecStart's quoted program path: `%` doubled (systemd expands no $VAR there), and
    ConfigError for a quote or backslash, which systemd refuses in a program path."""
    if re.search(r"[\"'\\]", check_line(value, what)):
        raise ConfigError(f"{what} {value!r} holds a quote or backslash, which systemd refuses in a program path",
                          "Choose a folder without quotes or backslashes")
    return value.replace("%", "%%")


def systemd_word_text(value: str, what: str = "value") -> str:
    """`value` for the inside of a double-quoted ExecStart argument: `\\` and `"` escaped, `%` and `$` doubled."""
    text = check_line(value, what).replace("\\", "\\\\").replace('"', '\\"')
    return text.replace("%", "%%").replace("$", "$$")


def systemd_word(value: str, what: str = "value") -> str:
    """`value` as one ExecStart argument that systemd passes on unchanged (quoted only when it must be)."""
    if SYSTEMD_PLAIN.fullmatch(check_line(value, what)):
        return value
    return f'"{systemd_word_text(value, what)}"'


def doc_text(value: object) -> str:
    """A value for README.md: control characters shown as '?' (documentation is never run, but stays one line)."""
    return CONTROL_CHARS.sub("?", str(value))
