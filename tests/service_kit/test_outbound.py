"""Calls made for others reach only the destinations of the outbound policy (service_kit.outbound):
checked where the connection is made, against a real server on loopback."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import time
import zlib
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI, Response

from service_kit.outbound import (
    IDENTITY,
    OutboundPolicy,
    ResponseBodyRefused,
    guarded_sync_transport,
    guarded_transport,
    read_capped,
    refused_destination,
)
from tests.support.servers import serve


@pytest.fixture(scope="module")
def local() -> Iterator[str]:
    app = FastAPI()

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"reached": "yes"}

    with serve(app) as url:
        yield url


def _get(policy: OutboundPolicy, url: str) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=guarded_transport(policy), timeout=5) as client:
            return await client.get(url)
    return asyncio.run(go())


def test_loopback_is_refused_unless_development(local: str) -> None:
    with pytest.raises(httpx.ConnectError, match="internal address"):
        _get(OutboundPolicy(), local)
    assert _get(OutboundPolicy(allow_loopback=True), local).json() == {"reached": "yes"}


def test_a_name_is_judged_by_the_addresses_it_resolves_to(local: str) -> None:
    by_name = local.replace("127.0.0.1", "localhost")
    with pytest.raises(httpx.ConnectError, match="localhost is an internal address"):
        _get(OutboundPolicy(), by_name)
    assert _get(OutboundPolicy(allow_loopback=True), by_name).status_code == 200


@pytest.mark.parametrize("listed", ["127.0.0.1", "127.0.0.0/8", "LOCALHOST"])
def test_listed_internal_hosts_are_reached(local: str, listed: str) -> None:
    url = local.replace("127.0.0.1", "localhost") if listed == "LOCALHOST" else local
    assert _get(OutboundPolicy((listed,)), url).status_code == 200


@pytest.mark.parametrize("host", ["10.255.255.1", "169.254.169.254", "192.168.1.1", "[::ffff:127.0.0.1]", "[fd00::1]",
                                  "0.0.0.0", "100.64.0.1",
                                  # IPv6 addresses that carry an internal IPv4 one: NAT64, 6to4, IPv4-compatible.
                                  "[64:ff9b::a9fe:a9fe]", "[64:ff9b::a00:5]", "[2002:7f00:1::]", "[::7f00:1]",
                                  "[fec0::1]"])
def test_internal_addresses_are_refused_without_a_connection(host: str) -> None:
    started = time.monotonic()
    with pytest.raises(httpx.ConnectError, match="internal address"):
        _get(OutboundPolicy(), f"http://{host}:9/")
    # 10.255.255.1 blackholes: a connection attempt would wait for the 5 s timeout.
    assert time.monotonic() - started < 2


def test_a_refusal_does_not_tell_the_address_a_name_resolves_to() -> None:
    """Refusals reach tenants and agencies: they must not learn the internal network from them."""
    reason = asyncio.run(OutboundPolicy().check_url("https://localhost/x"))
    assert reason is not None and "internal address" in reason and "127.0.0.1" not in reason


def test_a_public_address_behind_nat64_is_allowed_and_connected_as_is() -> None:
    policy = OutboundPolicy()
    assert policy.address_allowed(ipaddress.ip_address("64:ff9b::808:808"))  # 8.8.8.8
    assert not policy.address_allowed(ipaddress.ip_address("64:ff9b::7f00:1"))



@pytest.mark.parametrize("address", [
    "::ffff:0:127.0.0.1", "::ffff:0:10.0.0.1", "::ffff:0:8.8.8.8",  # SIIT (RFC 2765)
    "64:ff9b:1::7f00:1", "64:ff9b:1::a00:1", "64:ff9b:1:ffff::808:808",  # local-use NAT64 (RFC 8215)
])
def test_translation_prefixes_that_are_never_public_are_refused(address: str) -> None:
    """This Python calls these global: a translator in front of them reaches whatever they carry."""
    assert not OutboundPolicy().address_allowed(ipaddress.ip_address(address))
    assert not OutboundPolicy(allow_loopback=True).address_allowed(ipaddress.ip_address(address))
    assert OutboundPolicy((address,)).address_allowed(ipaddress.ip_address(address))  # listed: the operator's call


@pytest.mark.parametrize("address", ["192.0.0.8", "3fff::1", "3fff:fff:ffff::1", "5f00::1", "5f00:ffff::1"])
def test_special_purpose_blocks_newer_than_this_python_are_refused(address: str) -> None:
    """Not globally reachable per the IANA registries, yet ``is_global`` here says they are."""
    assert not OutboundPolicy().address_allowed(ipaddress.ip_address(address))
    assert OutboundPolicy((address,)).address_allowed(ipaddress.ip_address(address))


def test_a_listed_ipv4_network_covers_its_siit_form() -> None:
    policy = OutboundPolicy(("10.1.0.0/16",))
    assert policy.address_allowed(ipaddress.ip_address("::ffff:0:10.1.2.3"))
    assert not policy.address_allowed(ipaddress.ip_address("::ffff:0:10.2.0.1"))
    # and nothing else moved: the well-known NAT64 prefix of a public address, a public IPv6 address
    assert policy.address_allowed(ipaddress.ip_address("64:ff9b::808:808"))
    assert policy.address_allowed(ipaddress.ip_address("2606:4700::1111"))


def test_the_blocking_transport_is_guarded_too(local: str) -> None:
    with httpx.Client(transport=guarded_sync_transport(OutboundPolicy()), timeout=5) as client, \
            pytest.raises(httpx.ConnectError, match="internal address"):
        client.get(local)
    with httpx.Client(transport=guarded_sync_transport(OutboundPolicy(allow_loopback=True)), timeout=5) as client:
        assert client.get(local).status_code == 200


def test_policy_addresses() -> None:
    policy = OutboundPolicy(("10.1.0.0/16", "registry.intranet"))
    assert policy.address_allowed(ipaddress.ip_address("10.1.2.3"))
    assert not policy.address_allowed(ipaddress.ip_address("10.2.0.1"))
    assert not policy.address_allowed(ipaddress.ip_address("127.0.0.1"))
    assert policy.address_allowed(ipaddress.ip_address("8.8.8.8"))
    assert not policy.address_allowed(ipaddress.ip_address("224.0.0.1"))
    assert policy.host_listed("Registry.Intranet.")
    assert policy.refusal("registry.intranet", []) is None
    assert policy.refusal("nowhere.example", []) == "nowhere.example has no address"


@pytest.mark.parametrize(("url", "dev", "refused"), [
    ("https://8.8.8.8/hook", False, None),
    ("http://8.8.8.8/hook", False, "the URL must use https"),
    ("https://127.0.0.1/hook", False, "internal address"),
    ("http://127.0.0.1:9/hook", True, None),
    ("https://169.254.169.254/latest", True, "internal address"),
    ("https://user:pw@8.8.8.8/", False, "no user information"),
    ("https://8.8.8.8/#x", False, "fragment"),
    ("https://xn--zz.com/hook", False, "cannot be read"),  # a bad IDNA label
    (42, False, "non-empty URL"),
])
def test_registered_destinations(url: object, dev: bool, refused: str | None) -> None:
    reason = asyncio.run(refused_destination(url, OutboundPolicy(allow_loopback=dev), dev_mode=dev))
    assert (reason is None) if refused is None else (reason is not None and refused in reason), reason


def test_each_checked_address_is_tried_in_turn(local: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name with several addresses (IPv6 and IPv4, say) whose first cannot be reached: the next
    checked address is, as an unguarded client would; a refused one among them stops the call."""
    import service_kit.outbound as outbound

    port = int(local.rsplit(":", 1)[1])
    addresses = {"two.test": ["127.0.0.2", "127.0.0.1"], "mixed.test": ["127.0.0.1", "10.0.0.1"]}

    async def resolve(host: str, _port: int) -> list[ipaddress.IPv4Address]:
        return [ipaddress.ip_address(a) for a in addresses[host]]  # type: ignore[misc]

    monkeypatch.setattr(outbound, "_resolve", resolve)
    # Nothing listens on 127.0.0.2: that connection is refused, the second address answers.
    assert _get(OutboundPolicy(allow_loopback=True), f"http://two.test:{port}/").json() == {"reached": "yes"}
    with pytest.raises(httpx.ConnectError, match="internal address"):
        _get(OutboundPolicy(allow_loopback=True), f"http://mixed.test:{port}/")


