"""Periodic work: status-list checks (honouring ``ttl``), expiry alerts, deferred issuance polls, the
end of exchanges a stopped worker left half-way, purges, and the delivery of queued alerts to the
configured webhook (its own, faster loop).

Every step selects its rows from the database by due time, so several workers may run the sweep; a
row checked twice costs one extra fetch, never a wrong result.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Select, and_, delete, or_, select, text, update

from service_kit.outbound import CALL_DEADLINE_FACTOR
from service_kit.webhooks import claim_due_webhooks, deliver_webhook, purge_finished_webhooks, record_delivery
from ssi.errors import SSIError
from ssi.status_list import INVALID, SUSPENDED, VALID, StatusListToken, verify_status_list_token

from .audit import checkpoint_due
from .context import FetchError, WalletContext
from .issuer_keys import status_list_key
from .models import (
    OFFER_ACCEPTING,
    PRESENTATION_ANSWERING,
    AlertWebhookOutbox,
    AppCode,
    Credential,
    LoginTransaction,
    Offer,
    Presentation,
    UsedRefreshToken,
    Wallet,
    utcnow,
)
from .receiving import poll_offer, resolve_stranded_offer
from .settings import WalletSettings
from .sharing import resolve_stranded
from .store import add_alert
from .vault import VaultError

log = logging.getLogger(__name__)

#: The Status Types the wallet acts on. Any other value (0x03 and 0x0C-0x0F are application specific,
#: the rest reserved: draft-ietf-oauth-status-list, "Status Types Values") has no meaning the wallet
#: knows: the credential keeps its last known status.
STATUS_NAMES = {VALID: "valid", INVALID: "revoked", SUSPENDED: "suspended"}
BATCH = 100
#: Alert webhooks sent per round at most (each leased on its own).
WEBHOOK_ROUND = 20
#: How long an ended presentation request stays readable (``GET /v1/presentations/{id}``) after its
#: expiry; the share itself is in the history for good.
PRESENTATION_KEPT = dt.timedelta(days=1)
PURGE_BATCH = 5000
#: How long an ended offer (issued, failed, declined, or never accepted and expired) stays readable
#: (``GET /v1/offers/{id}``) after it was received. Its row holds the issuer's metadata and the tokens of
#: the exchange, which serve nothing once it ended; the credentials and the history keep what counts.
#: A deferred issuance still pending is kept however old.
OFFER_KEPT = dt.timedelta(days=30)
#: How long the sweep leaves an exchange it could not end before trying it again.
STRANDED_RETRY = dt.timedelta(hours=1)
#: How long a status check or deferred poll that failed unexpectedly waits before it is tried again
#: (a row failing every time must not stay at the head of its due list, ahead of every other wallet's).
ROW_RETRY = dt.timedelta(hours=1)


def stranded_after(settings: WalletSettings) -> dt.timedelta:
    """How long after its expiry an exchange still 'sending', 'declining' or 'accepting' was left by a
    worker that stopped: every answer or acceptance starts before the expiry, and its HTTP exchanges
    (a few calls of ``http_timeout`` each) end long before this."""
    return max(dt.timedelta(minutes=15), dt.timedelta(seconds=30 * settings.http_timeout))


async def webhook_loop(ctx: WalletContext) -> None:
    """Push queued alerts to the configured webhook every ``webhook_interval`` seconds until cancelled."""
    while True:
        try:
            await deliver_alert_webhooks(ctx)
        except Exception:  # noqa: BLE001 - a failed round must not stop the next one
            log.exception("wallet alert webhook round failed")
        await asyncio.sleep(ctx.settings.webhook_interval)


async def deliver_alert_webhooks(ctx: WalletContext) -> int:
    """Lease due outbox rows, POST each (signed, a few quick retries), record the outcome; return how
    many were delivered. Rows that keep failing come back with exponential backoff
    (:func:`service_kit.webhooks.next_attempt_after`) up to ``webhook_max_attempts`` leases."""
    settings = ctx.settings
    if not settings.webhook_url or settings.webhook_secret is None:
        return 0
    secret = settings.webhook_secret.get_secret_value()
    delivered = 0
    async with ctx.client(operator_configured=True) as client:
        # One row leased at a time, for longer than its tries can take (3 tries, each ended by its
        # deadline, and the pauses): a batch of 20 under one two-minute lease could outlast it, and
        # another worker would take the rest and send them again.
        lease = dt.timedelta(seconds=3 * CALL_DEADLINE_FACTOR * settings.http_timeout + 30)
        for _ in range(WEBHOOK_ROUND):
            async with ctx.db.session() as session:
                rows = await claim_due_webhooks(session, AlertWebhookOutbox, utcnow(), lease=lease, limit=1,
                                                max_attempts=settings.webhook_max_attempts)
            if not rows:
                break
            ((row_id, _endpoint, _event_type, body, attempts),) = rows
            result = await deliver_webhook(client, settings.webhook_url, body, secret, event_id=row_id,
                                           max_attempts=3, base_delay=0.2, max_delay=5.0,
                                           timeout=settings.http_timeout)
            async with ctx.db.session() as session:
                await record_delivery(session, AlertWebhookOutbox, row_id, result, utcnow(), attempts=attempts,
                                      max_attempts=settings.webhook_max_attempts)
            delivered += int(result.delivered)
    return delivered


async def background_loop(ctx: WalletContext) -> None:
    """Run :func:`sweep` every ``background_interval`` seconds until cancelled."""
    while True:
        try:
            await sweep(ctx)
        except Exception:  # noqa: BLE001 - a failed sweep must not stop the next one
            log.exception("wallet background sweep failed")
        await asyncio.sleep(ctx.settings.background_interval)


async def sweep(ctx: WalletContext) -> dict[str, int]:
    """One pass of every periodic job; returns counts (for tests and logs). Each job runs whatever
    the others do: one that fails (a database hiccup, a row it cannot handle) is logged and counts 0."""
    jobs: dict[str, Callable[[WalletContext], Awaitable[int]]] = {
        "status_checked": check_statuses, "expiry_alerts": expiry_alerts, "deferred_polled": poll_deferred,
        "audit_checkpoints": checkpoint_due, "stranded_resolved": resolve_stranded_exchanges,
        "presentations_purged": purge_ended_presentations, "offers_purged": purge_ended_offers,
        "logins_purged": purge_expired_logins,
        "webhooks_purged": purge_outbox}
    done: dict[str, int] = {}
    for name, job in jobs.items():
        try:
            done[name] = await job(ctx)
        except Exception:  # noqa: BLE001 - the other jobs still run, this one again next sweep
            log.exception("wallet background job failed", extra={"job": name})
            done[name] = 0
            if ctx.sweep_failures is not None:
                ctx.sweep_failures.labels(name).inc()
    if ctx.sweeps_counter is not None:
        ctx.sweeps_counter.inc()
    return done


def stranded_presentations(before: dt.datetime) -> Select[tuple[Presentation]]:
    """Requests left 'sending' or 'declining' that expired before ``before``: a range of
    ``ix_presentations_answering``, which holds only those being answered."""
    return (select(Presentation).where(text(f"presentations.{PRESENTATION_ANSWERING}"),
                                       Presentation.expires_at < before)
            .order_by(Presentation.expires_at).limit(BATCH))


def stranded_offers(before: dt.datetime) -> Select[tuple[Offer]]:
    """Offers left 'accepting' that expired before ``before``, through ``ix_offers_accepting``."""
    return (select(Offer).where(text(f"offers.{OFFER_ACCEPTING}"), Offer.expires_at < before)
            .order_by(Offer.expires_at).limit(BATCH))


async def resolve_stranded_exchanges(ctx: WalletContext) -> int:
    """End the exchanges a worker that stopped (a crash, a restart, the database gone at its last
    write) left half-way, so that none stays 'sending', 'declining' or 'accepting' for good: a share
    that may have left is recorded in the history (``sharing.resolve_stranded``), an acceptance is
    failed (``receiving.resolve_stranded_offer``). Returns how many."""
    before = utcnow() - stranded_after(ctx.settings)
    async with ctx.db.read_session() as session:
        presentations = (await session.execute(stranded_presentations(before))).scalars().all()
        offers = (await session.execute(stranded_offers(before))).scalars().all()
        ids = {r.wallet_id for r in presentations} | {r.wallet_id for r in offers}
        wallets = {w.id: w for w in (await session.execute(
            select(Wallet).where(Wallet.id.in_(ids)))).scalars()} if ids else {}
    resolved = 0
    for row in [*presentations, *offers]:
        try:
            key = ctx.vault.data_key(wallets[row.wallet_id])
            async with ctx.db.session() as session:
                if isinstance(row, Presentation):
                    done = await resolve_stranded(session, key, row)
                else:
                    done = await resolve_stranded_offer(session, key, row)
        except Exception as exc:  # noqa: BLE001 - one row that cannot be ended must not stop the others for good
            _row_failed("end of an exchange left half-way", row.wallet_id, row.id, exc)
            await _retry_later(ctx, row)
            continue
        if done:
            log.warning("exchange left half-way by a stopped worker ended", extra={
                "row": row.id, "state": row.state})
        resolved += done
    return resolved


async def _retry_later(ctx: WalletContext, row: Presentation | Offer) -> None:
    """Move a row that could not be ended to the back of the window the sweep reads (an hour on), so
    that rows failing every time cannot keep the others out of its batch."""
    model = type(row)
    later = utcnow() - stranded_after(ctx.settings) + STRANDED_RETRY
    with contextlib.suppress(Exception):  # the database itself failing: the next sweep tries again
        async with ctx.db.session() as session:
            await session.execute(update(model).where(model.id == row.id, model.state == row.state)
                                  .values(expires_at=later).execution_options(synchronize_session=False))


async def purge_ended_presentations(ctx: WalletContext) -> int:
    """Delete the presentation requests ``PRESENTATION_KEPT`` past their expiry (the preview they
    hold, claim values included, served its purpose; the history keeps each share), through
    ``ix_presentations_expires_at``. One still being answered is left to
    :func:`resolve_stranded_exchanges`, which records it first."""
    before = utcnow() - PRESENTATION_KEPT
    deleted = 0
    while True:  # in batches: the first purge of a table that grew for months is not one transaction
        async with ctx.db.session() as session:
            # The ids first, then a delete by primary key (a DELETE ... IN (subquery) may be run by
            # PostgreSQL as a hash join over the whole table).
            ids = list((await session.scalars(ended_presentations(before, limit=PURGE_BATCH))).all())
            if ids:
                await session.execute(delete(Presentation).where(Presentation.id.in_(ids)))
        deleted += len(ids)
        if len(ids) < PURGE_BATCH:
            return deleted


def ended_presentations(before: dt.datetime, *, limit: int = PURGE_BATCH) -> Select[tuple[str]]:
    """Ids of up to ``limit`` presentation requests that expired before ``before`` and are not being
    answered, the oldest first (a range of ``ix_presentations_expires_at``)."""
    return (select(Presentation.id).where(Presentation.expires_at < before,
                                          Presentation.state.not_in(("sending", "declining")))
            .order_by(Presentation.expires_at).limit(limit))


def ended_offers(received_before: dt.datetime, now: dt.datetime, *, limit: int = PURGE_BATCH) -> Select[tuple[str]]:
    """Ids of up to ``limit`` offers received before ``received_before`` that have ended — issued,
    failed, declined, or never accepted and expired — the oldest first (a range of
    ``ix_offers_created_at``; a deferred one still pending is passed over)."""
    return (select(Offer.id).where(
        Offer.created_at < received_before,
        or_(Offer.state.in_(("issued", "failed", "declined")),
            and_(Offer.state.in_(("offered", "authorizing")), Offer.expires_at < now)))
        .order_by(Offer.created_at).limit(limit))


async def purge_ended_offers(ctx: WalletContext) -> int:
    """Delete, in batches, the offers :func:`ended_offers` finds ``OFFER_KEPT`` after they were received."""
    now = utcnow()
    deleted = 0
    while True:
        async with ctx.db.session() as session:
            ids = list((await session.scalars(ended_offers(now - OFFER_KEPT, now))).all())
            if ids:
                await session.execute(delete(Offer).where(Offer.id.in_(ids)))
        deleted += len(ids)
        if len(ids) < PURGE_BATCH:
            return deleted


async def purge_expired_logins(ctx: WalletContext) -> int:
    """Delete the logins never finished and the app codes never exchanged once expired (unusable then:
    both are consumed only while unexpired), and the hashes of rotated refresh tokens once those would
    have expired (no longer told from unknown ones then), through their ``expires_at`` indexes; returns
    rows deleted."""
    now = utcnow()
    deleted = 0
    async with ctx.db.session() as session:
        for model, column in ((LoginTransaction, LoginTransaction.expires_at), (AppCode, AppCode.expires_at),
                              (UsedRefreshToken, UsedRefreshToken.expires_at)):
            result = await session.execute(delete(model).where(column < now))
            deleted += result.rowcount or 0  # type: ignore[attr-defined]
    return deleted


async def purge_outbox(ctx: WalletContext) -> int:
    """Delete the alert webhooks finished (delivered or given up) ``OUTBOX_RETENTION`` ago."""
    return await purge_finished_webhooks(ctx.db.session, AlertWebhookOutbox, utcnow(),
                                         max_attempts=ctx.settings.webhook_max_attempts)


def status_checks_due(now: dt.datetime) -> Select[tuple[Credential]]:
    """The next batch of credentials whose status check is due, the most overdue first: a range of
    ``ix_credentials_next_status_check``, so a sweep reads only those (a revoked one has no next check)."""
    return (select(Credential).where(Credential.status != "revoked", Credential.next_status_check <= now)
            .order_by(Credential.next_status_check).limit(BATCH))


def polls_due(now: dt.datetime) -> Select[tuple[Offer]]:
    """The next batch of pending offers whose deferred poll is due, and of offers whose poll's lease
    ran out (``receiving.POLL_LEASE``), through ``ix_offers_next_poll_at``."""
    return (select(Offer).where(Offer.state.in_(("pending", "polling")), Offer.next_poll_at <= now)
            .order_by(Offer.next_poll_at).limit(BATCH))


def expiry_alerts_due(horizon: dt.datetime) -> Select[tuple[Credential]]:
    """The next batch of credentials expiring by ``horizon`` that have not been alerted, the soonest
    first: a range of ``ix_credentials_expiry_unalerted``, which holds only the unalerted ones."""
    return (select(Credential).where(~Credential.expiry_alerted, Credential.expires_at <= horizon)
            .order_by(Credential.expires_at).limit(BATCH))


async def check_statuses(ctx: WalletContext, *, force: bool = False) -> int:
    """Fetch the status list of every credential due for a check; alert on changes. A credential that
    cannot be checked at all (its wallet key does not open, its stored details are not what the wallet
    writes) is logged and checked again ``ROW_RETRY`` later; the others are checked regardless."""
    now = utcnow()
    query = select(Credential).where(Credential.status != "revoked").limit(BATCH) if force else status_checks_due(now)
    async with ctx.db.read_session() as session:
        rows = (await session.execute(query)).scalars().all()
        wallets = {w.id: w for w in (await session.execute(
            select(Wallet).where(Wallet.id.in_({r.wallet_id for r in rows})))).scalars()} if rows else {}
    lists: dict[tuple[str, str], StatusListToken] = {}
    checked = 0
    async with ctx.client() as client:
        for row in rows:
            try:
                await _check_status(ctx, client, lists, wallets[row.wallet_id], row, now)
            except Exception as exc:  # noqa: BLE001 - one credential must not stop every wallet's checks
                _row_failed("status check", row.wallet_id, row.id, exc)
                await _push_back(ctx, update(Credential).where(
                    Credential.id == row.id, Credential.status == row.status, Credential.status != "revoked")
                    .values(next_status_check=utcnow() + ROW_RETRY))
                continue
            checked += 1
    return checked


async def check_statuses_now(ctx: WalletContext, wallet: Wallet, rows: list[Credential]) -> None:
    """Check these credentials of ``wallet`` now, as the sweep checks one whose check is due (same
    rules, same alerts): an approval about to present them (:func:`wallet_api.sharing.approve`). A list
    that cannot be fetched or is not the issuer's leaves the last known status; a credential whose stored
    details do not open is left as it is (the approval then refuses it as unreadable)."""
    now = utcnow()
    lists: dict[tuple[str, str], StatusListToken] = {}
    async with ctx.client() as client:
        for row in rows:
            try:
                await _check_status(ctx, client, lists, wallet, row, now)
            except VaultError:
                continue


async def _check_status(ctx: WalletContext, client: Any, lists: dict[tuple[str, str], StatusListToken],
                        wallet: Wallet, row: Credential, now: dt.datetime) -> None:
    """Check one credential's status list entry (``lists``: the lists already fetched and verified in
    this sweep, by URI and by the issuer they were verified as).

    The list counts only when its token is signed by a key the credential's own issuer is trusted to
    use (:func:`wallet_api.issuer_keys.status_list_key`: the rules the credential itself passed at
    receipt) and its ``sub`` is the URI the credential names. Any other token, like a list that cannot
    be fetched, is a failed check: the last known status stays and the check comes back sooner.
    Otherwise anyone holding a certificate under the issuer anchors (another issuer, another tenant of
    the same host) who could answer at the list's URI would revoke a citizen's credential, for good."""
    key = ctx.vault.data_key(wallet)
    details = key.open("credential", row.id, row.sealed)
    statuses = details.get("statuses") or []
    next_check: dt.datetime | None = now + dt.timedelta(seconds=ctx.settings.status_check_interval)
    new_status = row.status
    if statuses:
        ref = statuses[0]
        try:
            # Keyed by issuer too: a list verified for one issuer's credential says nothing of another's.
            token = lists.get((ref["uri"], row.issuer))
            if token is None:
                response = await ctx.request(client, "GET", ref["uri"],
                                             headers={"Accept": "application/statuslist+jwt"})
                if response.status_code != 200:
                    raise FetchError(f"HTTP {response.status_code}")
                token = await asyncio.to_thread(
                    verify_status_list_token, response.text.strip(), key=status_list_key(ctx, row.issuer),
                    expected_uri=ref["uri"])
                lists[(ref["uri"], row.issuer)] = token
            value = token.status(int(ref["idx"]))
            if value in STATUS_NAMES:
                new_status = STATUS_NAMES[value]
            else:
                # Application specific or not yet registered: not a revocation, not a fault of the list.
                log.warning("status list gives a status the wallet does not know", extra={
                    "credential": row.id, "status_value": value})
            if token.ttl:
                next_check = now + dt.timedelta(seconds=max(int(token.ttl), 1))
        except (FetchError, SSIError, KeyError, ValueError) as exc:
            # A list not fetched, or not the issuer's: the status is unknown, not "revoked". The last
            # known one stays and the check comes back sooner.
            log.warning("status check failed", extra={
                "credential": row.id, "reason": type(exc).__name__,
                "code": exc.code if isinstance(exc, SSIError) else None})
            next_check = now + dt.timedelta(seconds=min(300, ctx.settings.status_check_interval))
    if new_status == "revoked":
        # Final (INVALID, said by a list the issuer signed): never checked again, out of the sweep's index.
        next_check = None
    async with ctx.db.session() as session:
        # Compare-and-set on the status read: when two workers check the same credential at once,
        # only the one whose update lands raises the alert.
        result = await session.execute(update(Credential).where(
            Credential.id == row.id, Credential.status == row.status).values(
            status=new_status, status_checked_at=now, next_status_check=next_check)
            .execution_options(synchronize_session=False))
        if new_status != row.status and result.rowcount == 1:
            kind = {"revoked": "revoked", "suspended": "suspended"}.get(new_status, "reinstated")
            verb = {"revoked": "was revoked by its issuer", "suspended": "was suspended by its issuer",
                    "reinstated": "is valid again"}[kind]
            await add_alert(session, row.wallet_id, kind, f"{display_name(details, row)} {verb}", row.id,
                            webhook=ctx.webhook)


def display_name(details: Any, row: Credential) -> str:
    """The credential's display name for an alert, or its type when the stored details have none."""
    display = details.get("display") if isinstance(details, dict) else None
    name = display.get("name") if isinstance(display, dict) else None
    return name if isinstance(name, str) and name else row.vct


