"""One row the background sweep cannot handle must not stop its job for every other wallet.

Each job of the sweep reads a batch of rows in due order, the most overdue first. A row that fails
every time (details of an unexpected shape, a wallet key that does not open) was never updated: it
stayed at the head of the due list and every sweep failed on it first, so no other wallet had its
status checked, its expiry alerted or its deferred credential fetched. Now a failing row is logged (its
id and the error's type, nothing it holds), moved out of the head (checked again an hour later, or
marked alerted), and the job goes on with the other rows.

An in-process wallet on its own SQLite database, migrated by its start-up; the bad rows are planted
directly in the database, and the sweep called as its background loop calls it.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.wallet_api.conftest import offline_wallet
from wallet_api import audit
from wallet_api.background import sweep
from wallet_api.context import WalletContext
from wallet_api.models import Alert, AuditHead, Credential, Offer, Wallet
from wallet_api.store import add_credential
from wallet_api.vault import DataKey

pytestmark = pytest.mark.anyio

JWK = {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
       "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
SECRET = "a claim value that must never be logged"


async def _wallet(ctx: WalletContext, wallet_id: str) -> DataKey:
    sealed, key = ctx.vault.new_data_key(wallet_id)
    async with ctx.db.session() as session:
        session.add(Wallet(id=wallet_id, subject_index=wallet_id, data_key=sealed,
                           profile=key.seal("profile", wallet_id, {})))
    return key


async def _credential(ctx: WalletContext, key: DataKey, details: dict[str, Any], *, due: dt.datetime,
                      expires: dt.datetime) -> str:
    async with ctx.db.session() as session:
        cid = await add_credential(session, key, vct="urn:test", issuer="https://issuer.example", details=details,
                                   copies=[("token", JWK)], iat=None, exp=expires.timestamp())
        (await session.get(Credential, cid)).next_status_check = due  # type: ignore[union-attr]
    return cid


def _logged_rows(caplog: pytest.LogCaptureFixture) -> set[str]:
    """The rows the sweep logged it could not handle (their ids travel as the record's ``row``)."""
    return {r.row for r in caplog.records if isinstance(getattr(r, "row", None), str)}


async def test_a_credential_the_sweep_cannot_handle_does_not_stop_the_other_wallets_checks_and_alerts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with offline_wallet(tmp_path) as ctx:
        now = dt.datetime.now(dt.UTC)
        soon = now + dt.timedelta(days=2)
        bad = await _wallet(ctx, "w-bad")
        good = await _wallet(ctx, "w-good")
        # Due and expiring first: a status reference that is not a list of objects, a display that is not
        # an object (neither is what the wallet stores, but a row must not be able to stop the sweep).
        bad_status = await _credential(ctx, bad, {"statuses": SECRET, "claims": {"name": SECRET}},
                                       due=now - dt.timedelta(hours=2), expires=now + dt.timedelta(days=1))
        bad_display = await _credential(ctx, bad, {"display": SECRET, "statuses": []},
                                        due=now - dt.timedelta(hours=2), expires=now + dt.timedelta(hours=1))
        async with ctx.db.session() as session:  # and a wallet whose key does not open, expiring first
            session.add(Wallet(id="w-broken", subject_index="broken", data_key=b"\0", profile=b"\0"))
            await session.flush()
            session.add(Credential(id="c-broken", wallet_id="w-broken", vct="urn:test", issuer="https://issuer",
                                   sealed=b"\0", expires_at=now + dt.timedelta(minutes=30),
                                   next_status_check=now - dt.timedelta(hours=3)))
        victim = await _credential(ctx, good, {"statuses": [], "display": {"name": "Títol"}},
                                   due=now - dt.timedelta(minutes=1), expires=soon)
        with caplog.at_level(logging.INFO):
            done = await sweep(ctx)
            again = await sweep(ctx)
        async with ctx.db.read_session() as session:
            rows = {c.id: c for c in (await session.execute(select(Credential))).scalars()}
            alerts = (await session.execute(select(Alert).where(Alert.wallet_id == "w-good"))).scalars().all()
            bad_alerts = (await session.execute(select(Alert).where(Alert.wallet_id == "w-bad"))).scalars().all()

    # The other wallet was checked and alerted, in the first sweep.
    assert rows[victim].status_checked_at is not None
    assert [(a.kind, a.credential_id) for a in alerts] == [("expiring", victim)]
    assert done["expiry_alerts"] >= 1 and done["status_checked"] >= 1
    # The bad rows left the head of the due lists: checked again an hour later at the soonest, alerted.
    assert rows[bad_status].next_status_check is not None
    assert rows[bad_status].next_status_check >= now + dt.timedelta(minutes=50)
    assert rows["c-broken"].next_status_check >= now + dt.timedelta(minutes=50)
    assert all(row.expiry_alerted for row in rows.values())
    # A display that is not an object names the credential by its type, and stops nothing.
    assert rows[bad_display].status_checked_at is not None
    assert sorted(a.message.split(" expires")[0] for a in bad_alerts if a.kind == "expiring") == ["urn:test"] * 2
    # Each failure is logged with ids and the error's type, never what the credential holds.
    assert {bad_status, "c-broken"} <= _logged_rows(caplog)
    assert SECRET not in caplog.text and SECRET not in str([r.__dict__ for r in caplog.records])
    assert again["status_checked"] == 0  # nothing due any more: the bad row is not retried at once


async def test_a_deferred_offer_the_sweep_cannot_poll_does_not_stop_the_other_polls(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with offline_wallet(tmp_path) as ctx:
        now = dt.datetime.now(dt.UTC)
        async with ctx.db.session() as session:
            # A wallet whose key does not open, and an offer whose sealed data does not open.
            session.add(Wallet(id="w-broken", subject_index="broken", data_key=b"\0", profile=b"\0"))
        key = await _wallet(ctx, "w-other")
        async with ctx.db.session() as session:
            session.add(Offer(id="o-broken-key", wallet_id="w-broken", issuer="https://issuer", state="pending",
                              sealed=b"\0", expires_at=now, next_poll_at=now - dt.timedelta(hours=2)))
            session.add(Offer(id="o-broken-data", wallet_id="w-other", issuer="https://issuer", state="pending",
                              sealed=key.seal("offer", "another id", {"secret": SECRET}), expires_at=now,
                              next_poll_at=now - dt.timedelta(hours=1)))
        with caplog.at_level(logging.INFO):
            done = await sweep(ctx)
            again = await sweep(ctx)
        async with ctx.db.read_session() as session:
            offers = {o.id: o for o in (await session.execute(select(Offer))).scalars()}

    # Both were tried (the first failing did not stop the second), and both come back an hour later.
    assert done["deferred_polled"] == 2
    for offer in offers.values():
        assert offer.state in ("pending", "polling")
        assert offer.next_poll_at is not None and offer.next_poll_at >= now + dt.timedelta(minutes=50), offer.id
    assert {"o-broken-key", "o-broken-data"} <= _logged_rows(caplog)
    assert SECRET not in caplog.text and SECRET not in str([r.__dict__ for r in caplog.records])
    assert again["deferred_polled"] == 0


async def test_a_chain_that_cannot_be_checkpointed_does_not_stop_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with offline_wallet(tmp_path) as ctx:
        async with ctx.db.session() as session:
            for wallet_id in ("w-a", "w-b", "w-c"):
                session.add(Wallet(id=wallet_id, subject_index=wallet_id, data_key=b"\0", profile=b"\0"))
                await session.flush()
                session.add(AuditHead(chain_id=wallet_id, seq=1, head="0" * 64, checkpointed=0))
        signed: list[str] = []
        real = audit.ensure_checkpoint

        async def failing_once(ctx_: WalletContext, wallet_id: str) -> Any:
            if not signed:
                signed.append("failed " + wallet_id)
                raise TypeError("an injected failure")
            signed.append(wallet_id)
            return await real(ctx_, wallet_id)

        monkeypatch.setattr(audit, "ensure_checkpoint", failing_once)
        done = await sweep(ctx)
    assert len(signed) == 3, signed  # the chains after the failing one were checkpointed too
    assert done["audit_checkpoints"] == 2
