"""The wallet's background sweep deletes the logins never finished and the app codes never exchanged
once they have expired (nothing deleted them before: only finishing or exchanging did), and leaves the
unexpired ones usable.

An in-process wallet on its own SQLite database, migrated by its start-up; the sweep called as its
background loop calls it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from service_kit.webhooks import OUTBOX_RETENTION
from tests.wallet_api.conftest import offline_wallet
from wallet_api.background import OFFER_KEPT, PRESENTATION_KEPT, stranded_after, sweep
from wallet_api.models import (
    AlertWebhookOutbox,
    AppCode,
    Credential,
    LoginTransaction,
    Offer,
    Presentation,
    Session,
    UsedRefreshToken,
    Wallet,
)

pytestmark = pytest.mark.anyio


async def test_the_sweep_purges_expired_logins_and_app_codes(tmp_path: Path) -> None:
    async with offline_wallet(tmp_path) as ctx:
        now = dt.datetime.now(dt.UTC)
        expiries = {"old": now - dt.timedelta(minutes=1), "live": now + dt.timedelta(minutes=5)}
        async with ctx.db.session() as session:
            session.add(Wallet(id="w-purge", subject_index="purge", data_key=b"\0", profile=b"\0"))
            await session.flush()
            session.add(Session(id="s-purge", wallet_id="w-purge", provider="valid"))
            await session.flush()
            for name, at in expiries.items():
                session.add(LoginTransaction(state_hash=f"login-{name}", provider="valid", sealed=b"\0",
                                             expires_at=at))
                session.add(AppCode(code_hash=f"code-{name}", session_id="s-purge", redirect_uri_hash="r",
                                    expires_at=at))
        done = await sweep(ctx)
        async with ctx.db.read_session() as session:
            logins = set((await session.execute(select(LoginTransaction.state_hash))).scalars())
            codes = set((await session.execute(select(AppCode.code_hash))).scalars())
    assert logins == {"login-live"}
    assert codes == {"code-live"}
    assert done["logins_purged"] == 2


async def test_the_sweep_purges_alert_webhooks_delivered_or_given_up_past_their_retention(tmp_path: Path) -> None:
    async with offline_wallet(tmp_path) as ctx:
        now = dt.datetime.now(dt.UTC)
        margin = dt.timedelta(minutes=1)
        attempts = ctx.settings.webhook_max_attempts
        async with ctx.db.session() as session:
            session.add(Wallet(id="w-purge", subject_index="purge", data_key=b"\0", profile=b"\0"))
            await session.flush()
            for name, at, delivered in (("old-delivered", now - OUTBOX_RETENTION - margin, True),
                                        ("old-given-up", now - OUTBOX_RETENTION - margin, False),
                                        ("kept", now - OUTBOX_RETENTION + margin, True)):
                session.add(AlertWebhookOutbox(id=name, wallet_id="w-purge", endpoint_id="alerts", event_type="alert",
                                               body=b"{}", attempts=attempts, created_at=at, next_attempt_at=at,
                                               delivered_at=at if delivered else None))
        done = await sweep(ctx)
        async with ctx.db.read_session() as session:
            left = set((await session.execute(select(AlertWebhookOutbox.id))).scalars())
    assert left == {"kept"}
    assert done["webhooks_purged"] == 2


async def test_the_sweep_purges_presentation_requests_a_day_after_their_expiry(tmp_path: Path) -> None:
    """A request's row (its preview holds the claim values offered) goes a day after its expiry; the
    share stays in the history. One still being answered is recorded first, never purged unrecorded."""
    async with offline_wallet(tmp_path) as ctx:
        now = dt.datetime.now(dt.UTC)
        margin = dt.timedelta(minutes=1)
        async with ctx.db.session() as session:
            session.add(Wallet(id="w-purge", subject_index="purge", data_key=b"\0", profile=b"\0"))
            await session.flush()
            for name, state, at in (("old-sent", "sent", now - PRESENTATION_KEPT - margin),
                                    ("old-unanswered", "pending", now - PRESENTATION_KEPT - margin),
                                    ("recent-sent", "sent", now - PRESENTATION_KEPT + margin),
                                    ("open", "pending", now + margin)):
                session.add(Presentation(id=name, wallet_id="w-purge", state=state, sealed=b"\0", expires_at=at))
        done = await sweep(ctx)
        async with ctx.db.read_session() as session:
            left = set((await session.execute(select(Presentation.id))).scalars())
    assert left == {"recent-sent", "open"}
    assert done["presentations_purged"] == 2


async def test_a_wallet_whose_key_cannot_be_opened_stops_no_job_of_the_sweep(tmp_path: Path) -> None:
    """A wallet whose data key does not open (a master key rotated wrongly, a damaged row) with a
    credential due for a status check and a request left 'sending': the status check fails, the
    request cannot be ended and moves to the back of the window; every other job still runs."""
    async with offline_wallet(tmp_path) as ctx:
        now = dt.datetime.now(dt.UTC)
        async with ctx.db.session() as session:
            session.add(Wallet(id="w-broken", subject_index="broken", data_key=b"\0", profile=b"\0"))
            await session.flush()
            session.add(Credential(id="c-broken", wallet_id="w-broken", vct="https://vct", issuer="https://issuer",
                                   sealed=b"\0", next_status_check=now - dt.timedelta(minutes=1)))
            session.add(Presentation(id="p-broken", wallet_id="w-broken", state="sending", sealed=b"\0",
                                     expires_at=now - dt.timedelta(hours=1)))
            session.add(LoginTransaction(state_hash="login-old", provider="valid", sealed=b"\0",
                                         expires_at=now - dt.timedelta(minutes=1)))
        done = await sweep(ctx)
        async with ctx.db.read_session() as session:
            logins = set((await session.execute(select(LoginTransaction.state_hash))).scalars())
            stuck = await session.get(Presentation, "p-broken")
            assert stuck is not None
    assert done["status_checked"] == 0 and done["stranded_resolved"] == 0
    assert logins == set() and done["logins_purged"] == 1  # the jobs after the failing ones ran
    # Still 'sending' (its share cannot be recorded without its key), out of the next sweeps' window.
    assert stuck.state == "sending"
    assert stuck.expires_at > now - stranded_after(ctx.settings)


async def test_the_sweep_purges_offers_a_month_after_they_ended(tmp_path: Path) -> None:
    """An ended offer's row (issuer metadata, the exchange's tokens) goes ``OFFER_KEPT`` after its
    receipt; a deferred issuance still pending stays however old, and so does one being accepted."""
    async with offline_wallet(tmp_path) as ctx:
        now = dt.datetime.now(dt.UTC)
        old = now - OFFER_KEPT - dt.timedelta(minutes=1)
        async with ctx.db.session() as session:
            session.add(Wallet(id="w-purge", subject_index="purge", data_key=b"\0", profile=b"\0"))
            await session.flush()
            for name, state, created, expires in (
                    ("old-issued", "issued", old, old), ("old-failed", "failed", old, old),
                    ("old-declined", "declined", old, old), ("old-never-accepted", "offered", old, old),
                    ("old-pending", "pending", old, old), ("old-accepting", "accepting", now, now),
                    ("recent-issued", "issued", now - dt.timedelta(days=1), now - dt.timedelta(days=1)),
                    ("open", "offered", now, now + dt.timedelta(minutes=10))):
                session.add(Offer(id=name, wallet_id="w-purge", issuer="https://issuer", state=state, sealed=b"\0",
                                  created_at=created, expires_at=expires))
        done = await sweep(ctx)
        async with ctx.db.read_session() as session:
            left = set((await session.execute(select(Offer.id))).scalars())
    assert left == {"old-pending", "old-accepting", "recent-issued", "open"}
    assert done["offers_purged"] == 4


async def test_the_sweep_purges_rotated_refresh_tokens_once_they_would_have_expired(tmp_path: Path) -> None:
    """A rotated refresh token's hash is kept to tell a reuse (which revokes its session) until the token
    would have expired; after that it serves nothing and goes."""
    async with offline_wallet(tmp_path) as ctx:
        now = dt.datetime.now(dt.UTC)
        async with ctx.db.session() as session:
            session.add(Wallet(id="w-purge", subject_index="purge", data_key=b"\0", profile=b"\0"))
            await session.flush()
            session.add(Session(id="s-purge", wallet_id="w-purge", provider="valid"))
            await session.flush()
            for name, at in (("old", now - dt.timedelta(minutes=1)), ("live", now + dt.timedelta(days=1))):
                session.add(UsedRefreshToken(token_hash=f"used-{name}", session_id="s-purge", expires_at=at))
        await sweep(ctx)
        async with ctx.db.read_session() as session:
            left = set((await session.execute(select(UsedRefreshToken.token_hash))).scalars())
    assert left == {"used-live"}
