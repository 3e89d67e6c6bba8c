"""The Via Oberta adapter round trip over real HTTP against the simulated Via Oberta, for each product."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from credential_schemas import load_builtin_types
from issuer.sources import (
    BadSourceAnswer,
    Claims,
    Pending,
    SourceConfigError,
    SourceRefused,
    SourceUnavailable,
    Subject,
    SubjectNotFound,
    build_source,
)
from issuer.sources.viaoberta import select_degree
from sandbox.population import DEMO_EVERYTHING, DEMO_NOT_FOUND, DEMO_PENDING, DEMO_TAX_NEGATIVE
from sandbox.viaoberta_service import ViaObertaSandboxConfig, create_app
from tests.sources.helpers import context
from tests.support.outbound import guarded_client
from tests.support.servers import serve
from viaoberta.credentials import SigningIdentity, generate_identity

pytestmark = pytest.mark.anyio
TODAY = dt.date(2026, 3, 20)
NOW = dt.datetime(2026, 3, 20, 10, 0, tzinfo=dt.UTC)
TYPES = {"ECOT103": "tax-compliance", "TITOLS_UNIVERSITARIS": "university-diploma", "RESIDENT": "padro",
         "VIDA_LABORAL": "working-life"}


@functools.cache
def identity(name: str) -> SigningIdentity:
    return generate_identity(name)


def subject(identifier: str, name: str = "Titular de prova") -> Subject:
    return Subject(identifier, "NIE" if identifier[0] in "XYZ" else "NIF", name)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    config = ViaObertaSandboxConfig(signing_key_pem=identity("platform").key_pem,
                                    signing_cert_pem=identity("platform").cert_pem,
                                    registered_certs_pem=[identity("issuer").cert_pem], latency_seconds=1.0,
                                    today=TODAY)
    with serve(create_app(config), ready_path="/healthz") as url:
        yield url


def source(base_url: str, product: str, *, requester: str = "issuer", http: httpx.AsyncClient | None = None,
           **extra):
    settings = {"kind": "viaoberta", "endpoint": base_url, "product": product,
                "signing_key_pem": identity(requester).key_pem.decode(),
                "signing_cert_pem": identity(requester).cert_pem.decode(),
                "platform_certs_pem": [identity("platform").cert_pem.decode()],
                "timeout": 5, "retries": 1, "backoff_seconds": 0.01}
    settings.update(extra)
    return build_source(settings, http=http or guarded_client())


@pytest.mark.parametrize("product", sorted(TYPES))
async def test_each_product_round_trips_to_valid_claims(base_url: str, product: str) -> None:
    ctype = load_builtin_types()[TYPES[product]]
    ctx = context(request_id="")
    outcome = await source(base_url, product).fetch(ctype, subject(DEMO_EVERYTHING, "Montserrat Puig Ferrer"), ctx)
    assert isinstance(outcome, Claims)
    evidence = outcome.evidence
    assert evidence.product.endswith("/" + product) and evidence.source == "viaoberta"
    assert evidence.request_id and evidence.transmission_id
    assert evidence.purpose == ctx.purpose and evidence.consent == "Si" and "11111111H" in evidence.official
    claims = ctype.map_claims(outcome.record, now=NOW)
    assert ctype.validate_claims(claims) == []
    if product == "ECOT103":
        assert claims["complianceStatus"] == "POSITIVE" and "negativeCause" not in claims
    if product == "RESIDENT":
        assert claims["municipality"] == {"code": "08019", "name": "Barcelona"}
        assert claims["householdSize"] == 2 and claims["age_equal_or_over"] == {"18": True, "65": False}
    if product == "VIDA_LABORAL":
        assert claims["period"]["to"] == TODAY.isoformat() and claims["situations"]


async def test_negative_tax_is_a_credential_not_an_error(base_url: str) -> None:
    ctype = load_builtin_types()["tax-compliance"]
    outcome = await source(base_url, "ECOT103").fetch(ctype, subject(DEMO_TAX_NEGATIVE, "Jordi Vila Soler"), context())
    assert isinstance(outcome, Claims)
    claims = ctype.map_claims(outcome.record, now=NOW)
    assert claims["complianceStatus"] == "NEGATIVE" and claims["negativeCause"]["code"] == "01"
    assert [b["code"] for b in claims["breaches"]] == ["D01", "D02"]


async def test_degrees_pick_the_most_recent_or_the_selected_one(base_url: str) -> None:
    ctype = load_builtin_types()["university-diploma"]
    src = source(base_url, "TITOLS_UNIVERSITARIS")
    latest = await src.fetch(ctype, subject(DEMO_EVERYTHING), context())
    assert latest.record["DatosTitulacion"]["DatosTitulo"]["NumTitulo"] == "2005/004567"
    assert "ListaTitulos" not in latest.record
    chosen = await src.fetch(ctype, subject(DEMO_EVERYTHING), context(selector="2003/081234"))
    assert ctype.map_claims(chosen.record, now=NOW)["degreeType"] == "bachelor"
    with pytest.raises(SubjectNotFound):
        await src.fetch(ctype, subject(DEMO_EVERYTHING), context(selector="1999/000000"))


@pytest.mark.parametrize("product", sorted(TYPES))
async def test_not_found(base_url: str, product: str) -> None:
    with pytest.raises(SubjectNotFound):
        await source(base_url, product).fetch(None, subject(DEMO_NOT_FOUND), context())


async def test_pending_then_poll(base_url: str) -> None:
    ctype = load_builtin_types()["working-life"]
    src = source(base_url, "VIDA_LABORAL")
    who = subject(DEMO_PENDING, "Pere Serra Mas")
    pending = await src.fetch(ctype, who, context())
    assert isinstance(pending, Pending) and pending.retry_after >= 1 and pending.reference
    done = await src.poll(pending.reference, ctype, who, context())
    assert isinstance(done, Claims)
    assert ctype.validate_claims(ctype.map_claims(done.record, now=NOW)) == []


async def test_a_delivered_or_unknown_query_polled_is_refused_not_an_outage(base_url: str) -> None:
    """The sandbox answered such a poll with 0502, which reads as the emitter being down (retry later,
    for ever); its own code (0207) is a final refusal."""
    ctype = load_builtin_types()["working-life"]
    src = source(base_url, "VIDA_LABORAL")
    who = subject(DEMO_PENDING, "Pere Serra Mas")
    pending = await src.fetch(ctype, who, context())
    assert isinstance(await src.poll(pending.reference, ctype, who, context()), Claims)
    for reference in (pending.reference, "UNKNOWN0000000000000000001"):
        with pytest.raises(SourceRefused, match="0207"):
            await src.poll(reference, ctype, who, context())


async def fault_source(base_url: str, fault: str, **extra):
    http = httpx.AsyncClient(headers={"X-Sandbox-Fault": fault})
    return source(base_url, "ECOT103", http=http, **extra), http


async def test_http_500_is_unavailable_after_retries(base_url: str) -> None:
    src, http = await fault_source(base_url, "http500")
    async with http:
        with pytest.raises(SourceUnavailable):
            await src.fetch(None, subject(DEMO_EVERYTHING), context())


async def test_latency_beyond_the_timeout_is_unavailable(base_url: str) -> None:
    src, http = await fault_source(base_url, "latency", timeout=0.3, retries=0)
    async with http:
        with pytest.raises(SourceUnavailable):
            await src.fetch(None, subject(DEMO_EVERYTHING), context())


@pytest.mark.parametrize("fault", ["malformed", "bad_signature", "unsigned"])
async def test_untrustworthy_answers_are_bad_source_answers(base_url: str, fault: str) -> None:
    src, http = await fault_source(base_url, fault)
    async with http:
        with pytest.raises(BadSourceAnswer):
            await src.fetch(None, subject(DEMO_EVERYTHING), context())


async def test_unregistered_requester_is_refused(base_url: str) -> None:
    with pytest.raises(SourceRefused):
        await source(base_url, "ECOT103", requester="stranger").fetch(None, subject(DEMO_EVERYTHING), context())


async def test_unreachable_platform_is_unavailable() -> None:
    from tests.support.servers import free_port

    with pytest.raises(SourceUnavailable):
        await source(f"http://127.0.0.1:{free_port()}", "ECOT103").fetch(None, subject(DEMO_EVERYTHING), context())


def test_context_requires_purpose_consent_and_official() -> None:
    with pytest.raises(SourceRefused):
        context(consent="Maybe")
    with pytest.raises(SourceRefused):
        context(purpose=" ")
    with pytest.raises(SourceRefused):
        replace(context(), official_nif="")


def test_bad_viaoberta_configuration_is_refused(base_url: str) -> None:
    with pytest.raises(SourceConfigError):
        source(base_url, "NOPE")
    with pytest.raises(SourceConfigError):
        source(base_url, "RESIDENT", specific={"Consulta.Unknown": "x"})
    with pytest.raises(SourceConfigError):
        source(base_url, "ECOT103", platform_certs_pem=[])
    with pytest.raises(SourceConfigError):
        build_source({"kind": "viaoberta", "endpoint": base_url, "product": "ECOT103"}, http=guarded_client())
    with pytest.raises(SourceConfigError):
        source("ftp://x", "ECOT103")


def test_select_degree_refuses_shapes_it_cannot_use() -> None:
    with pytest.raises(BadSourceAnswer):
        select_degree({"ListaTitulos": "x"}, None)
    with pytest.raises(SubjectNotFound):
        select_degree({"ListaTitulos": {"DatosTitulacion": []}}, None)
    single = select_degree({"ListaTitulos": {"DatosTitulacion": {"DatosTitulo": {"NumTitulo": "1"}}}}, None)
    assert single["DatosTitulacion"]["DatosTitulo"]["NumTitulo"] == "1"