async def expiry_alerts(ctx: WalletContext) -> int:
    """Alert once per credential expiring within ``expiry_alert_days``. Each credential is marked in
    its own transaction, by a compare-and-set (of two workers, one alerts); one that cannot be alerted
    (its wallet key does not open) is logged and marked all the same, so that it leaves the head of the
    due list, and the others are alerted regardless."""
    horizon = utcnow() + dt.timedelta(days=ctx.settings.expiry_alert_days)
    async with ctx.db.read_session() as session:
        rows = (await session.execute(expiry_alerts_due(horizon))).scalars().all()
        wallets = {w.id: w for w in (await session.execute(
            select(Wallet).where(Wallet.id.in_({r.wallet_id for r in rows})))).scalars()} if rows else {}
    count = 0
    for row in rows:
        mark = (update(Credential).where(Credential.id == row.id, ~Credential.expiry_alerted)
                .values(expiry_alerted=True).execution_options(synchronize_session=False))
        try:
            details = ctx.vault.data_key(wallets[row.wallet_id]).open("credential", row.id, row.sealed)
            when = row.expires_at.date().isoformat() if row.expires_at else ""
            async with ctx.db.session() as session:
                if (await session.execute(mark)).rowcount != 1:  # type: ignore[attr-defined]
                    continue  # another worker alerted it meanwhile
                await add_alert(session, row.wallet_id, "expiring", f"{display_name(details, row)} expires on {when}",
                                row.id, webhook=ctx.webhook)
        except Exception as exc:  # noqa: BLE001 - one credential must not stop every wallet's alerts
            _row_failed("expiry alert", row.wallet_id, row.id, exc)
            await _push_back(ctx, mark)
            continue
        count += 1
    return count


