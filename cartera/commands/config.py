"""`cartera config reference`: every environment variable of every service, generated from the code.

docs/operations.md embeds this output between markers, and a test checks that it still matches, so the
documented configuration is always the configuration the services read.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import typer

from cartera.console import print_json

app = typer.Typer(help="Configuration of the services (environment variables).", no_args_is_help=True)

#: Service name → its settings class ("module:Class").
SETTINGS = {
    "issuer": "issuer.settings:IssuerSettings",
    "verifier": "verifier.settings:VerifierSettings",
    "wallet": "wallet_api.settings:WalletSettings",
}


def _settings_class(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def reference_rows(service: str) -> list[dict[str, str]]:
    """``{"env", "type", "default", "description"}`` for each setting of ``service``."""
    from service_kit.settings import settings_reference

    return settings_reference(_settings_class(SETTINGS[service]))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference_markdown(service: str) -> str:
    """The Markdown table of ``service``'s environment variables (as embedded in docs/operations.md)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for row in reference_rows(service):
        default = f"`{_cell(row['default'])}`" if row["default"] else ""
        lines.append(f"| `{row['env']}` | {default} | {_cell(row['description'])} |")
    return "\n".join(lines) + "\n"


def update_doc(path: Path) -> bool:
    """Rewrite the tables between ``<!-- config:<service>:begin/end -->`` markers in ``path``.

    Returns whether the file changed. Services without markers in the file are left out.
    """
    text = path.read_text(encoding="utf-8")
    updated = text
    for name in SETTINGS:
        begin, end = f"<!-- config:{name}:begin -->", f"<!-- config:{name}:end -->"
        if begin not in updated or end not in updated:
            continue
        head, rest = updated.split(begin, 1)
        _, tail = rest.split(end, 1)
        updated = f"{head}{begin}\n{reference_markdown(name)}{end}{tail}"
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text


@app.command("reference")
def reference(
    service: Annotated[str | None, typer.Option(help="issuer, verifier or wallet (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {service: [{"env", "type", "default", '
                                                         '"description"}]}.')] = False,
    update: Annotated[Path | None, typer.Option(
        "--update-doc", help="Instead of printing, rewrite the tables between the config markers of this "
                             "Markdown file (docs/operations.md).")] = None,
) -> None:
    """Print every environment variable the services read, with defaults and meanings (Markdown)."""
    if update is not None:
        try:
            changed = update_doc(update)
        except OSError as exc:
            from cartera.console import fail

            fail(f"cannot update {update}: {exc.strerror or exc}")
        except UnicodeDecodeError:
            from cartera.console import fail

            fail(f"cannot update {update}: not a text file (UTF-8)")
        typer.echo(f"{update}: {'updated' if changed else 'already up to date'}")
        return
    names = [service] if service else list(SETTINGS)
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        from cartera.console import fail

        fail(f"unknown service {unknown[0]!r}", hint=f"choose one of {', '.join(SETTINGS)}")
    if as_json:
        print_json({name: reference_rows(name) for name in names})
        return
    for name in names:
        typer.echo(f"### {name}\n\n{reference_markdown(name)}")
