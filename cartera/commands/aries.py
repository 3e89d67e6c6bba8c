"""`cartera aries contexts`: the JSON-LD contexts file of the ACA-Py agents, from the issuer's database.

The agents resolve the context of every Cartera credential type. ``cartera run --aries`` (and an issuer
that starts its own agent) hands the agent a file ``{context URL: document}`` through
``--plugin-config-value cartera_contexts.file=PATH``, so the agent never fetches them over the network.
Agents run elsewhere (docker-compose.yml) get the same file from this command, run against the issuer's
configuration (``CARTERA_ISSUER_*``): the contexts of every registered type of every tenant, plus the
status list context.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from cartera.console import console, error_summary, fail, safe

app = typer.Typer(help="The Aries (DIDComm) channel's ACA-Py agents.", no_args_is_help=True)


async def issuer_contexts() -> dict[str, Any]:
    """``{url: context}`` for every type every tenant of the configured issuer has registered."""
    from sqlalchemy import select

    from aries.jsonld import contexts_document
    from issuer.context import IssuerContext
    from issuer.models import Tenant
    from issuer.nonces import nonce_key
    from issuer.registry import tenant_types
    from issuer.settings import IssuerSettings
    from service_kit.crypto import SecretBox, load_master_key
    from service_kit.db import Database

    settings = IssuerSettings()
    master_key = load_master_key(settings)
    db = Database(settings.database_url)
    ctx = IssuerContext(settings=settings, db=db, box=SecretBox(master_key), nonce_key=nonce_key(master_key))
    documents: dict[str, Any] = {}
    try:
        async with db.read_session() as session:
            for row in (await session.execute(select(Tenant))).scalars():
                types = [reg.ctype for reg in (await tenant_types(ctx, session, row.id)).values()]
                documents.update(contexts_document(types, ctx.issuer_url(row.slug)))
    finally:
        await db.dispose()
    return documents


@app.command("contexts")
def contexts(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the contexts file (JSON).")],
) -> None:
    """Write the JSON-LD contexts of the issuer's credential types for the agents' cartera_contexts plugin.

    Run it again (and restart the agents) after creating a tenant or registering a type.
    """
    if output.is_dir():  # before any work: the file could never take its place
        fail(f"cannot write {output}: it is a directory", hint="give the path of the file to write, e.g. DIR/contexts.json")
    try:
        documents = asyncio.run(issuer_contexts())
    except Exception as exc:  # noqa: BLE001 - configuration or database errors become one readable line
        fail(f"cannot read the issuer's types ({error_summary(exc)})",
             hint="run it with the issuer's CARTERA_ISSUER_* configuration, after `cartera db upgrade`")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # the parent, or one above it, is a file
        fail(f"cannot write {output}: {exc.filename} is not a directory")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc} ({exc.filename})")
    temporary = output.with_name(output.name + ".tmp")
    try:
        temporary.write_text(json.dumps(documents), encoding="utf-8")
        os.replace(temporary, output)  # agents starting meanwhile read the old file or the new one, whole
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        fail(f"cannot write {output}: {exc.strerror or exc}")
    console.print(f"{len(documents)} context(s) written to {safe(output)}", highlight=False)