async def poll_deferred(ctx: WalletContext) -> int:
    """Poll the issuers of pending (deferred) issuances that are due. An offer that cannot be polled
    (its wallet key or its data does not open, an unexpected failure) is logged and polled again
    ``ROW_RETRY`` later; the others are polled regardless. Returns how many were polled."""
    async with ctx.db.read_session() as session:
        rows = (await session.execute(polls_due(utcnow()))).scalars().all()
        wallets = {w.id: w for w in (await session.execute(
            select(Wallet).where(Wallet.id.in_({r.wallet_id for r in rows})))).scalars()} if rows else {}
    for row in rows:
        try:
            await poll_offer(ctx, ctx.vault.data_key(wallets[row.wallet_id]), row.id)
        except Exception as exc:  # noqa: BLE001 - one offer must not stop every wallet's deferred issuances
            _row_failed("deferred poll", row.wallet_id, row.id, exc)
            # Left as it is ('pending', or 'polling' when the failure came after the lease), due later.
            await _push_back(ctx, update(Offer).where(Offer.id == row.id, Offer.state.in_(("pending", "polling")))
                             .values(next_poll_at=utcnow() + ROW_RETRY))
    return len(rows)


def _row_failed(job: str, wallet_id: str, row_id: str, exc: BaseException) -> None:
    """Log a row a job could not handle: its ids and the error's type, never its message (it may quote
    what the row holds); a row that fails is expected, not a fault to trace."""
    log.warning("background job could not handle a row", extra={
        "job": job, "wallet": wallet_id, "row": row_id, "reason": type(exc).__name__})


async def _push_back(ctx: WalletContext, statement: Any) -> None:
    """Run the update that moves a failed row out of the head of its job's due list."""
    with contextlib.suppress(Exception):  # the database itself failing: the next sweep tries again
        async with ctx.db.session() as session:
            await session.execute(statement.execution_options(synchronize_session=False))
