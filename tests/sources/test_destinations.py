"""Where the HTTP adapters (REST, Via Oberta) may connect: only through the caller's client, which the
issuer guards with its outbound policy (service_kit.outbound), and a destination that policy refuses
is a configuration error, raised at once, never retried as an outage."""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from issuer.sources import SourceConfigError, SourceDestinationRefused, build_source
from issuer.sources.rest import RestSource
from service_kit.outbound import OutboundPolicy, guarded_transport
from tests.sources.helpers import SUBJECT, context
from viaoberta.client import ViaObertaClient
from viaoberta.credentials import SigningIdentity, generate_identity

pytestmark = pytest.mark.anyio


@functools.cache
def identity(name: str) -> SigningIdentity:
    return generate_identity(name)


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP listener on 127.0.0.1 recording the first line of every connection it accepts."""
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                seen.append(conn.recv(200).split(b"\r\n")[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1], seen
    finally:
        server.close()


def settings(kind: str, port: int) -> dict:
    if kind == "rest":
        return {"kind": "rest", "url": f"http://127.0.0.1:{port}/registry/{{identifier}}", "retries": 3,
                "backoff": 0.01, "timeout": 2, "auth": {"type": "bearer", "token": "s3cret"}}
    return {"kind": "viaoberta", "endpoint": f"http://127.0.0.1:{port}", "product": "ECOT103",
            "signing_key_pem": identity("issuer").key_pem.decode(), "signing_cert_pem": identity("issuer").cert_pem.decode(),
            "platform_certs_pem": [identity("platform").cert_pem.decode()], "retries": 3, "backoff_seconds": 0.01,
            "timeout": 2}


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts the requests handed to the (guarded) transport: one per attempt."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("kind", ["rest", "viaoberta"])
async def test_an_adapter_without_the_callers_client_is_not_built(listener, kind: str) -> None:
    """Before, an adapter built without ``http`` made its own plain client, which reached any address
    (here loopback, which the production policy refuses) whatever the outbound policy said."""
    port, seen = listener
    with pytest.raises(SourceConfigError, match="HTTP client"):
        build_source(settings(kind, port))
    with pytest.raises(TypeError):
        RestSource(url=f"http://127.0.0.1:{port}/r/{{identifier}}")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ViaObertaClient(f"http://127.0.0.1:{port}", signing_key_pem=identity("issuer").key_pem,  # type: ignore[call-arg]
                        signing_cert_pem=identity("issuer").cert_pem, platform_certs_pem=[identity("platform").cert_pem])
    assert seen == []


@pytest.mark.parametrize("kind", ["rest", "viaoberta"])
async def test_a_destination_the_policy_refuses_is_a_configuration_error_asked_once(listener, kind: str) -> None:
    port, seen = listener
    transport = CountingTransport(guarded_transport(OutboundPolicy()))  # production: loopback is internal
    async with httpx.AsyncClient(transport=transport, follow_redirects=False) as http:
        source = build_source(settings(kind, port), http=http)
        with pytest.raises(SourceDestinationRefused) as refused:
            await source.fetch(None, SUBJECT, context())
    assert isinstance(refused.value, SourceConfigError)  # the configuration must change: not an outage
    assert refused.value.code == "source.source_destination_refused"
    assert "127.0.0.1 is an internal address" in refused.value.detail and "registry" not in refused.value.detail
    assert transport.requests == 1, "asked again although no retry can change the policy's answer"
    assert seen == []