_PAYLOAD = b'{"record": "' + b"abc" * 1000 + b'"}'


def _encoded(coding: str, data: bytes) -> bytes:
    if coding in ("gzip", "x-gzip"):
        return gzip.compress(data)
    if coding == "deflate":
        return zlib.compress(data)
    if coding == "raw-deflate":
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return packer.compress(data) + packer.flush()
    return data


@pytest.fixture(scope="module")
def encoded() -> Iterator[str]:
    """Answers ``_PAYLOAD`` (or ``n`` zero bytes) in the coding the path names, whatever was asked."""
    app = FastAPI()

    @app.get("/{coding}")
    async def answer(coding: str, n: int | None = None) -> Response:
        data = bytes(n) if n is not None else _PAYLOAD
        header = {"identity": {}, "raw-deflate": {"Content-Encoding": "deflate"}}.get(
            coding, {"Content-Encoding": coding})
        return Response(_encoded(coding, data), headers=header)

    with serve(app) as url:
        yield url


def _read_capped(url: str, max_bytes: int) -> bytes:
    async def go() -> bytes:
        async with httpx.AsyncClient(timeout=5) as client, client.stream("GET", url, headers=IDENTITY) as response:
            return await read_capped(response, max_bytes)
    return asyncio.run(go())


@pytest.mark.parametrize("coding", ["identity", "gzip", "x-gzip", "deflate", "raw-deflate"])
def test_a_bounded_read_decodes_up_to_the_cap_and_no_further(encoded: str, coding: str) -> None:
    assert _read_capped(f"{encoded}/{coding}", len(_PAYLOAD)) == _PAYLOAD
    with pytest.raises(ResponseBodyRefused):
        _read_capped(f"{encoded}/{coding}", len(_PAYLOAD) - 1)
    with pytest.raises(ResponseBodyRefused):  # 32 MiB of zeros: 32 KiB compressed
        _read_capped(f"{encoded}/{coding}?n={32 << 20}", 1 << 20)


