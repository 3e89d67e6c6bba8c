"""The verifier's sweep deletes the replay guards past their retention — presentation digests and the
keys of Aries webhooks, which nothing deleted before — and keeps the ones that still guard something.

On a real verifier database (SQLite, built by its migrations), with the sweep the background task runs.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import annotated_types
import pytest
from pydantic.fields import FieldInfo
from sqlalchemy import select

from aries.storage import WEBHOOK_EVENT_RETENTION
from service_kit.crypto import SecretBox
from service_kit.db import Database
from service_kit.migrations import run_migrations_async
from service_kit.webhooks import OUTBOX_RETENTION
from verifier.app import MIGRATIONS
from verifier.aries_models import AriesWebhookEvent
from verifier.models import UsedPresentation, WebhookOutbox
from verifier.routes.aries import AriesRequestIn
from verifier.schemas import RequestIn
from verifier.settings import VerifierSettings
from verifier.transactions import USED_PRESENTATION_RETENTION, sweep
from verifier.worker import purge_outbox

pytestmark = pytest.mark.anyio


def _largest(field: FieldInfo) -> int:
    return next(rule.le for rule in field.metadata if isinstance(rule, annotated_types.Le))


#: The longest a request may stay open: the largest lifetime the APIs and the configuration accept.
LONGEST_REQUEST = dt.timedelta(seconds=max(_largest(RequestIn.model_fields["expires_in"]),
                                           _largest(AriesRequestIn.model_fields["expires_in"]),
                                           _largest(VerifierSettings.model_fields["request_ttl"])))


async def _migrated(tmp_path: Path) -> Database:
    """A verifier database (SQLite) built by its migrations."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'verifier.db'}"
    await run_migrations_async(MIGRATIONS, url)
    return Database(url)


async def test_the_sweep_purges_presentation_digests_and_webhook_keys_past_their_retention(tmp_path: Path) -> None:
    db = await _migrated(tmp_path)
    now = dt.datetime.now(dt.UTC)
    margin = dt.timedelta(minutes=1)
    digests = {"old": now - USED_PRESENTATION_RETENTION - margin,
               # its transaction has expired for certain, but the digest is still within retention
               "kept": now - LONGEST_REQUEST - margin,
               "new": now}
    events = {"old": now - WEBHOOK_EVENT_RETENTION - margin,
              "kept": now - WEBHOOK_EVENT_RETENTION + margin,
              "new": now}
    try:
        async with db.session() as session:
            session.add_all(UsedPresentation(digest=name, transaction_id=f"tx-{name}", created_at=at)
                            for name, at in digests.items())
            session.add_all(AriesWebhookEvent(key=name, received_at=at) for name, at in events.items())
        done = await sweep(db, SecretBox(b"\0" * 32), now=now)
        async with db.read_session() as session:
            digests_left = set((await session.execute(select(UsedPresentation.digest))).scalars())
            events_left = set((await session.execute(select(AriesWebhookEvent.key))).scalars())
    finally:
        await db.dispose()
    assert digests_left == {"kept", "new"}
    assert events_left == {"kept", "new"}
    assert done["guards_purged"] == 2


def test_digests_outlive_every_request_they_could_be_replayed_to() -> None:
    """A digest must stay while the one transaction that could accept its presentation is open (twice
    that, for clocks that differ between workers): a longer request lifetime needs a longer retention."""
    assert USED_PRESENTATION_RETENTION >= 2 * LONGEST_REQUEST


async def test_finished_webhook_deliveries_are_purged_after_their_retention(tmp_path: Path) -> None:
    """Delivered (or given-up) outbox rows stay as the delivery record for ``OUTBOX_RETENTION``, then go."""
    db = await _migrated(tmp_path)
    now = dt.datetime.now(dt.UTC)
    margin = dt.timedelta(minutes=1)
    try:
        async with db.session() as session:
            for name, at in (("old", now - OUTBOX_RETENTION - margin), ("kept", now - OUTBOX_RETENTION + margin)):
                session.add(WebhookOutbox(id=name, url="https://agency.example/hook", endpoint_id="agency",
                                          event_type="presentation.verified", body=b"{}", attempts=1, created_at=at,
                                          next_attempt_at=at, delivered_at=at))
        assert await purge_outbox(db) == 1
        async with db.read_session() as session:
            left = set((await session.execute(select(WebhookOutbox.id))).scalars())
    finally:
        await db.dispose()
    assert left == {"kept"}
