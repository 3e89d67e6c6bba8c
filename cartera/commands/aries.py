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
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from cartera.console import console, fail

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
    try:
        documents = asyncio.run(issuer_contexts())
    except Exception as exc:  # noqa: BLE001 - configuration or database errors become one readable line
        fail(f"cannot read the issuer's types ({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''})",
             hint="run it with the issuer's CARTERA_ISSUER_* configuration, after `cartera db upgrade`")
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".tmp")
    temporary.write_text(json.dumps(documents), encoding="utf-8")
    os.replace(temporary, output)  # agents starting meanwhile read the old file or the new one, whole
    console.print(f"{len(documents)} context(s) written to {output}", highlight=False)
