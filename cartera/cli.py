"""`cartera`: the command line for operators, integrators and people trying the system.

Each command group lives in its own module under ``cartera.commands`` and is registered here, so
that a group's imports (a web framework, a database driver) load only when that group runs.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="cartera",
    help="Cartera: verifiable credentials for public administrations (issuer, wallet, verifier).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)



@app.callback()
def _root() -> None:
    """Cartera: verifiable credentials for public administrations (issuer, wallet, verifier)."""


# (module under cartera.commands, attribute, group name or None to merge its commands at top level)
COMMAND_GROUPS: list[tuple[str, str, str | None]] = [
    # command-groups: one line per group, kept in this list
    ("hsm", "app", "hsm"),
    ("audit", "app", "audit"),
    ("demo", "app", None),
    ("db", "app", "db"),
    ("config", "app", "config"),
    ("run", "app", None),
    ("issuer", "app", "issuer"),
    ("verifier", "app", "verifier"),
    ("wallet", "app", "wallet"),
    ("vc", "app", "vc"),
    ("demo_credential", "app", None),
    ("sandbox", "app", "sandbox"),
    ("aries", "app", "aries"),
]

for module_name, attribute, group_name in COMMAND_GROUPS:
    module = importlib.import_module(f"cartera.commands.{module_name}")
    sub = getattr(module, attribute)
    if group_name is None:
        app.registered_commands.extend(sub.registered_commands)
    else:
        app.add_typer(sub, name=group_name)


@app.command("version")
def version() -> None:
    """Print the installed Cartera version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("cartera"))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
