"""Shared terminal output for the CLI: one rich console, readable errors, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fail(message: str, *, code: int = 1, hint: str | None = None) -> NoReturn:
    """Print a readable error (no traceback) to stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    if hint:
        err_console.print(f"[dim]{hint}[/]", highlight=False)
    raise typer.Exit(code)


def print_json(value: Any) -> None:
    """Machine-readable output: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def read_text_argument(source: str) -> str:
    """Read a token from a file path, or from standard input when ``source`` is ``-``."""
    if source == "-":
        return sys.stdin.read().strip()
    try:
        with open(source, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        fail(f"cannot read {source}: {exc.strerror}")
