"""The issuer's webhook round: one event that cannot be sent does not stop the others."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

import pytest
from sqlalchemy import select

from issuer.app import create_app
from issuer.events import deliver_due
from issuer.models import Tenant, WebhookEndpoint, WebhookOutbox
from issuer.settings import IssuerSettings
from tests.support.peers import recording_receiver
from tests.support.servers import serve

pytestmark = pytest.mark.anyio


async def test_a_row_that_raises_does_not_end_the_round(tmp_path: Path) -> None:
    """An endpoint whose stored URL httpx cannot even parse (InvalidURL, not a transport error) comes
    first in the round; the next endpoint's event is still delivered in the same round, and the bad
    row keeps its lease (its attempt counted) instead of being lost."""
    receiver, received = recording_receiver()

    settings = IssuerSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'issuer.db'}", dev_mode=True,
                              master_key=secrets.token_hex(32), data_dir=tmp_path, public_url="http://127.0.0.1:9")
    app = create_app(settings, run_background=False, configure_logs=False)
    with serve(receiver) as hook_url:
        async with app.router.lifespan_context(app):
            ctx = app.state.ctx
            now = dt.datetime.now(dt.UTC)
            async with ctx.session() as session:
                session.add(Tenant(id="t1", slug="t1", name="T1", created_at=now))
                for endpoint_id, url in (("broken", "http://[::1/hook"), ("good", f"{hook_url}/hook")):
                    session.add(WebhookEndpoint(
                        id=endpoint_id, tenant_id="t1", url=url, events=["credential.issued"], created_at=now,
                        sealed_secret=ctx.box.seal(b"whsec", f"issuer:webhook:{endpoint_id}".encode())))
                for age, endpoint_id in ((2, "broken"), (1, "good")):  # the broken one first
                    at = now - dt.timedelta(seconds=age)
                    session.add(WebhookOutbox(id=f"evt-{endpoint_id}", tenant_id="t1", endpoint_id=endpoint_id,
                                              event_type="credential.issued", body=b'{"type": "credential.issued"}',
                                              attempts=0, created_at=at, next_attempt_at=at))
            assert await deliver_due(ctx) == 1
            async with ctx.db.read_session() as session:
                rows = {r.id: r for r in (await session.execute(select(WebhookOutbox))).scalars()}
    assert received == [b'{"type": "credential.issued"}']
    assert rows["evt-good"].delivered_at is not None
    broken = rows["evt-broken"]
    assert broken.delivered_at is None and broken.attempts == 1 and broken.next_attempt_at > now
