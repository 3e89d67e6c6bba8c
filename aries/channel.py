"""The issuer and verifier sides of the channel, on top of :class:`aries.client.AdminClient`.

These are the steps a service performs; the records they return are what the service keeps (thread
ids, exchange ids), never the credential values.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from .client import AdminClient
from .errors import AriesError
from .presentation import ProofRequest


@dataclass(frozen=True)
class Invitation:
    """An out-of-band invitation: its message id (to find the connection later) and its URL form."""

    invi_msg_id: str
    invitation: dict[str, Any]
    invitation_url: str


@dataclass(frozen=True)
class Exchange:
    """An issue-credential or present-proof exchange started by us."""

    record_id: str
    thread_id: str


async def _poll(fetch: Any, done: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AriesError("timeout", f"{what} did not happen within {timeout:.0f}s")
        await asyncio.sleep(0.05)


async def invite(agent: AdminClient, *, alias: str, label: str | None = None) -> Invitation:
    """An invitation bound to one subject (``alias`` is our opaque subject reference, never a name)."""
    answer = await agent.create_invitation(alias=alias, label=label)
    return Invitation(str(answer["invi_msg_id"]), dict(answer["invitation"]), str(answer["invitation_url"]))


async def connection_for(agent: AdminClient, invitation: Invitation, timeout: float = 30.0) -> str:
    """Wait until the wallet has connected through ``invitation``; return the connection id."""
    def active(found: list[dict[str, Any]]) -> bool:
        return any(c.get("state") in ("active", "completed") for c in found)
    found = await _poll(lambda: agent.connections(invitation_msg_id=invitation.invi_msg_id), active, timeout,
                        "the wallet's connection")
    return str(next(c for c in found if c.get("state") in ("active", "completed"))["connection_id"])


async def offer(agent: AdminClient, connection_id: str, credential: dict[str, Any], proof_type: str) -> Exchange:
    """Offer a JSON-LD credential on a connection (issue-credential 2.0, ``ld_proof``)."""
    record = await agent.send_ld_offer(connection_id, credential, proof_type)
    return Exchange(str(record["cred_ex_id"]), str(record["thread_id"]))


async def issued(agent: AdminClient, exchange: Exchange, timeout: float = 30.0) -> str:
    """Wait until the exchange is finished; return its final state (``done``/``credential-issued``/``abandoned``)."""
    record = await _poll(lambda: agent.cred_record(exchange.record_id),
                         lambda r: r["cred_ex_record"]["state"] in ("done", "credential-issued", "abandoned"),
                         timeout, "the issuance")
    return str(record["cred_ex_record"]["state"])


async def request_proof(agent: AdminClient, request: ProofRequest, *, label: str | None = None
                        ) -> tuple[Exchange, Invitation]:
    """A connectionless present-proof 2.0 request wrapped in an out-of-band invitation."""
    record = await agent.create_dif_request(request.presentation_definition, request.challenge, request.domain)
    exchange = Exchange(str(record["pres_ex_id"]), str(record["thread_id"]))
    answer = await agent.create_invitation(handshake=False, label=label,
                                           attachments=[{"id": exchange.record_id, "type": "present-proof"}])
    return exchange, Invitation(str(answer["invi_msg_id"]), dict(answer["invitation"]),
                                str(answer["invitation_url"]))


async def presentation(agent: AdminClient, exchange: Exchange, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the presentation is verified by the agent (``done``) or refused; return the record."""
    return dict(await _poll(lambda: agent.pres_record(exchange.record_id),
                            lambda r: r.get("state") in ("done", "abandoned"), timeout, "the presentation"))
