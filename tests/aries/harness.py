"""Test harness of the Aries channel: a small controller app and the citizen's wallet agent's steps.

The controller plays the part of the issuer/verifier service that controls the issuer agent: it serves
the JSON-LD contexts and the signed status list at their stable URLs, and receives the agent's webhooks
through :mod:`aries.webhooks` (authenticated, de-duplicated by event key). The second agent is the
citizen's Aries wallet; the steps a wallet's user would approve are spelled out in :class:`Wallet`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from aries import webhooks
from aries.client import BBS, AdminClient
from aries.errors import WebhookRefused
from aries.jsonld import contexts_document, status_context_url
from aries.status import MIN_ENTRIES, set_bit, sign_list, status_list_credential
from credential_schemas import CredentialType


class Controller:
    """State of the controlling service (what the real services keep in their database)."""

    def __init__(self, types: list[CredentialType], webhook_key: str) -> None:
        self.types = types
        self.webhook_key = webhook_key
        self.base_url = ""
        self.contexts: dict[str, Any] = {}
        self.events: dict[str, webhooks.WebhookEvent] = {}
        self.deliveries = 0
        self.refused = 0
        self.status_lists: dict[str, dict[str, Any]] = {}
        self.bits: dict[str, bytearray] = {}

    def bind(self, base_url: str) -> None:
        self.base_url = base_url
        self.contexts = contexts_document(self.types, base_url)

    def list_url(self, list_id: str) -> str:
        return f"{self.base_url}/v1/aries/status/{list_id}"

    async def publish_list(self, agent: AdminClient, issuer_did: str, list_id: str,
                           revoked: tuple[int, ...] = ()) -> None:
        bits = self.bits.setdefault(list_id, bytearray(MIN_ENTRIES // 8))
        for index in revoked:
            set_bit(bits, index, True)
        unsigned = status_list_credential(
            list_url=self.list_url(list_id), issuer_did=issuer_did, bits=bytes(bits),
            context_url=status_context_url(self.base_url),
            issued_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            suite_context="https://w3id.org/security/bbs/v1")
        self.status_lists[list_id] = await sign_list(agent, unsigned, BBS)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/aries/contexts/{name}/{version}")
        async def context(name: str, version: str) -> JSONResponse:
            url = f"{self.base_url}/v1/aries/contexts/{name}/{version}"
            if url not in self.contexts:
                return JSONResponse({"error": "not_found"}, status_code=404)
            return JSONResponse(self.contexts[url], media_type="application/ld+json")

        @app.get("/v1/aries/status/{list_id}")
        async def status_list(list_id: str) -> JSONResponse:
            if list_id not in self.status_lists:
                return JSONResponse({"error": "not_found"}, status_code=404)
            return JSONResponse(self.status_lists[list_id])

        @app.post("/webhooks/topic/{topic}/")
        async def webhook(topic: str, request: Request) -> JSONResponse:
            self.deliveries += 1
            try:
                event = webhooks.receive(request.headers, topic, await request.body(), self.webhook_key)
            except WebhookRefused as exc:
                self.refused += 1
                status = 401 if exc.code == "aries.webhook_unauthorized" else 400
                return JSONResponse({"error": exc.code, "error_description": exc.detail}, status_code=status)
            self.events.setdefault(event.key, event)
            return JSONResponse({})

        return app


class Ended:
    """Watches an async method of a class (a service's, running in its server thread): the arguments of
    each call that has ended, returned or raised. A test that asserts some work did *not* do something
    first waits here for that work to have run, instead of sleeping for a time hoped to be long enough."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> None:
        real = getattr(owner, name)
        self.calls: list[tuple[Any, ...]] = []
        self._changed = threading.Condition()

        async def watched(this: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await real(this, *args, **kwargs)
            finally:
                with self._changed:
                    self.calls.append(args)
                    self._changed.notify_all()

        monkeypatch.setattr(owner, name, watched)

    def wait(self, match: Callable[..., bool], timeout: float = 30.0) -> None:
        """Return once a call whose positional arguments satisfy ``match`` has ended (blocks the thread:
        from a coroutine, ``await asyncio.to_thread(ended.wait, ...)``)."""
        with self._changed:
            if not self._changed.wait_for(lambda: any(match(*args) for args in self.calls), timeout):
                raise TimeoutError(f"no matching call ended in {timeout} s ({len(self.calls)} others did)")


async def wait_for(fetch: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float = 20.0) -> Any:
    """Poll ``fetch`` until ``done`` holds (DIDComm is asynchronous between the two agents)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("state not reached in time")
        await asyncio.sleep(0.05)


class Wallet:
    """The citizen's Aries wallet (a real ACA-Py agent) and what its user does."""

    def __init__(self, client: AdminClient, holder_did: str) -> None:
        self.client = client
        self.holder_did = holder_did

    async def accept_credential(self, invitation: dict[str, Any], offer_thread: Callable[[], Awaitable[str]]) -> str:
        """Accept the invitation, then request the offered credential with the BBS+ holder DID."""
        await self.client.receive_invitation(invitation)
        thread_id = await offer_thread()
        records = await wait_for(lambda: self.client.cred_records(thread_id=thread_id),
                                 lambda r: bool(r) and r[0]["cred_ex_record"]["state"] == "offer-received")
        cred_ex_id = records[0]["cred_ex_record"]["cred_ex_id"]
        await self.client.send_cred_request(cred_ex_id, self.holder_did)
        done = await wait_for(lambda: self.client.cred_record(cred_ex_id),
                              lambda r: r["cred_ex_record"]["state"] in ("done", "abandoned"))
        return str(done["cred_ex_record"]["state"])

    async def answer_proof(self, invitation: dict[str, Any], thread_id: str, credential_id: str) -> None:
        """Receive the request and present the credential whose id is ``credential_id``."""
        await self.client.receive_invitation(invitation)
        records = await wait_for(lambda: self.client.pres_records(thread_id=thread_id),
                                 lambda r: bool(r) and r[0]["state"] == "request-received")
        pres_ex_id = records[0]["pres_ex_id"]
        matching = await self.client.matching_credentials(pres_ex_id)
        chosen = [m["record_id"] for m in matching if m.get("id") == credential_id]
        assert chosen, "the credential to present is not among the matching ones"
        descriptor = records[0]["by_format"]["pres_request"]["dif"]["presentation_definition"]["input_descriptors"][0]
        await self.client.send_presentation(pres_ex_id, {descriptor["id"]: chosen[:1]})
