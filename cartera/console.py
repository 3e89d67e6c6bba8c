"""Shared terminal output for the CLI: one rich console, readable errors, JSON output.

Rich reads ``[...]`` in printed strings as markup. Text that comes from outside (API answers,
credentials, files, paths) goes through :func:`safe` before it is printed with rich, so that it is
shown as it is: a ``[/]`` in it cannot crash the command, a ``[conceal]`` cannot hide what follows,
and terminal control sequences in it are shown escaped rather than sent to the terminal.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

# C0 and C1 control characters (ESC starts terminal sequences), DEL, and the Unicode bidirectional
# controls (which reorder what is shown).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe(value: Any) -> str:
    """``value`` as text to print with rich: markup escaped, control characters shown as ``\\xNN``
    (``None`` as nothing)."""
    if value is None:
        return ""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", str(value))
    return escape(text)


def fail(message: str, *, code: int = 1, hint: str | None = None) -> NoReturn:
    """Print a readable error (no traceback) to stderr and exit with ``code``.

    ``message`` and ``hint`` are plain text (they often quote an API's answer or a file name): they
    are printed as they are, never read as markup."""
    err_console.print(f"[bold red]error:[/] {safe(message)}", highlight=False)
    if hint:
        err_console.print(f"[dim]{safe(hint)}[/]", highlight=False)
    raise typer.Exit(code)


def error_summary(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` of an exception, or only ``Type`` when it says nothing
    (a timeout's message is often empty)."""
    first = (str(exc).strip().splitlines() or [""])[0][:limit]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def print_listing(items: list[dict[str, Any]], *, as_json: bool, columns: Sequence[str],
                  row: Callable[[dict[str, Any]], Sequence[Any]]) -> None:
    """A list an API answered: its JSON as it is with ``--json``, else a table of ``columns`` whose cells
    (``row`` of each item) are shown as plain text, never read as markup."""
    if as_json:
        typer.echo(json.dumps(items, ensure_ascii=False))
        return
    table = Table(*columns)
    for item in items:
        table.add_row(*(safe(v) for v in row(item)))
    console.print(table)


def print_json(value: Any) -> None:
    """Machine-readable output: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def read_text_argument(source: str) -> str:
    """Read a token from a file path, or from standard input when ``source`` is ``-``."""
    if source == "-":
        try:
            return sys.stdin.read().strip()
        except UnicodeDecodeError:
            fail("standard input is not UTF-8 text")
    try:
        with open(source, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        fail(f"cannot read {source}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        fail(f"{source} is not a text file (UTF-8)")
