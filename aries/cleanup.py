"""Remove from an agent the finished exchange records its service is done with.

The agents run with ``--preserve-exchange-records``: every exchange record stays in the agent's wallet,
the issuer's with the credential it issued and the verifier's with the presentation it received — claim
values, for ever. Each service removes a record as soon as it is done with it, but that removal is best
effort: an agent that did not answer, or a worker that stopped in between, left the record behind. This
sweep finds the finished records (``done``, ``abandoned``; and ``credential-issued`` ones the holder never
acknowledged, once a day old) the service has settled on its side and removes them; a record the service
has no row for at all is removed once older than :data:`ORPHAN_AGE` (by then no worker can still be
about to adopt it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal

from .client import AdminClient
from .errors import AgentRequestFailed, AriesError

log = logging.getLogger(__name__)

#: Seconds between two cleanups in a worker: the records wait, nothing depends on them going at once.
CLEANUP_EVERY = 600.0
FINISHED_STATES = ("done", "abandoned")
#: Issued, never acknowledged by the holder: the agent keeps the credential there for good unless
#: removed. Settled on our side at once (the issuer counts it issued), removed once :data:`ORPHAN_AGE`
#: old, by when an acknowledgement would have come.
UNACKNOWLEDGED = "credential-issued"
ORPHAN_AGE = dt.timedelta(days=1)
LOOKUP_CHUNK = 500

#: Given the ids of finished agent records: ``(settled, known)`` — the ids the service is done with,
#: and the ids it has a row for at all.
Settled = Callable[[list[str]], Awaitable[tuple[set[str], set[str]]]]


async def _finished(client: AdminClient, protocol: Literal["credential", "presentation"]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for state in (*FINISHED_STATES, UNACKNOWLEDGED) if protocol == "credential" else FINISHED_STATES:
        if protocol == "credential":
            records += [r["cred_ex_record"] for r in await client.cred_records(state=state) if "cred_ex_record" in r]
        else:
            records += await client.pres_records(state=state)
    return records


def _updated(record: dict[str, Any]) -> dt.datetime | None:
    try:
        at = dt.datetime.fromisoformat(str(record.get("updated_at") or record.get("created_at")))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def removable(records: Iterable[dict[str, Any]], id_key: str, settled: set[str], known: set[str],
              now: dt.datetime) -> list[str]:
    """The ids of ``records`` to remove: settled by the service, or unknown to it and old."""
    ids = []
    for record in records:
        record_id = record.get(id_key)
        if not isinstance(record_id, str):
            continue
        old = (at := _updated(record)) is not None and now - at > ORPHAN_AGE
        if record.get("state") == UNACKNOWLEDGED and not old:
            continue  # the holder's acknowledgement may still come
        if record_id in settled or (record_id not in known and old):
            ids.append(record_id)
    return ids


async def remove_settled_records(client: AdminClient, protocol: Literal["credential", "presentation"],
                                 settled: Settled, now: dt.datetime) -> int:
    """Remove the finished ``protocol`` exchange records the service is done with; returns how many.

    Raises :class:`AriesError` when the agent cannot list them (the next round tries again); a record
    that cannot be removed is logged and left for the next round."""
    id_key = "cred_ex_id" if protocol == "credential" else "pres_ex_id"
    records = await _finished(client, protocol)
    if not records:
        return 0
    ids = [r[id_key] for r in records if isinstance(r.get(id_key), str)]
    done: set[str] = set()
    known: set[str] = set()
    for start in range(0, len(ids), LOOKUP_CHUNK):  # an agent that kept records for months lists many
        chunk_done, chunk_known = await settled(ids[start:start + LOOKUP_CHUNK])
        done |= chunk_done
        known |= chunk_known
    removed = 0
    for record_id in removable(records, id_key, done, known, now):
        try:
            if protocol == "credential":
                await client.delete_cred_record(record_id)
            else:
                await client.delete_pres_record(record_id)
        except AgentRequestFailed as exc:
            if exc.status != 404:  # 404: another worker's cleanup removed it first
                log.warning("finished exchange record not removed from the agent",
                            extra={"record_id": record_id, "code": exc.code})
            continue
        except AriesError as exc:
            log.warning("finished exchange record not removed from the agent",
                        extra={"record_id": record_id, "code": exc.code})
            continue
        removed += 1
    if removed:
        log.info("finished exchange records removed from the agent", extra={"protocol": protocol, "count": removed})
    return removed


async def run_periodically(cleanup: Callable[[], Awaitable[int]]) -> None:
    """Run ``cleanup`` every :data:`CLEANUP_EVERY` seconds until cancelled; the first run comes at a
    random point of the first period, so that the workers started together do not all list and remove
    the same records at once."""
    last = time.monotonic() - random.uniform(0, CLEANUP_EVERY)  # noqa: S311 - spreading load, not security
    while True:
        if time.monotonic() - last >= CLEANUP_EVERY:
            last = time.monotonic()
            try:
                await cleanup()
            except Exception as exc:  # noqa: BLE001 - the next round tries again (agent or database back)
                log.error("aries record cleanup failed", extra={"error": type(exc).__name__})
        await asyncio.sleep(1.0)
