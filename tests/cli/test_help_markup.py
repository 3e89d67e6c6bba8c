"""Every help text of the CLI reaches the reader whole.

Typer renders option and command help as rich markup, where ``[word ...]`` is a style tag and vanishes
from the output: ``--url``'s "[env CARTERA_ISSUER_URL]" was printed as nothing, so the reader never
learnt which variable sets it. A literal bracket has to be written ``\\[``.
"""

from __future__ import annotations

import pytest
import typer.main
from rich.text import Text

from cartera.cli import app


def _helps(command, path: str):
    yield path, command.help or ""
    for param in command.params:
        yield f"{path} {param.name}", getattr(param, "help", None) or ""
    # Typer vendors click, so groups are told apart by what they have, not by click's classes.
    for name, sub in getattr(command, "commands", {}).items():
        yield from _helps(sub, f"{path} {name}")


HELPS = sorted(_helps(typer.main.get_command(app), "cartera"))


def test_the_walk_sees_the_whole_cli():
    paths = {path for path, _ in HELPS}
    assert "cartera issuer offer url" in paths
    assert "cartera verifier request url" in paths


@pytest.mark.parametrize(("path", "text"), [pytest.param(path, text, id=path) for path, text in HELPS if "[" in text])
def test_brackets_survive_rich_markup(path: str, text: str):
    shown = Text.from_markup(text).plain
    assert shown == text.replace("\\[", "["), f"{path}: rich markup ate part of the help: {shown!r}"
