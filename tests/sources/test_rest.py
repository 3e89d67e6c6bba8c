"""The REST/JSON adapter against a real registry served over loopback HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import tracemalloc
import zlib
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from credential_schemas import load_builtin_types
from issuer.sources import (
    BadSourceAnswer,
    Claims,
    SourceConfigError,
    SourceRefused,
    SourceUnavailable,
    SubjectNotFound,
    build_source,
)
from issuer.sources.rest import MAX_ANSWER_BYTES, RestSource
from tests.sources.helpers import SUBJECT, context
from tests.support.outbound import guarded_client
from tests.support.servers import serve

pytestmark = pytest.mark.anyio
TOKEN = "registry-token"
DEGREE = {"degree": {"title": "Grau en Física", "ruct": "2500100", "kind": "G", "university": "Universitat de Girona",
                     "finished": "2020-06-30", "awarded": "2020-10-01", "country": "es", "number": "2020/1"}}
FIELDS = {
    "DatosTitulacion.DatosTitulo.NombreCarrera": "degree.title",
    "DatosTitulacion.DatosTitulo.CodTitulacion": "degree.ruct",
    "DatosTitulacion.DatosTitulo.CodTipoTitulo": "degree.kind",
    "DatosTitulacion.DatosCentro.Universidad": "degree.university",
    "DatosTitulacion.DatosTitulo.FechaFinalizacion": "degree.finished",
    "DatosTitulacion.DatosTitulo.FechaExpedicion": "degree.awarded",
    "DatosTitulacion.DatosTitulo.PaisExpedicion": "degree.country",
    "DatosTitulacion.DatosTitulo.NumTitulo": "degree.number",
}


def _gzip_bomb(inflated: int) -> bytes:
    """A gzip body of zeros: ~1/1000 of ``inflated`` on the wire."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    return b"".join([*(packer.compress(block) for _ in range(inflated >> 20)), packer.flush()])


BOMB = _gzip_bomb(64 << 20)


def registry() -> FastAPI:
    app = FastAPI()
    app.state.calls = {}
    app.state.request_ids = []
    app.state.encodings = []

    def count(key: str) -> int:
        app.state.calls[key] = app.state.calls.get(key, 0) + 1
        return app.state.calls[key]

    @app.get("/degrees/{identifier}")
    async def degrees(identifier: str, request: Request):
        app.state.request_ids.append(request.headers.get("x-request-id"))
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"error": "unauthorised"}, status_code=401)
        if identifier != "12345678Z":
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(DEGREE, headers={"X-Transmission-Id": "TX-1"})

    @app.get("/flaky/{identifier}")
    async def flaky(identifier: str):
        if count("flaky") < 3:
            return JSONResponse({}, status_code=503)
        return DEGREE

    @app.get("/down/{identifier}")
    async def down(identifier: str):
        count("down")
        return JSONResponse({}, status_code=500)

    @app.get("/busy/{identifier}")
    async def busy(identifier: str):
        count("busy")
        return JSONResponse({}, status_code=503, headers={"Retry-After": "120"})

    @app.get("/forbidden/{identifier}")
    async def forbidden(identifier: str):
        count("forbidden")
        return JSONResponse({}, status_code=403)

    @app.get("/slow/{identifier}")
    async def slow(identifier: str):
        await asyncio.sleep(1.0)
        return DEGREE

    @app.get("/text/{identifier}")
    async def text(identifier: str):
        return PlainTextResponse("not json")

    @app.get("/list/{identifier}")
    async def as_list(identifier: str):
        return [1, 2]

    @app.get("/dupe/{identifier}")
    async def dupe(identifier: str):
        return PlainTextResponse('{"a": 1, "a": 2}', media_type="application/json")

    @app.post("/lookup/{identifier}")
    async def lookup(identifier: str, request: Request):
        body = await request.json()
        return {"echo": body["identifier"], **DEGREE}

    @app.get("/gzip/{identifier}")
    async def gzipped(identifier: str, request: Request):
        app.state.encodings.append(request.headers.get("accept-encoding"))
        return Response(gzip.compress(json.dumps(DEGREE).encode()), media_type="application/json",
                        headers={"Content-Encoding": "gzip"})

    @app.get("/bomb/{identifier}")
    async def bomb(identifier: str, request: Request):
        app.state.encodings.append(request.headers.get("accept-encoding"))
        return Response(BOMB, media_type="application/json", headers={"Content-Encoding": "gzip"})

    @app.get("/just-too-big/{identifier}")
    async def just_too_big(identifier: str):
        record = json.dumps({"padding": "x" * (MAX_ANSWER_BYTES - 13)}).encode()  # one byte over
        return Response(gzip.compress(record), media_type="application/json", headers={"Content-Encoding": "gzip"})

    @app.get("/odd-retry-after/{identifier}")
    async def odd_retry_after(identifier: str):
        return JSONResponse({}, status_code=503, headers={"Retry-After": "\u00b2"})

    @app.get("/echo-key/{identifier}")
    async def echo_key(identifier: str, request: Request):
        return {"key": request.headers.get("x-api-key"), "authorization": request.headers.get("authorization")}

    @app.get("/basic/{identifier}")
    async def basic(identifier: str, request: Request):
        if request.headers.get("authorization") != "Basic dXNlcjpwYXNz":
            return JSONResponse({}, status_code=401)
        return {"identifier": identifier}

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FastAPI]]:
    app = registry()
    with serve(app) as url:
        yield url, app


