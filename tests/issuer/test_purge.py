"""Expired protocol state is deleted by the issuer's periodic purge — including the authorization
requests and deferred transactions, which hold the citizen's identifier and name — and live state stays."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from aries.storage import WEBHOOK_EVENT_RETENTION
from issuer.app import create_app
from issuer.aries_models import AriesExchange, AriesWebhookEvent
from issuer.events import purge_outbox
from issuer.grants import INVITATION_KEPT, purge_expired
from issuer.models import AuthorizationRequest, DeferredTransaction, Tenant, WebhookOutbox
from service_kit.webhooks import OUTBOX_RETENTION
from tests.issuer.conftest import IssuerEnv

pytestmark = pytest.mark.anyio


def _authorization(name: str, tenant_id: str, expires_at: dt.datetime) -> AuthorizationRequest:
    return AuthorizationRequest(id=name, tenant_id=tenant_id, client_id="wallet", redirect_uri="https://wallet/cb",
                                code_challenge="c", configuration_ids=["padro"], stage="callback",
                                subject={"identifier": "12345678Z", "name": "Citizen"}, expires_at=expires_at)


def _deferred(name: str, tenant_id: str, expires_at: dt.datetime) -> DeferredTransaction:
    return DeferredTransaction(transaction_hash=name, tenant_id=tenant_id, token_hash="t", configuration_id="padro",
                               credential_id=f"c_{name}", source_reference="ref", request_id="req",
                               subject={"identifier": "12345678Z", "name": "Citizen"}, holder_jwks=[],
                               created_at=expires_at - dt.timedelta(days=30), expires_at=expires_at)


async def test_expired_authorization_requests_and_deferred_transactions_are_purged(issuer_env: IssuerEnv) -> None:
    app = create_app(issuer_env.settings, run_background=False, configure_logs=False)
    async with app.router.lifespan_context(app):
        ctx = app.state.ctx
        now = dt.datetime.now(dt.UTC)
        async with ctx.session() as session:
            tenant_id = (await session.execute(select(Tenant.id).where(Tenant.slug == "ajuntament-girona"))).scalar_one()
            for make in (_authorization, _deferred):
                session.add(make(f"purge-old-{make.__name__}", tenant_id, now - dt.timedelta(minutes=1)))
                session.add(make(f"purge-live-{make.__name__}", tenant_id, now + dt.timedelta(minutes=10)))
        assert await purge_expired(ctx) >= 2
        async with ctx.db.read_session() as session:
            left = {model.__name__: set((await session.execute(select(key).where(key.like("purge-%")))).scalars())
                    for model, key in ((AuthorizationRequest, AuthorizationRequest.id),
                                       (DeferredTransaction, DeferredTransaction.transaction_hash))}
            assert await session.scalar(select(func.count()).select_from(DeferredTransaction)
                                        .where(DeferredTransaction.expires_at < now)) == 0
    assert left == {"AuthorizationRequest": {"purge-live-_authorization"},
                    "DeferredTransaction": {"purge-live-_deferred"}}


async def test_aries_webhook_keys_are_purged_after_their_retention(issuer_env: IssuerEnv) -> None:
    """The keys that recognise ACA-Py's re-deliveries are kept for days, then deleted (they grew for ever)."""
    app = create_app(issuer_env.settings, run_background=False, configure_logs=False)
    async with app.router.lifespan_context(app):
        ctx = app.state.ctx
        now = dt.datetime.now(dt.UTC)
        received = {"purge-event-old": now - WEBHOOK_EVENT_RETENTION - dt.timedelta(minutes=1),
                    "purge-event-kept": now - WEBHOOK_EVENT_RETENTION + dt.timedelta(hours=1),
                    "purge-event-new": now}
        async with ctx.session() as session:
            session.add_all(AriesWebhookEvent(key=key, received_at=at) for key, at in received.items())
        deleted = await purge_expired(ctx)
        async with ctx.db.read_session() as session:
            left = set((await session.execute(select(AriesWebhookEvent.key)
                                              .where(AriesWebhookEvent.key.like("purge-event-%")))).scalars())
    assert left == {"purge-event-kept", "purge-event-new"}
    assert deleted >= 1


async def test_finished_webhook_deliveries_are_purged_after_their_retention(issuer_env: IssuerEnv) -> None:
    """The outbox keeps a delivery as its record for ``OUTBOX_RETENTION``, then the purge deletes it
    (with webhooks on the table grew by a row per issuance for ever)."""
    app = create_app(issuer_env.settings, run_background=False, configure_logs=False)
    async with app.router.lifespan_context(app):
        ctx = app.state.ctx
        now = dt.datetime.now(dt.UTC)
        margin = dt.timedelta(minutes=1)
        async with ctx.session() as session:
            for name, at in (("old", now - OUTBOX_RETENTION - margin), ("kept", now - OUTBOX_RETENTION + margin)):
                session.add(WebhookOutbox(id=f"purge-{name}", tenant_id="t", endpoint_id="e", event_type="x",
                                          body=b"{}", attempts=1, created_at=at, next_attempt_at=at, delivered_at=at))
        assert await purge_outbox(ctx) == 1
        async with ctx.db.read_session() as session:
            left = set((await session.execute(select(WebhookOutbox.id).where(WebhookOutbox.id.like("purge-%"))))
                       .scalars())
    assert left == {"purge-kept"}


async def test_aries_invitations_nobody_answered_are_purged_a_day_after_their_expiry(issuer_env: IssuerEnv) -> None:
    """An invitation's row holds the subject's identifier and name; once expired, no wallet can answer
    it. The exchanges that went on (offered, issued, failed) stay, as do open invitations."""
    app = create_app(issuer_env.settings, run_background=False, configure_logs=False)
    async with app.router.lifespan_context(app):
        ctx = app.state.ctx
        now = dt.datetime.now(dt.UTC)
        long_ago = now - INVITATION_KEPT - dt.timedelta(minutes=1)
        async with ctx.session() as session:
            tenant_id = (await session.execute(select(Tenant.id).where(Tenant.slug == "ajuntament-girona"))).scalar_one()
            for name, state, expires in (("unanswered", "invited", long_ago), ("issued", "issued", long_ago),
                                         ("failed", "failed", long_ago), ("recently-expired", "invited", now),
                                         ("open", "invited", now + dt.timedelta(hours=1))):
                session.add(AriesExchange(
                    id=f"purge-ax-{name}", tenant_id=tenant_id, type_id="padro", proof_type="Ed25519Signature2020",
                    subject={"identifier": "12345678Z", "name": "Citizen"}, short_code_hash=f"purge-{name}",
                    invitation_msg_id=f"purge-{name}", invitation={}, invitation_url="https://x", state=state,
                    created_at=expires - dt.timedelta(hours=1), expires_at=expires, updated_at=expires))
        await purge_expired(ctx)
        async with ctx.db.read_session() as session:
            left = set((await session.execute(select(AriesExchange.id).where(AriesExchange.id.like("purge-ax-%"))))
                       .scalars())
    assert left == {"purge-ax-issued", "purge-ax-failed", "purge-ax-recently-expired", "purge-ax-open"}