def test_a_bounded_read_refuses_a_coding_it_cannot_bound(encoded: str) -> None:
    with pytest.raises(ResponseBodyRefused):
        _read_capped(f"{encoded}/br", 1 << 20)


@pytest.fixture(scope="module")
def damaged() -> Iterator[str]:
    """Answers gzip bodies that are corrupt, cut short, or one byte of deflate."""
    app = FastAPI()
    whole = gzip.compress(_PAYLOAD)
    bodies = {"corrupt": whole[:10] + b"\xff" * 20 + whole[30:], "truncated": whole[: len(whole) // 2],
              "one-byte-deflate": b"x"}

    @app.get("/{name}")
    async def answer(name: str) -> Response:
        coding = "deflate" if name == "one-byte-deflate" else "gzip"
        return Response(bodies[name], headers={"Content-Encoding": coding})

    with serve(app) as url:
        yield url


@pytest.mark.parametrize("name", ["corrupt", "truncated", "one-byte-deflate"])
def test_a_damaged_compressed_body_is_unreadable_not_too_large(damaged: str, name: str) -> None:
    with pytest.raises(ResponseBodyRefused) as refused:
        _read_capped(f"{damaged}/{name}", 1 << 20)
    assert not refused.value.too_large
    with pytest.raises(ResponseBodyRefused) as refused:
        _read_capped(f"{damaged}/corrupt?n=1", 10)  # too large is said so, whatever follows
    assert refused.value.too_large
