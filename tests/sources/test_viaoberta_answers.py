"""The Via Oberta adapter against a scripted platform on loopback: signed answers Cartera must refuse.

The platform here is a small ASGI app that parses each signed ``Peticion`` and answers with a
``Respuesta`` the test chooses, signed with a real platform key, so that the adapter sees exactly
what a misbehaving (but trusted) emitter would send.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from issuer.sources import (
    BadSourceAnswer,
    Claims,
    SourceConfigError,
    SourceRefused,
    SourceUnavailable,
    Subject,
    build_source,
)
from tests.sources.helpers import SUBJECT, context
from tests.support.outbound import guarded_client
from tests.support.servers import serve
from viaoberta.credentials import SigningIdentity, generate_identity
from viaoberta.messages import IncomingPeticion, build_fault, build_respuesta, parse_peticion
from viaoberta.products import PADRO, TAX, WORKING_LIFE, Product, get_product
from viaoberta.wssecurity import envelope_body, sign_envelope, unsigned_envelope
from viaoberta.xmlsafe import parse_xml

pytestmark = pytest.mark.anyio

#: (incoming request) -> (HTTP status, signed body)
Script = Callable[[IncomingPeticion], tuple[int, bytes]]


@functools.cache
def identity(name: str) -> SigningIdentity:
    return generate_identity(name)


def signed_answer(incoming: IncomingPeticion, especificos: dict[str, Any], *, product: Product | None = None,
                  codigo: str = "0003", genericos: dict[str, Any] | None = None) -> bytes:
    """A ``Respuesta`` to ``incoming`` echoing its ``DatosGenericos`` unless told otherwise, signed."""
    product = product or get_product(incoming.codigo_certificado)
    assert product is not None
    echoed = copy.deepcopy(genericos if genericos is not None else incoming.genericos)
    echoed.setdefault("Transmision", {})["IdTransmision"] = "T0001"
    content = build_respuesta(variant=incoming.variant, request_id=incoming.request_id, product=product,
                              codigo_estado=codigo, genericos=echoed if codigo == "0003" else None,
                              especificos=especificos)
    return sign_envelope(content, identity("platform").key_pem, identity("platform").cert_pem)


class ScriptedPlatform:
    def __init__(self) -> None:
        self.script: Script | None = None

        async def handle(request: Request) -> Response:
            incoming = parse_peticion(envelope_body(parse_xml(await request.body())))
            assert self.script is not None
            status, body = self.script(incoming)
            return Response(body, status_code=status, media_type="text/xml; charset=utf-8")

        self.app = Starlette(routes=[Route("/siri-proxy/services/Sincron", handle, methods=["POST"]),
                                     Route("/siri-proxy/services/AsincronResposta", handle, methods=["POST"]),
                                     Route("/healthz", lambda _: Response("ok"))])


@pytest.fixture(scope="module")
def platform() -> Iterator[tuple[ScriptedPlatform, str]]:
    scripted = ScriptedPlatform()
    with serve(scripted.app, ready_path="/healthz") as url:
        yield scripted, url


def source(url: str, product: str, **extra: Any):
    settings = {"kind": "viaoberta", "endpoint": url, "product": product,
                "signing_key_pem": identity("issuer").key_pem.decode(),
                "signing_cert_pem": identity("issuer").cert_pem.decode(),
                "platform_certs_pem": [identity("platform").cert_pem.decode()],
                "timeout": 5, "retries": 0, "backoff_seconds": 0.01}
    settings.update(extra)
    return build_source(settings, http=guarded_client())


def padro_data(**personal: str) -> dict[str, Any]:
    data = copy.deepcopy({k: (dict(v) if isinstance(v, dict) else v) for k, v in PADRO.example.items()})
    volante = copy.deepcopy(dict(data["VolanteEmpadronamiento"]))
    volante["DatosPersonales"] = {**volante["DatosPersonales"], "Documentacion": SUBJECT.identifier, **personal}
    data["VolanteEmpadronamiento"] = volante
    return data


async def test_padro_answer_about_the_subject_is_accepted(platform: tuple[ScriptedPlatform, str]) -> None:
    scripted, url = platform
    scripted.script = lambda incoming: (200, signed_answer(incoming, padro_data()))
    outcome = await source(url, "RESIDENT").fetch(None, SUBJECT, context())
    assert isinstance(outcome, Claims)


@pytest.mark.parametrize("personal", [{"Documentacion": "87654321X", "Nombre": "Other"}, {"Documentacion": ""}])
async def test_padro_personal_data_of_another_person_is_refused(platform: tuple[ScriptedPlatform, str],
                                                                personal: dict[str, str]) -> None:
    # Titular (copied by the emitter from our request) is right; the data the claims come from is not.
    scripted, url = platform
    scripted.script = lambda incoming: (200, signed_answer(incoming, padro_data(**personal)))
    with pytest.raises(BadSourceAnswer):
        await source(url, "RESIDENT").fetch(None, SUBJECT, context())


async def test_an_identifier_of_someone_else_anywhere_in_the_data_is_refused(
        platform: tuple[ScriptedPlatform, str]) -> None:
    scripted, url = platform
    data = {"Retorno": {"Estado": {"CodigoEstado": "00", "LiteralError": ""}},
            "Certificado": {"Resultado": "POSITIVO", "ReferenciaAEAT": "R1", "FechaEmision": "20260315",
                            "Titular": {"Documentacion": "87654321X"}}}
    scripted.script = lambda incoming: (200, signed_answer(incoming, data, product=TAX))
    with pytest.raises(BadSourceAnswer):
        await source(url, "ECOT103").fetch(None, SUBJECT, context())


def tax_data(retorno: str = "00") -> dict[str, Any]:
    return {"Retorno": {"Estado": {"CodigoEstado": retorno, "LiteralError": ""}},
            "Certificado": {"Resultado": "POSITIVO", "ReferenciaAEAT": "R1", "FechaEmision": "20260315"}}


async def test_an_answer_for_another_product_is_refused(platform: tuple[ScriptedPlatform, str]) -> None:
    # Asked ECOT103; a signed answer naming VIDA_LABORAL but carrying a POSITIVO tax certificate.
    scripted, url = platform
    data = {**tax_data(), "VidaLaboral": {}}
    scripted.script = lambda incoming: (200, signed_answer(incoming, data, product=WORKING_LIFE))
    with pytest.raises(BadSourceAnswer):
        await source(url, "ECOT103").fetch(None, SUBJECT, context())


async def test_a_transmission_for_another_product_is_refused(platform: tuple[ScriptedPlatform, str]) -> None:
    scripted, url = platform

    def script(incoming: IncomingPeticion) -> tuple[int, bytes]:
        genericos = copy.deepcopy(incoming.genericos)
        genericos["Transmision"]["CodigoCertificado"] = "VIDA_LABORAL"
        return 200, signed_answer(incoming, tax_data(), genericos=genericos)

    scripted.script = script
    with pytest.raises(BadSourceAnswer):
        await source(url, "ECOT103").fetch(None, SUBJECT, context())


async def test_a_registry_error_code_with_data_is_no_credential(platform: tuple[ScriptedPlatform, str]) -> None:
    scripted, url = platform
    scripted.script = lambda incoming: (200, signed_answer(incoming, tax_data("99")))
    with pytest.raises(SourceRefused):
        await source(url, "ECOT103").fetch(None, SUBJECT, context())
    scripted.script = lambda incoming: (200, signed_answer(incoming, tax_data("00")))
    assert isinstance(await source(url, "ECOT103").fetch(None, SUBJECT, context()), Claims)


async def test_a_subject_name_xml_cannot_carry_is_refused(platform: tuple[ScriptedPlatform, str]) -> None:
    scripted, url = platform
    scripted.script = lambda incoming: (200, signed_answer(incoming, tax_data()))
    for name in ("Anna\x0bPuig", "Anna \ud800"):
        with pytest.raises(SourceRefused):
            await source(url, "ECOT103").fetch(None, Subject(SUBJECT.identifier, "NIF", name), context())


@pytest.mark.parametrize("purpose", ["Emissi\x01o", "Anna \ud800"])
def test_a_context_xml_cannot_carry_is_refused(purpose: str) -> None:
    with pytest.raises(SourceRefused):
        context(purpose=purpose)


@pytest.mark.parametrize("setting", [{"timeout": "abc"}, {"timeout": -5}, {"timeout": [1]},
                                     {"backoff_seconds": "x"}, {"signing_key_pem": "cl\u00e9"},
                                     {"platform_certs_pem": ["cl\u00e9"]}, {"signing_key_pem": "not a key"},
                                     {"specific": {"Consulta.CodigoMunicipio": 8019}},
                                     {"specific": {"Consulta.CodigoMunicipio": "08\x00019"}}])
def test_settings_are_checked_at_configuration_time(setting: dict[str, Any]) -> None:
    with pytest.raises(SourceConfigError):
        source("https://viaoberta.test", "RESIDENT", **setting)


@pytest.mark.parametrize(("path", "value"), [(("Solicitante", "Finalidad"), "Una altra finalitat"),
                                             (("Solicitante", "Consentimiento"), "Ley"),
                                             (("Solicitante", "Funcionario", "NifFuncionario"), "22222222J"),
                                             (("Solicitante", "IdentificadorSolicitante"), "S0000000X")])
async def test_an_answer_echoing_another_query_is_refused(platform: tuple[ScriptedPlatform, str],
                                                          path: tuple[str, ...], value: str) -> None:
    # The evidence kept is what was sent; an echo that differs means the answer is not for this query.
    scripted, url = platform

    def script(incoming: IncomingPeticion) -> tuple[int, bytes]:
        genericos = copy.deepcopy(incoming.genericos)
        node = genericos
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        return 200, signed_answer(incoming, tax_data(), genericos=genericos)

    scripted.script = script
    with pytest.raises(BadSourceAnswer):
        await source(url, "ECOT103").fetch(None, SUBJECT, context())
    scripted.script = lambda incoming: (200, signed_answer(incoming, tax_data()))
    outcome = await source(url, "ECOT103").fetch(None, SUBJECT, context())
    sent = context()
    assert isinstance(outcome, Claims)
    assert (outcome.evidence.purpose, outcome.evidence.consent, outcome.evidence.procedure) == (
        sent.purpose, sent.consent, sent.procedure)
    assert outcome.evidence.official == f"{sent.official_name} ({sent.official_nif})"


async def test_outages_are_unavailable_not_refusals(platform: tuple[ScriptedPlatform, str]) -> None:
    scripted, url = platform
    cases: list[Script] = [
        # The emitter is down (signed fault 0502): retry later, not a final denial.
        lambda incoming: (500, platform_fault("0502", incoming.request_id)),
        # An unsigned fault: anyone on the path could have written it, so it refuses nothing for good.
        lambda incoming: (500, unsigned_envelope(build_fault("0301", "No autorizado", request_id=incoming.request_id))),
        # A genuine signed refusal of another query (captured, replayed), or one naming no query: not this
        # query's refusal, so not final either.
        lambda incoming: (500, platform_fault("0301", "OLDQUERY123")),
        lambda incoming: (500, platform_fault("0301", "")),
        # Rate limited.
        lambda incoming: (429, b""),
    ]
    for script in cases:
        scripted.script = script
        with pytest.raises(SourceUnavailable):
            await source(url, "ECOT103").fetch(None, SUBJECT, context())
    # A signed refusal of this very query is still final.
    scripted.script = lambda incoming: (500, platform_fault("0301", incoming.request_id))
    with pytest.raises(SourceRefused):
        await source(url, "ECOT103").fetch(None, SUBJECT, context())


def platform_fault(code: str, request_id: str) -> bytes:
    """A SOAP fault signed by the platform, about the query ``request_id`` (its ``IdPeticion``)."""
    return sign_envelope(build_fault(code, f"Error {code}", request_id=request_id), identity("platform").key_pem,
                         identity("platform").cert_pem)