def source(url: str, path: str, **settings) -> RestSource:
    base = {"kind": "rest", "url": f"{url}/{path}/{{identifier}}", "auth": {"type": "bearer", "token": TOKEN},
            "retries": 2, "backoff": 0.01, "timeout": 2, "product": "degrees-registry"}
    base.update(settings)
    return build_source(base, http=guarded_client())


async def test_rest_round_trip_maps_to_a_valid_diploma(server) -> None:
    url, app = server
    diploma = load_builtin_types()["university-diploma"]
    outcome = await source(url, "degrees", fields=FIELDS).fetch(diploma, SUBJECT, context())
    assert isinstance(outcome, Claims)
    assert outcome.evidence.request_id == "REQ-0001" and outcome.evidence.transmission_id == "TX-1"
    assert outcome.evidence.product == "degrees-registry" and outcome.evidence.source == "rest"
    assert "REQ-0001" in app.state.request_ids
    claims = diploma.map_claims(outcome.record, now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert claims["title"] == "Grau en Física" and claims["countryOfAward"] == "ES"
    assert claims["personalIdentifier"] == "12345678Z" and claims["eqfLevel"] == 6
    assert diploma.validate_claims(claims) == []


async def test_without_fields_the_answer_is_the_record(server) -> None:
    url, _ = server
    outcome = await source(url, "degrees").fetch(None, SUBJECT, context())
    assert outcome.record["degree"]["ruct"] == "2500100" and outcome.record["subject"]["identifier"] == "12345678Z"


async def test_unknown_subject_is_not_found(server) -> None:
    url, _ = server
    from issuer.sources import Subject

    with pytest.raises(SubjectNotFound):
        await source(url, "degrees").fetch(None, Subject("00000000T"), context())


async def test_identifier_is_url_encoded_into_the_template(server) -> None:
    url, _ = server
    from issuer.sources import Subject

    with pytest.raises(SubjectNotFound):  # '/' must not create a new path segment
        await source(url, "degrees").fetch(None, Subject("12345678Z/../x"), context())


async def test_transient_errors_are_retried_then_succeed(server) -> None:
    url, app = server
    outcome = await source(url, "flaky").fetch(None, SUBJECT, context())
    assert isinstance(outcome, Claims) and app.state.calls["flaky"] == 3


async def test_persistent_5xx_becomes_unavailable_after_bounded_retries(server) -> None:
    url, app = server
    with pytest.raises(SourceUnavailable) as info:
        await source(url, "down", retries=1).fetch(None, SUBJECT, context())
    assert app.state.calls["down"] == 2 and info.value.retry_after is None


async def test_a_retry_after_longer_than_the_timeout_ends_retries_and_is_reported(server) -> None:
    url, app = server
    with pytest.raises(SourceUnavailable) as info:
        await source(url, "busy", retries=3).fetch(None, SUBJECT, context())
    assert app.state.calls["busy"] == 1 and info.value.retry_after == 120


async def test_client_errors_are_refused_without_retry(server) -> None:
    url, app = server
    with pytest.raises(SourceRefused):
        await source(url, "forbidden").fetch(None, SUBJECT, context())
    assert app.state.calls["forbidden"] == 1
    with pytest.raises(SourceRefused):
        await source(url, "degrees", auth={"type": "bearer", "token": "wrong"}).fetch(None, SUBJECT, context())


async def test_timeout_is_unavailable(server) -> None:
    url, _ = server
    with pytest.raises(SourceUnavailable):
        await source(url, "slow", timeout=0.2, retries=1).fetch(None, SUBJECT, context())


async def test_unreachable_registry_is_unavailable() -> None:
    from tests.support.servers import free_port

    src = build_source({"kind": "rest", "url": f"http://127.0.0.1:{free_port()}/x/{{identifier}}",
                        "retries": 1, "backoff": 0.01}, http=guarded_client())
    with pytest.raises(SourceUnavailable):
        await src.fetch(None, SUBJECT, context())


@pytest.mark.parametrize("path", ["text", "list", "dupe"])
async def test_bad_answers_are_refused(server, path: str) -> None:
    url, _ = server
    with pytest.raises(BadSourceAnswer):
        await source(url, path).fetch(None, SUBJECT, context())


async def test_post_and_basic_auth(server) -> None:
    url, _ = server
    outcome = await source(url, "lookup", method="POST").fetch(None, SUBJECT, context())
    assert outcome.record["echo"] == "12345678Z"
    outcome = await source(url, "basic", auth={"type": "basic", "username": "user", "password": "pass"}).fetch(
        None, SUBJECT, context())
    assert outcome.record["identifier"] == "12345678Z"


async def test_rest_has_nothing_to_poll(server) -> None:
    url, _ = server
    with pytest.raises(SourceRefused):
        await source(url, "degrees").poll("ref", None, SUBJECT, context())


@pytest.mark.parametrize("settings", [
    {"url": "http://x/no-placeholder"},
    {"url": "ftp://x/{identifier}"},
    {"url": "http://x/{identifier}", "method": "DELETE"},
    {"url": "http://x/{identifier}", "retries": 50},
    {"url": "http://x/{identifier}", "timeout": 0},
    {"url": "http://x/{identifier}", "timeout": True},
    {"url": "http://x/{identifier}", "timeout": float("inf")},
    {"url": "http://x/{identifier}", "auth": {"type": "magic"}},
    {"url": "http://x/{identifier}", "fields": {"a": 3}},
    {"url": "http://x/{identifier}", "fields": {"a..b": "x"}},
    {"url": "http://x/{identifier}", "colour": "blue"},
    {},
])
def test_bad_rest_configuration_is_refused(settings: dict) -> None:
    with pytest.raises(SourceConfigError):
        build_source({"kind": "rest", **settings}, http=guarded_client())


@pytest.mark.parametrize("settings", [
    # Before, each was accepted, and every query then failed: a UnicodeEncodeError (a 500 at the
    # credential endpoint), or an h11 protocol error taken for an outage (a 503 for ever).
    {"headers": {"X-Key": "clau-\u20ac"}},
    {"headers": {"X-Key": "a\r\nX-Evil: 1"}},
    {"headers": {"X-Key": "a\tb"}},
    {"headers": {"X-Key": "a\x00b"}},
    {"headers": {"Cl\u00e9": "v"}},
    {"headers": {"X Key": "v"}},
    {"headers": {"X-Key:": "v"}},
    {"headers": {"": "v"}},
    {"headers": ["X-Key", "v"]},
    {"auth": {"type": "bearer", "token": "t\u00e9"}},
    {"auth": {"type": "bearer", "token": "tok\r\nX-Evil: 1"}},
])
def test_headers_and_tokens_that_http_cannot_carry_are_refused_when_configured(settings: dict) -> None:
    with pytest.raises(SourceConfigError) as info:
        build_source({"kind": "rest", "url": "http://x/{identifier}", **settings}, http=guarded_client())
    # The message never quotes a value (it may be a secret).
    assert "\u20ac" not in info.value.detail and "Evil" not in info.value.detail and "t\u00e9" not in info.value.detail


async def test_printable_ascii_headers_and_tokens_reach_the_registry(server) -> None:
    url, _ = server
    token = "A-z0.9_~+/= !#$%&'()*,:;<>?@[]^`{|}\""
    outcome = await source(url, "echo-key", headers={"X-Api-Key": "k3y with spaces ~!"},
                           auth={"type": "bearer", "token": token}).fetch(None, SUBJECT, context())
    assert (outcome.record["key"], outcome.record["authorization"]) == ("k3y with spaces ~!", f"Bearer {token}")


async def test_a_compressed_answer_is_inflated_only_up_to_the_cap(server) -> None:
    """A registry answering 200 with a gzip of 64 MiB of zeros (64 KiB sent) is refused without the
    source ever holding more than the cap; a registry that compresses anyway is still read."""
    url, app = server
    tracemalloc.start()
    try:
        with pytest.raises(BadSourceAnswer):
            await source(url, "bomb", retries=0).fetch(None, SUBJECT, context())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MAX_ANSWER_BYTES, f"{peak >> 20} MiB allocated for one answer"
    with pytest.raises(BadSourceAnswer):
        await source(url, "just-too-big", retries=0).fetch(None, SUBJECT, context())
    outcome = await source(url, "gzip").fetch(None, SUBJECT, context())
    assert outcome.record["degree"]["ruct"] == "2500100"
    assert app.state.encodings and set(app.state.encodings) == {"identity"}


async def test_an_odd_retry_after_is_ignored(server) -> None:
    url, _ = server
    with pytest.raises(SourceUnavailable) as info:
        await source(url, "odd-retry-after", retries=1).fetch(None, SUBJECT, context())
    assert info.value.retry_after is None
