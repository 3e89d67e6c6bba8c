"""A simulated Via Oberta — a DEVELOPMENT STAND-IN for the AOC's platform, never a real registry.

It answers the four products of :mod:`viaoberta.products` over SOAP with SCSP v3 messages, from the
synthetic citizens of :mod:`sandbox.population`:

* ``POST /siri-proxy/services/Sincron`` — a signed ``Peticion`` (AOC ``procesa`` or State variant);
  the answer is a signed ``Respuesta`` in the same variant: ``0003`` with data, "not found"
  (``Retorno/Estado/CodigoEstado`` ``01``) or a tax ``NEGATIVO``; or ``0002`` (pending) for the
  configured subjects.
* ``POST /siri-proxy/services/AsincronResposta`` — a signed ``SolicitudRespuesta`` naming the
  ``IdPeticion`` of a pending query: ``0002`` until ``pending_polls`` polls and ``pending_seconds``
  have passed, then the ``0003`` answer.
* ``GET /healthz``.

Trust: requests must be signed (WS-Security, see :mod:`viaoberta.wssecurity`) by one of the
requesting bodies' **registered certificates**, pinned exactly as the AOC registers each body's
certificate (no CA: a pinned list is simpler to reason about and is what the platform does).
Requests without ``Finalidad``, a valid ``Consentimiento`` or the official (``Funcionario``) get a
signed SOAP fault with ``CodigoEstado`` ``0402`` (SCSP: a required field is missing) and a
``LiteralError`` saying what is missing; an unknown product or modality ``0234``; a poll of an unknown
or already delivered ``IdPeticion`` ``0207``; bad or unregistered signatures ``0301``; unreadable XML,
or a message whose ``DatosGenericos`` members are not the structures SCSP defines, ``0401``. These are
final refusals of the request; ``05xx`` (``0502``, system error) is kept for the emitter's outage
(``soap_fault`` below), which a client retries later. A body larger than the XML parser accepts is
refused unread (413). Every SOAP answer is signed with the platform key of the configuration.

Fault injection, for the adapters' tests, by configuration (``fault``) or per request with the
header ``X-Sandbox-Fault``: ``latency`` (sleep ``latency_seconds``, then answer), ``http500``
(plain HTTP 500, not a SOAP fault), ``malformed`` (broken XML), ``bad_signature`` (a signed
answer altered after signing), ``unsigned`` (a correct answer without signature), ``soap_fault`` (a
signed SOAP fault ``0502``: the emitter is down) and ``other_subject`` (a correct, signed answer about
another citizen than the one asked about).

Pending queries live in process memory: this stand-in runs as a single worker.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from lxml import etree

from sandbox.population import Citizen, Population, generate_population
from service_kit.security import BodySizeLimitMiddleware
from viaoberta.errors import ViaObertaError
from viaoberta.messages import (
    CONSENT_VALUES,
    ESTADO_DONE,
    IncomingPeticion,
    build_fault,
    build_respuesta,
    detect_variant,
    parse_peticion,
)
from viaoberta.products import (
    DEGREES,
    INCUMPLIMIENTOS,
    PADRO,
    RETORNO_FOUND,
    RETORNO_NOT_FOUND,
    TAX,
    TIPOS_NEGATIVO,
    WORKING_LIFE,
    Product,
    get_product,
)
from viaoberta.wssecurity import envelope_body, load_certificate, sign_envelope, verify_envelope
from viaoberta.xmlsafe import MAX_XML_BYTES, SOAP11_NS, parse_xml

FAULTS = ("latency", "http500", "malformed", "bad_signature", "unsigned", "soap_fault", "other_subject")
SYNC_PATH = "/siri-proxy/services/Sincron"
ASYNC_RESPONSE_PATH = "/siri-proxy/services/AsincronResposta"
# The IdPeticion (or the caller's X-Request-Id) echoed in the answer's X-Request-Id header: only one
# such as the SCSP clients make (at most 26 characters). Anything else, a non-Latin-1 character or a CR/LF
# (which no HTTP header can carry), leaves the header out; the SOAP body still carries it as sent.
_ECHOED_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,26}")
# SCSP error codes (CodigoEstado of a fault). 05xx are system errors, read by clients as an outage to
# retry later (issuer.sources.viaoberta); a wrong request gets a code of its own, a final refusal.
ESTADO_UNKNOWN_REQUEST = "0207"   # the state of the IdPeticion cannot be retrieved (unknown, delivered)
ESTADO_UNKNOWN_PRODUCT = "0234"   # no configuration for the certificate (product) asked for
ESTADO_UNAUTHORISED = "0301"
ESTADO_MALFORMED = "0401"         # the message does not follow the schema
ESTADO_MISSING_DATA = "0402"      # a required field is missing
ESTADO_SYSTEM_ERROR = "0502"      # the emitter (or the platform) failed: retry later
#: DatosGenericos members that SCSP defines as structures; text (or a repeated element) there is malformed.
_STRUCTURES = ("Emisor", "Solicitante", "Titular", "Transmision")


@dataclass
class ViaObertaSandboxConfig:
    """Configuration of the simulated Via Oberta.

    ``signing_key_pem``/``signing_cert_pem``: the platform's WS-Security identity (answers);
    ``registered_certs_pem``: the requesting bodies' certificates, pinned. Subsets:
    ``pending_identifiers`` answer every product asynchronously (in addition to each citizen's
    own :attr:`~sandbox.population.Citizen.pending`), ``not_found_identifiers`` are unknown to every
    registry, ``negative_identifiers`` get a tax ``NEGATIVO``. ``today`` fixes the date used for
    the working-life period and emission dates (default: the current date).
    """

    signing_key_pem: bytes
    signing_cert_pem: bytes
    registered_certs_pem: list[bytes]
    population_seed: int = 2026
    population_size: int = 1000
    pending_identifiers: frozenset[str] = frozenset()
    not_found_identifiers: frozenset[str] = frozenset()
    negative_identifiers: frozenset[str] = frozenset()
    pending_polls: int = 0
    pending_seconds: float = 0.0
    pending_estimate_hours: int = 0
    fault: str | None = None
    latency_seconds: float = 2.0
    allow_fault_header: bool = True
    today: date | None = None


def _aaaammdd(value: date) -> str:
    return value.strftime("%Y%m%d")


def _now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+00:00"


def _retorno(found: bool, literal: str = "") -> dict[str, Any]:
    code = RETORNO_FOUND if found else RETORNO_NOT_FOUND
    return {"Estado": {"CodigoEstado": code, "LiteralError": literal}}


_NOT_FOUND = {"Retorno": _retorno(False, "Titular no encontrado en el registro")}


def registry_data(citizen: Citizen | None, product: Product, population: Population, *, today: date,
                  force_negative: bool = False, specific: dict[str, Any] | None = None) -> dict[str, Any]:
    """The response ``DatosEspecificos`` (parsed-dict form) the registry gives for ``citizen``."""
    if citizen is None:
        return _NOT_FOUND
    if product is TAX:
        record = citizen.tax
        if record is None:
            return _NOT_FOUND
        negative = force_negative or record.status == "NEGATIVO"
        tipo = record.tipo_negativo or "01"
        causes = record.incumplimientos or ("D01",)
        certificado: dict[str, Any] = {"Resultado": "NEGATIVO" if negative else "POSITIVO"}
        if negative:
            certificado["TipoNegativo"] = tipo
            certificado["Incumplimientos"] = {"Incumplimiento": [
                {"Codigo": code, "Descripcion": INCUMPLIMIENTOS.get(code, TIPOS_NEGATIVO.get(tipo, ""))}
                for code in causes
            ]}
        certificado["ReferenciaAEAT"] = record.reference
        certificado["FechaEmision"] = _aaaammdd(today)
        return {"Retorno": _retorno(True), "Certificado": certificado}
    if product is DEGREES:
        if not citizen.degrees:
            return _NOT_FOUND
        return {"Retorno": _retorno(True), "ListaTitulos": {"DatosTitulacion": [
            {
                "DatosCentro": {"Universidad": d.university, "Centro": d.centre},
                "DatosTitulo": {
                    "CodTitulacion": d.code, "NombreCarrera": d.title, "CodTipoTitulo": d.type_code,
                    "TipoTitulo": d.type_name, "FechaFinalizacion": _aaaammdd(d.completion_date),
                    "FechaExpedicion": _aaaammdd(d.issue_date), "PaisExpedicion": d.country, "NumTitulo": d.number,
                },
            }
            for d in citizen.degrees
        ]}}
    if product is PADRO:
        padro = citizen.padro
        wanted = ((specific or {}).get("Consulta") or {}) if isinstance((specific or {}).get("Consulta"), dict) else {}
        if padro is None or (wanted.get("CodigoMunicipio") and wanted["CodigoMunicipio"] != padro.municipality_code):
            return _NOT_FOUND
        return {"Retorno": _retorno(True), "VolanteEmpadronamiento": {
            "DatosPersonales": {
                "Nombre": citizen.name, "Apellido1": citizen.surname1, "Apellido2": citizen.surname2 or "",
                "FechaNacimiento": _aaaammdd(citizen.birth_date), "TipoDocumentacion": citizen.identifier_type,
                "Documentacion": citizen.identifier,
            },
            "DireccionEmpadronamiento": {
                "CodigoMunicipio": padro.municipality_code, "NombreMunicipio": padro.municipality_name,
                "CodigoProvincia": padro.province_code, "NombreProvincia": padro.province_name,
                "TipoVia": padro.street_type, "NombreVia": padro.street_name, "Numero": padro.number,
                "Piso": padro.floor, "Puerta": padro.door, "CodigoPostal": padro.postal_code,
            },
            "FechaAltaPadron": _aaaammdd(padro.registered_since),
            "Convivientes": {"Conviviente": [
                {"Nombre": m.name, "Apellido1": m.surname1, "Apellido2": m.surname2 or "",
                 "FechaNacimiento": _aaaammdd(m.birth_date)}
                for m in population.household(citizen)
            ]},
        }}
    if product is WORKING_LIFE:
        record = citizen.working_life
        if record is None:
            return _NOT_FOUND
        start, end, situations = record.last_12_months(today)
        vida: dict[str, Any] = {
            "Periodo": {"FechaDesde": _aaaammdd(start), "FechaHasta": _aaaammdd(end)},
            "Totales": {"DiasTrabajados": str(sum(days for _, days in situations)),
                        "NumeroEmpresas": str(len({s.employer for s, _ in situations}))},
        }
        if situations:
            vida["situacions"] = {"situacio": [
                {"NombreEmpresa": s.employer, "Regimen": s.regime, "FechaAlta": _aaaammdd(s.start),
                 "FechaBaja": _aaaammdd(s.end) if s.end else "", "Dias": str(days)}
                for s, days in situations
            ]}
        return {"Retorno": _retorno(True), "VidaLaboral": vida}
    return _NOT_FOUND


def _misshapen(incoming: IncomingPeticion) -> str | None:
    """The first ``DatosGenericos`` member that should be a structure and is not (text, a repeated
    element), or ``None``: such a message does not follow the schema (``0401``)."""
    g = incoming.genericos
    if not isinstance(g, dict):
        return "DatosGenericos"
    for name in _STRUCTURES:
        if name in g and not isinstance(g[name], dict):
            return name
    solicitante = g.get("Solicitante") or {}
    if "Funcionario" in solicitante and not isinstance(solicitante["Funcionario"], dict):
        return "Funcionario"
    return None


def _missing_fields(incoming: IncomingPeticion) -> list[str]:
    """What the platform requires and the request lacks (names of SCSP elements)."""
    missing: list[str] = []
    g = incoming.genericos
    solicitante = g.get("Solicitante") if isinstance(g.get("Solicitante"), dict) else {}
    autorizacion = incoming.atributos.get("DatosAutorizacion")
    autorizacion = autorizacion if isinstance(autorizacion, dict) else {}
    funcionario = solicitante.get("Funcionario") if isinstance(solicitante.get("Funcionario"), dict) else {}
    titular = g.get("Titular") if isinstance(g.get("Titular"), dict) else {}
    if not solicitante.get("Finalidad") or not autorizacion.get("Finalidad"):
        missing.append("Finalidad")
    if solicitante.get("Consentimiento") not in CONSENT_VALUES:
        missing.append("Consentimiento (Si|Ley|NoOpo)")
    if not funcionario.get("NombreCompletoFuncionario") or not funcionario.get("NifFuncionario"):
        missing.append("Funcionario (NombreCompletoFuncionario, NifFuncionario)")
    if not solicitante.get("IdentificadorSolicitante"):
        missing.append("IdentificadorSolicitante")
    if not titular.get("Documentacion"):
        missing.append("Titular/Documentacion")
    return missing


# SOAP 1.1 over HTTP: a signed envelope in, a signed envelope out, and a fault answered with HTTP 500
# (SOAP 1.1 §6.2), which is the protocol and not a crash.
_SOAP_REQUEST: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "text/xml": {"schema": {"type": "string", "description": "A SOAP 1.1 envelope signed with WS-Security."}}}}}
_SOAP_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The signed SOAP answer (Respuesta).", "content": {"text/xml": {}}},
    500: {"description": "A signed SOAP fault (SOAP 1.1 answers faults with HTTP 500).", "content": {"text/xml": {}}},
}

def create_app(config: ViaObertaSandboxConfig) -> FastAPI:
    """Build the simulated Via Oberta ASGI app (development stand-in)."""
    if config.fault is not None and config.fault not in FAULTS:
        raise ViaObertaError("bad_configuration", f"fault must be one of {', '.join(FAULTS)}")
    population = generate_population(config.population_seed, config.population_size)
    registered = [load_certificate(pem) for pem in config.registered_certs_pem]
    load_certificate(config.signing_cert_pem)
    pending: dict[str, dict[str, Any]] = {}
    app = FastAPI(title="Simulated Via Oberta (development stand-in)", docs_url=None, redoc_url=None)
    # The parser refuses more than MAX_XML_BYTES: a larger body is refused before it is read (413).
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=MAX_XML_BYTES)

    def today() -> date:
        return config.today or datetime.now(UTC).date()

    def signed(content: etree._Element, status: int, request_id: str) -> Response:
        echoed = {"X-Request-Id": request_id} if _ECHOED_REQUEST_ID.fullmatch(request_id) else {}
        return Response(sign_envelope(content, config.signing_key_pem, config.signing_cert_pem),
                        status_code=status, media_type="text/xml; charset=utf-8", headers=echoed)

    def fault(code: str, literal: str, variant: str = "aoc", request_id: str = "") -> Response:
        return signed(build_fault(code, literal, variant, request_id), 500, request_id)

    def answer(incoming: IncomingPeticion, product: Product, genericos: dict[str, Any]) -> etree._Element:
        titular = genericos.get("Titular") if isinstance(genericos.get("Titular"), dict) else {}
        identifier = str(titular.get("Documentacion", "")).strip().upper()
        citizen = None if identifier in config.not_found_identifiers else population.get(identifier)
        data = registry_data(citizen, product, population, today=today(),
                             force_negative=identifier in config.negative_identifiers,
                             specific=incoming.especificos)
        given = genericos.get("Transmision")
        transmision = dict(given) if isinstance(given, dict) else {}
        transmision["IdTransmision"] = transmision.get("IdTransmision") or "SBX" + secrets.token_hex(10).upper()
        transmision["FechaGeneracion"] = _now()
        out = {**genericos, "Transmision": transmision}
        return build_respuesta(variant=incoming.variant, request_id=incoming.request_id, product=product,
                               codigo_estado=ESTADO_DONE, genericos=out, especificos=data)

    def _about_someone_else(genericos: dict[str, Any], identifier: str, product: Product) -> dict[str, Any]:
        """``genericos`` naming the first other citizen the registry has data for (fault injection)."""
        for other in population.citizens:
            found = registry_data(other, product, population, today=today()).get("Retorno", {})
            if other.identifier != identifier and found.get("Estado", {}).get("CodigoEstado") == RETORNO_FOUND:
                given = genericos.get("Titular")
                titular = dict(given) if isinstance(given, dict) else {}
                titular.update(Documentacion=other.identifier, NombreCompleto=other.full_name)
                return {**genericos, "Titular": titular}
        return genericos

    async def handle(request: Request, expected_kind: str) -> Response:
        request_id = request.headers.get("x-request-id", "")
        chosen = config.fault
        if config.allow_fault_header and request.headers.get("x-sandbox-fault"):
            chosen = request.headers["x-sandbox-fault"].strip().lower()
        if chosen == "latency":
            await anyio.sleep(config.latency_seconds)
        elif chosen == "http500":
            return Response("Internal Server Error", status_code=500, media_type="text/plain")
        elif chosen == "malformed":
            return Response(b"<?xml version='1.0'?><soapenv:Envelope><broken", status_code=200,
                            media_type="text/xml; charset=utf-8")

        raw = await request.body()
        try:
            root = parse_xml(raw, max_bytes=MAX_XML_BYTES)
            unverified = envelope_body(root)
        except ViaObertaError:
            return fault(ESTADO_MALFORMED, "Mensaje SOAP mal formado", request_id=request_id)
        variant = detect_variant(unverified)
        try:
            body, _ = verify_envelope(root, registered)
        except ViaObertaError as exc:
            literal = {"viaoberta.unsigned": "Petición sin firma WS-Security",
                       "viaoberta.untrusted_signer": "Certificado de firma no registrado para ningún requirente"}
            return fault(ESTADO_UNAUTHORISED, literal.get(exc.code, "Firma WS-Security no válida"), variant, request_id)
        try:
            incoming = parse_peticion(body)
        except ViaObertaError:
            return fault(ESTADO_MALFORMED, "Mensaje SCSP mal formado", variant, request_id)
        if incoming.kind != expected_kind:
            return fault(ESTADO_MALFORMED, f"Se esperaba {expected_kind}", variant, incoming.request_id)
        misshapen = _misshapen(incoming)
        if misshapen is not None:
            return fault(ESTADO_MALFORMED, f"Mensaje SCSP mal formado: {misshapen} no es una estructura", variant,
                         incoming.request_id)
        if chosen == "soap_fault":
            return fault(ESTADO_SYSTEM_ERROR, "Error en el emisor: servicio no disponible", variant, incoming.request_id)
        product = get_product(incoming.codigo_certificado)
        if product is None or (incoming.codigo_producto and incoming.codigo_producto != product.codigo_producto):
            return fault(ESTADO_UNKNOWN_PRODUCT, "Producto o modalidad desconocidos", variant, incoming.request_id)

        if incoming.kind == "SolicitudRespuesta":
            state = pending.get(incoming.request_id)
            if state is None or state["product"] is not product:
                return fault(ESTADO_UNKNOWN_REQUEST, "IdPeticion desconocido o ya entregado", variant,
                             incoming.request_id)
            state["polls"] += 1
            ready = (state["polls"] > config.pending_polls
                     and time.monotonic() - state["created"] >= config.pending_seconds)
            if not ready:
                content = build_respuesta(variant=variant, request_id=incoming.request_id, product=product,
                                          codigo_estado="0002", tiempo_estimado=config.pending_estimate_hours)
            else:
                del pending[incoming.request_id]
                content = answer(state["incoming"], product, state["incoming"].genericos)
        else:
            missing = _missing_fields(incoming)
            if missing:
                return fault(ESTADO_MISSING_DATA, "Faltan datos obligatorios: " + "; ".join(missing),
                             variant, incoming.request_id)
            titular = incoming.genericos.get("Titular") or {}
            identifier = str(titular.get("Documentacion", "")).strip().upper()
            citizen = population.get(identifier)
            is_pending = identifier in config.pending_identifiers or (
                citizen is not None and product.codigo_certificado in citizen.pending)
            if is_pending:
                pending[incoming.request_id] = {"incoming": incoming, "product": product, "polls": 0,
                                                "created": time.monotonic()}
                content = build_respuesta(variant=variant, request_id=incoming.request_id, product=product,
                                          codigo_estado="0002", tiempo_estimado=config.pending_estimate_hours)
            elif chosen == "other_subject":
                content = answer(incoming, product, _about_someone_else(incoming.genericos, identifier, product))
            else:
                content = answer(incoming, product, incoming.genericos)

        if chosen == "unsigned":
            envelope = etree.Element(etree.QName(SOAP11_NS, "Envelope"), nsmap={"soapenv": SOAP11_NS})
            etree.SubElement(envelope, etree.QName(SOAP11_NS, "Body")).append(content)
            return Response(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"),
                            media_type="text/xml; charset=utf-8")
        response = signed(content, 200, incoming.request_id)
        if chosen == "bad_signature":
            # Alter one signed character after signing: the digest no longer matches.
            response.body = response.body.replace(b"<CodigoEstado>0", b"<CodigoEstado>9", 1)
            response.headers["content-length"] = str(len(response.body))
        return response

    @app.post(SYNC_PATH, responses=_SOAP_RESPONSES, openapi_extra=_SOAP_REQUEST)
    async def sincron(request: Request) -> Response:
        return await handle(request, "Peticion")

    @app.post(ASYNC_RESPONSE_PATH, responses=_SOAP_RESPONSES, openapi_extra=_SOAP_REQUEST)
    async def asincron_resposta(request: Request) -> Response:
        return await handle(request, "SolicitudRespuesta")

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "service": "simulated-via-oberta", "citizens": len(population)})

    return app
