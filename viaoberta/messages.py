"""SCSP v3 messages: build a ``Peticion`` and parse a ``Respuesta`` into typed results.

Two variants are supported (``variant`` argument):

* ``"aoc"`` — the AOC's Via Oberta: the SOAP Body holds ``procesa`` (``http://www.openuri.org/``)
  wrapping ``Peticion`` (``http://gencat.net/scsp/esquemes/peticion``); the answer holds
  ``procesaResponse`` wrapping ``Respuesta`` (``http://gencat.net/scsp/esquemes/respuesta``).
* ``"state"`` — the State platform (Red SARA): ``Peticion`` directly in the Body, namespaces
  ``http://intermediacion.redsara.es/scsp/esquemas/V3/peticion`` and ``.../V3/respuesta``.

Asynchronous answers are collected with a ``SolicitudRespuesta`` (``Atributos`` only) sent with the
original ``IdPeticion``. ``DatosEspecificos`` content is written in the message's own namespace and
parsed namespace-agnostically into the plain nested ``dict`` described in :mod:`viaoberta.products`.

This module also holds the emitter-side helpers (:func:`parse_peticion`, :func:`build_respuesta`,
:func:`build_fault`) used by the simulated Via Oberta in ``sandbox/``, so that both sides share one
definition of the message shapes.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from .errors import ViaObertaError, ViaObertaUnavailable
from .products import RETORNO_FOUND, RETORNO_NOT_FOUND, TAX, Product, get_product
from .xmlsafe import OPENURI_NS, SOAP11_NS, is_xml_text, local_name, namespace_of, qname

NAMESPACES: dict[str, dict[str, str]] = {
    "aoc": {
        "peticion": "http://gencat.net/scsp/esquemes/peticion",
        "respuesta": "http://gencat.net/scsp/esquemes/respuesta",
    },
    "state": {
        "peticion": "http://intermediacion.redsara.es/scsp/esquemas/V3/peticion",
        "respuesta": "http://intermediacion.redsara.es/scsp/esquemas/V3/respuesta",
    },
}
VARIANTS = tuple(NAMESPACES)
CONSENT_VALUES = ("Si", "Ley", "NoOpo")
DOCUMENT_TYPES = ("NIF", "DNI", "NIE", "Pasaporte", "CIF")

#: SCSP ``Estado/CodigoEstado`` values.
ESTADO_PENDING = ("0001", "0002")
ESTADO_DONE = "0003"
ESTADO_ERROR = "0502"

#: Floor for the retry hint when the platform estimates "less than an hour" (``TiempoEstimadoRespuesta`` 0).
DEFAULT_PENDING_RETRY_SECONDS = 30


def _now_timestamp() -> str:
    # SCSP's TimeStamp format: AAAA-MM-DDThh:mm:ss.mmm±hh:mm
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+00:00"


def new_request_id() -> str:
    """A fresh ``IdPeticion``: 26 characters, the SCSP maximum, unguessable."""
    return "CRT" + secrets.token_hex(12).upper()[:23]


@dataclass(frozen=True)
class QueryRequest:
    """Everything one SCSP query says about who asks what, about whom, and why.

    ``product`` is a ``CodigoCertificado`` (or ``CodigoProducto``/short key, see
    :func:`viaoberta.products.get_product`). ``consent`` is ``Si`` (the citizen consented),
    ``Ley`` (a law enables the query) or ``NoOpo`` (the citizen did not object). ``specific`` holds
    optional request ``DatosEspecificos`` values by dotted path (for example
    ``{"Consulta.CodigoMunicipio": "08019"}``). ``request_id`` is generated when empty.
    """

    product: str
    subject_document: str
    subject_document_type: str
    subject_name: str
    purpose: str
    procedure: str
    consent: str
    requester_id: str
    requester_name: str
    official_name: str
    official_nif: str
    request_id: str = ""
    specific: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.request_id:
            object.__setattr__(self, "request_id", new_request_id())

    def validate(self) -> Product:
        """Check the request can be sent; return its product. Raises ``viaoberta.bad_request``."""
        product = get_product(self.product)
        if product is None:
            raise ViaObertaError("unknown_product", "no such Via Oberta product")
        required = {
            "subject_document": self.subject_document, "purpose": self.purpose,
            "requester_id": self.requester_id, "requester_name": self.requester_name,
            "official_name": self.official_name, "official_nif": self.official_nif, "consent": self.consent,
        }
        missing = [name for name, value in required.items() if not isinstance(value, str) or not value.strip()]
        if missing:
            raise ViaObertaError("bad_request", f"missing {', '.join(missing)}")
        texts = {
            "subject_document": self.subject_document, "subject_name": self.subject_name, "purpose": self.purpose,
            "procedure": self.procedure, "requester_id": self.requester_id, "requester_name": self.requester_name,
            "official_name": self.official_name, "official_nif": self.official_nif, "request_id": self.request_id,
            **{f"specific {path}": value for path, value in self.specific.items()},
        }
        # A name from the identity provider or a tenant's purpose is written into XML: a control
        # character or a lone surrogate cannot be, and is refused here rather than failing the build.
        unwritable = [name for name, value in texts.items() if not isinstance(value, str) or not is_xml_text(value)]
        if unwritable:
            raise ViaObertaError("bad_request", f"{', '.join(unwritable)}: not text XML can carry")
        if self.consent not in CONSENT_VALUES:
            raise ViaObertaError("bad_request", f"Consentimiento must be one of {', '.join(CONSENT_VALUES)}")
        if self.subject_document_type not in DOCUMENT_TYPES:
            raise ViaObertaError("bad_request", f"TipoDocumentacion must be one of {', '.join(DOCUMENT_TYPES)}")
        if len(self.request_id) > 26:
            raise ViaObertaError("bad_request", "IdPeticion longer than 26 characters")
        for path in self.specific:
            if path not in product.request_fields:
                raise ViaObertaError("bad_request", f"unknown DatosEspecificos field {path}")
        return product


@dataclass(frozen=True)
class Evidence:
    """What the issuance record keeps of one query: who asked what, why, under which basis, when."""

    request_id: str
    id_solicitud: str
    id_transmision: str
    product: str               # CodigoProducto
    modality: str              # CodigoCertificado
    purpose: str               # Finalidad
    procedure: str
    consent: str
    requester_id: str
    requester_name: str
    official_name: str
    official_nif: str
    emitter_nif: str
    emitter_name: str
    timestamp: str             # FechaGeneracion
    #: ``Titular/Documentacion`` of the answer: whom the data is about (kept out of repr: personal data).
    subject_document: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class DataResult:
    """The registry answered with data: ``data`` is the parsed ``DatosEspecificos``."""

    data: dict[str, Any]
    evidence: Evidence


@dataclass(frozen=True)
class NegativeResult:
    """A tax-compliance answer ``NEGATIVO``: the subject is not up to date, with the cause."""

    tipo_negativo: str
    incumplimientos: list[dict[str, str]]
    data: dict[str, Any]
    evidence: Evidence


@dataclass(frozen=True)
class NotFoundResult:
    """The registry holds nothing for this subject (``Retorno/Estado/CodigoEstado`` ``01``)."""

    evidence: Evidence
    literal: str = ""


@dataclass(frozen=True)
class PendingResult:
    """The answer is asynchronous: poll again with ``request_id`` after ``retry_after_seconds``."""

    retry_after_seconds: int
    request_id: str
    codigo_estado: str = "0002"


@dataclass(frozen=True)
class ErrorResult:
    """The platform refused the query (an SCSP error status or a SOAP fault)."""

    codigo_estado: str
    literal_error: str
    request_id: str = ""


ViaObertaResult = DataResult | NegativeResult | NotFoundResult | PendingResult | ErrorResult


# ---------------------------------------------------------------------------------------------
# dict <-> XML for DatosEspecificos


def element_to_value(element: etree._Element, repeated: frozenset[str] = frozenset()) -> Any:
    """Turn an element into ``str`` (leaf) or ``dict`` following the rule in :mod:`viaoberta.products`."""
    children = [child for child in element if isinstance(child.tag, str)]
    if not children:
        return (element.text or "").strip()
    out: dict[str, Any] = {}
    multi: set[str] = set()
    for child in children:
        name = local_name(child)
        value = element_to_value(child, repeated)
        if name in repeated:
            out.setdefault(name, []).append(value)
        elif name in out:
            if name not in multi:
                out[name] = [out[name]]
                multi.add(name)
            out[name].append(value)
        else:
            out[name] = value
    return out


def value_to_elements(parent: etree._Element, value: Mapping[str, Any], ns: str) -> None:
    """Append ``value`` (nested dict/list/str) under ``parent`` in namespace ``ns``; ``None`` is skipped."""
    for name, item in value.items():
        items = item if isinstance(item, list) else [item]
        for entry in items:
            if entry is None:
                continue
            child = etree.SubElement(parent, qname(ns, name))
            if isinstance(entry, Mapping):
                value_to_elements(child, entry, ns)
            else:
                child.text = str(entry)


def _dotted_to_nested(flat: Mapping[str, str]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for path, text in flat.items():
        cursor = nested
        parts = path.split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = text
    return nested


# ---------------------------------------------------------------------------------------------
# Building


def _sub(parent: etree._Element, ns: str, name: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, qname(ns, name))
    if text is not None:
        child.text = text
    return child


def _check_variant(variant: str) -> dict[str, str]:
    if variant not in NAMESPACES:
        raise ViaObertaError("bad_request", f"variant must be one of {', '.join(VARIANTS)}")
    return NAMESPACES[variant]


def build_peticion(request: QueryRequest, variant: str = "aoc", timestamp: str | None = None) -> etree._Element:
    """Build the Body content for ``request``: ``procesa/Peticion`` (AOC) or ``Peticion`` (State)."""
    product = request.validate()
    ns = _check_variant(variant)["peticion"]
    timestamp = timestamp or _now_timestamp()
    peticion = etree.Element(qname(ns, "Peticion"), nsmap={None: ns})
    atributos = _sub(peticion, ns, "Atributos")
    _sub(atributos, ns, "IdPeticion", request.request_id)
    _sub(atributos, ns, "NumElementos", "1")
    _sub(atributos, ns, "TimeStamp", timestamp)
    _sub(atributos, ns, "CodigoCertificado", product.codigo_certificado)
    _sub(atributos, ns, "CodigoProducto", product.codigo_producto)
    autorizacion = _sub(atributos, ns, "DatosAutorizacion")
    _sub(autorizacion, ns, "IdentificadorSolicitante", request.requester_id)
    _sub(autorizacion, ns, "NombreSolicitante", request.requester_name)
    _sub(autorizacion, ns, "Finalidad", request.purpose)
    funcionario = _sub(atributos, ns, "Funcionario")
    _sub(funcionario, ns, "NombreCompletoFuncionario", request.official_name)
    _sub(funcionario, ns, "NifFuncionario", request.official_nif)

    solicitud = _sub(_sub(peticion, ns, "Solicitudes"), ns, "SolicitudTransmision")
    genericos = _sub(solicitud, ns, "DatosGenericos")
    emisor = _sub(genericos, ns, "Emisor")
    _sub(emisor, ns, "NifEmisor", product.nif_emisor)
    _sub(emisor, ns, "NombreEmisor", product.nombre_emisor)
    solicitante = _sub(genericos, ns, "Solicitante")
    _sub(solicitante, ns, "IdentificadorSolicitante", request.requester_id)
    _sub(solicitante, ns, "NombreSolicitante", request.requester_name)
    _sub(solicitante, ns, "Procedimiento", request.procedure)
    _sub(solicitante, ns, "Finalidad", request.purpose)
    _sub(solicitante, ns, "Consentimiento", request.consent)
    funcionario = _sub(solicitante, ns, "Funcionario")
    _sub(funcionario, ns, "NombreCompletoFuncionario", request.official_name)
    _sub(funcionario, ns, "NifFuncionario", request.official_nif)
    titular = _sub(genericos, ns, "Titular")
    _sub(titular, ns, "TipoDocumentacion", request.subject_document_type)
    _sub(titular, ns, "Documentacion", request.subject_document)
    _sub(titular, ns, "NombreCompleto", request.subject_name)
    transmision = _sub(genericos, ns, "Transmision")
    _sub(transmision, ns, "CodigoCertificado", product.codigo_certificado)
    _sub(transmision, ns, "IdSolicitud", f"{request.request_id}-1")
    _sub(transmision, ns, "IdTransmision", "")
    _sub(transmision, ns, "FechaGeneracion", timestamp)
    especificos = _sub(solicitud, ns, "DatosEspecificos")
    value_to_elements(especificos, _dotted_to_nested(request.specific), ns)
    return _wrap(peticion, variant, "procesa")


def build_solicitud_respuesta(request_id: str, product: str, variant: str = "aoc") -> etree._Element:
    """Build the Body content asking for the answer to an earlier asynchronous ``Peticion``."""
    found = get_product(product)
    if found is None:
        raise ViaObertaError("unknown_product", "no such Via Oberta product")
    if not request_id or len(request_id) > 26:
        raise ViaObertaError("bad_request", "IdPeticion missing or longer than 26 characters")
    ns = _check_variant(variant)["peticion"]
    solicitud = etree.Element(qname(ns, "SolicitudRespuesta"), nsmap={None: ns})
    atributos = _sub(solicitud, ns, "Atributos")
    _sub(atributos, ns, "IdPeticion", request_id)
    _sub(atributos, ns, "NumElementos", "1")
    _sub(atributos, ns, "TimeStamp", _now_timestamp())
    _sub(atributos, ns, "CodigoCertificado", found.codigo_certificado)
    _sub(atributos, ns, "CodigoProducto", found.codigo_producto)
    return _wrap(solicitud, variant, "procesa")


def _wrap(element: etree._Element, variant: str, wrapper: str) -> etree._Element:
    if variant != "aoc":
        return element
    outer = etree.Element(qname(OPENURI_NS, wrapper), nsmap={None: OPENURI_NS})
    outer.append(element)
    return outer


def build_respuesta(
    *, variant: str, request_id: str, product: Product, codigo_estado: str, literal_error: str = "",
    tiempo_estimado: int | None = None, genericos: Mapping[str, Any] | None = None,
    especificos: Mapping[str, Any] | None = None, timestamp: str | None = None,
) -> etree._Element:
    """Emitter side (sandbox): build ``Respuesta`` (wrapped in ``procesaResponse`` for AOC).

    ``genericos`` is the parsed ``DatosGenericos`` dict (as :func:`parse_peticion` returns it) with
    ``Transmision.IdTransmision`` filled by the emitter; ``especificos`` the response
    ``DatosEspecificos`` in the parsed-dict form. Without them only ``Atributos`` is sent (pending,
    error).
    """
    ns = _check_variant(variant)["respuesta"]
    respuesta = etree.Element(qname(ns, "Respuesta"), nsmap={None: ns})
    atributos = _sub(respuesta, ns, "Atributos")
    _sub(atributos, ns, "IdPeticion", request_id)
    _sub(atributos, ns, "NumElementos", "1" if genericos is not None else "0")
    _sub(atributos, ns, "TimeStamp", timestamp or _now_timestamp())
    estado = _sub(atributos, ns, "Estado")
    _sub(estado, ns, "CodigoEstado", codigo_estado)
    _sub(estado, ns, "CodigoEstadoSecundario", "")
    _sub(estado, ns, "LiteralError", literal_error)
    _sub(estado, ns, "TiempoEstimadoRespuesta", str(tiempo_estimado if tiempo_estimado is not None else 0))
    _sub(atributos, ns, "CodigoCertificado", product.codigo_certificado)
    if genericos is not None:
        transmision = _sub(_sub(respuesta, ns, "Transmisiones"), ns, "TransmisionDatos")
        value_to_elements(transmision, {"DatosGenericos": genericos}, ns)
        value_to_elements(transmision, {"DatosEspecificos": dict(especificos or {})}, ns)
    return _wrap(respuesta, variant, "procesaResponse")


def build_fault(codigo_estado: str, literal_error: str, variant: str = "aoc", request_id: str = "") -> etree._Element:
    """Emitter side (sandbox): a SOAP 1.1 ``Fault`` whose ``detail`` carries the SCSP ``Atributos/Estado``."""
    ns = _check_variant(variant)["respuesta"]
    fault = etree.Element(qname(SOAP11_NS, "Fault"), nsmap={"soapenv": SOAP11_NS})
    etree.SubElement(fault, "faultcode").text = "soapenv:Server"
    etree.SubElement(fault, "faultstring").text = literal_error
    detail = etree.SubElement(fault, "detail")
    atributos = etree.SubElement(detail, qname(ns, "Atributos"), nsmap={None: ns})
    _sub(atributos, ns, "IdPeticion", request_id)
    estado = _sub(atributos, ns, "Estado")
    _sub(estado, ns, "CodigoEstado", codigo_estado)
    _sub(estado, ns, "LiteralError", literal_error)
    return fault


# ---------------------------------------------------------------------------------------------
# Parsing


def _child(element: etree._Element, ns: str, name: str) -> etree._Element:
    found = element.find(qname(ns, name))
    if found is None:
        raise ViaObertaError("missing_element", f"{local_name(element)}/{name} is missing")
    return found


def _text(element: etree._Element, ns: str, path: str, required: bool = True) -> str:
    cursor = element
    for name in path.split("/"):
        found = cursor.find(qname(ns, name))
        if found is None:
            if required:
                raise ViaObertaError("missing_element", f"{local_name(element)}/{path} is missing")
            return ""
        cursor = found
    return (cursor.text or "").strip()


def _unwrap(body: etree._Element, variant: str, wrapper: str, name: str, kind: str) -> etree._Element:
    """Find the SCSP message inside the Body (through the AOC wrapper), checking namespaces."""
    ns = NAMESPACES[variant][kind]
    children = [c for c in body if isinstance(c.tag, str)]
    if len(children) != 1:
        raise ViaObertaError("malformed", "the SOAP Body must hold exactly one element")
    node = children[0]
    if variant == "aoc":
        if local_name(node) != wrapper:
            raise ViaObertaError("missing_element", f"Body/{wrapper} is missing")
        if namespace_of(node) != OPENURI_NS:
            raise ViaObertaError("wrong_namespace", f"{wrapper} is not in {OPENURI_NS}")
        inner = [c for c in node if isinstance(c.tag, str)]
        if len(inner) != 1:
            raise ViaObertaError("missing_element", f"{wrapper}/{name} is missing")
        node = inner[0]
    if local_name(node) != name:
        raise ViaObertaError("missing_element", f"{name} is missing")
    if namespace_of(node) != ns:
        raise ViaObertaError("wrong_namespace", f"{name} is not in the {variant} {kind} namespace")
    return node


def parse_fault(body: etree._Element) -> ErrorResult | None:
    """An :class:`ErrorResult` when the Body holds a SOAP ``Fault``, else ``None``."""
    fault = body.find(qname(SOAP11_NS, "Fault"))
    if fault is None:
        return None
    codigo, literal, request_id = "", (fault.findtext("faultstring") or "").strip(), ""
    for element in fault.iter():
        name = local_name(element)
        if name == "CodigoEstado" and not codigo:
            codigo = (element.text or "").strip()
        elif name == "LiteralError" and (element.text or "").strip():
            literal = (element.text or "").strip()
        elif name == "IdPeticion":
            request_id = (element.text or "").strip()
    return ErrorResult(codigo_estado=codigo or "fault", literal_error=literal, request_id=request_id)


def parse_respuesta(body: etree._Element, variant: str = "aoc", *, expected_request_id: str | None = None,
                    expected_product: str | None = None,
                    pending_floor_seconds: int = DEFAULT_PENDING_RETRY_SECONDS) -> ViaObertaResult:
    """Parse a (verified) SOAP Body holding ``Respuesta`` or a ``Fault`` into a typed result.

    ``expected_request_id``, when given, must match ``Atributos/IdPeticion`` (an answer to another
    query is ``viaoberta.malformed``; a fault naming another ``IdPeticion``, or none, is
    :class:`~viaoberta.errors.ViaObertaUnavailable`: it refuses nothing for good). ``expected_product`` (any name :func:`get_product` knows),
    when given, is the product asked: the answer is parsed as that product, and an answer whose
    ``Atributos/CodigoCertificado`` or ``Transmision/CodigoCertificado`` names another one is
    ``viaoberta.malformed`` (the answer never decides how it is read). Data are accepted only with
    ``Retorno`` :data:`~viaoberta.products.RETORNO_FOUND`; ``RETORNO_NOT_FOUND`` is a
    :class:`NotFoundResult`, and any other ``Retorno`` code an :class:`ErrorResult`.
    """
    _check_variant(variant)
    asked: Product | None = None
    if expected_product is not None:
        asked = get_product(expected_product)
        if asked is None:
            raise ViaObertaError("unknown_product", "no such Via Oberta product")
    fault = parse_fault(body)
    if fault is not None and expected_request_id is not None and fault.request_id != expected_request_id:
        # Not tied to the query asked (another IdPeticion, or none): a replayed fault may make the
        # query fail for now, never refuse it for good.
        raise ViaObertaUnavailable("unavailable", "a SOAP fault for another IdPeticion")
    if fault is not None:
        return fault
    respuesta = _unwrap(body, variant, "procesaResponse", "Respuesta", "respuesta")
    ns = NAMESPACES[variant]["respuesta"]
    atributos = _child(respuesta, ns, "Atributos")
    request_id = _text(atributos, ns, "IdPeticion")
    if expected_request_id is not None and request_id != expected_request_id:
        raise ViaObertaError("malformed", "the answer is for another IdPeticion")
    estado = _child(atributos, ns, "Estado")
    codigo = _text(estado, ns, "CodigoEstado")
    literal = _text(estado, ns, "LiteralError", required=False)
    named = _text(atributos, ns, "CodigoCertificado", required=False)
    if asked is not None and named and named != asked.codigo_certificado:
        raise ViaObertaError("malformed", "the answer is for another product (CodigoCertificado)")
    if codigo in ESTADO_PENDING:
        hours_text = _text(estado, ns, "TiempoEstimadoRespuesta", required=False) or "0"
        try:
            hours = int(hours_text)
        except ValueError as exc:
            raise ViaObertaError("malformed", "TiempoEstimadoRespuesta is not an integer") from exc
        if hours < 0:
            raise ViaObertaError("malformed", "TiempoEstimadoRespuesta is negative")
        # DESIGN §5: the estimate is in hours; 0 means "soon", so a short floor is used instead.
        return PendingResult(max(hours * 3600, pending_floor_seconds), request_id, codigo)
    if codigo != ESTADO_DONE:
        return ErrorResult(codigo, literal, request_id)

    codigo_certificado = _text(atributos, ns, "CodigoCertificado")
    product = get_product(codigo_certificado)
    if product is None:
        raise ViaObertaError("unknown_product", "the answer names an unknown CodigoCertificado")
    if asked is not None and product is not asked:
        raise ViaObertaError("malformed", "the answer is for another product (CodigoCertificado)")
    transmision = _child(_child(respuesta, ns, "Transmisiones"), ns, "TransmisionDatos")
    genericos = _child(transmision, ns, "DatosGenericos")
    if _text(genericos, ns, "Transmision/CodigoCertificado") != product.codigo_certificado:
        raise ViaObertaError("malformed", "Transmision/CodigoCertificado is not the product of the answer")
    evidence = _evidence(genericos, ns, request_id, product)
    especificos_el = _child(transmision, ns, "DatosEspecificos")
    data = element_to_value(especificos_el, product.repeated)
    if not isinstance(data, dict):
        raise ViaObertaError("missing_element", "DatosEspecificos is empty")
    retorno = data.get("Retorno")
    estado_ret = retorno.get("Estado") if isinstance(retorno, dict) else None
    if not isinstance(estado_ret, dict) or not isinstance(estado_ret.get("CodigoEstado"), str):
        raise ViaObertaError("missing_element", "DatosEspecificos/Retorno/Estado/CodigoEstado is missing")
    literal_ret = estado_ret.get("LiteralError")
    literal_ret = literal_ret if isinstance(literal_ret, str) else ""
    if estado_ret["CodigoEstado"] == RETORNO_NOT_FOUND:
        return NotFoundResult(evidence, literal_ret)
    if estado_ret["CodigoEstado"] != RETORNO_FOUND:
        # Only the success code carries data; whatever else the registry says, nothing is issued from it.
        return ErrorResult(f"Retorno {estado_ret['CodigoEstado']}"[:40], literal_ret, request_id)
    if product.response_root not in data:
        raise ViaObertaError("missing_element", f"DatosEspecificos/{product.response_root} is missing")
    if product is TAX:
        certificado = data[product.response_root]
        if not isinstance(certificado, dict) or certificado.get("Resultado") not in ("POSITIVO", "NEGATIVO"):
            raise ViaObertaError("malformed", "Certificado/Resultado must be POSITIVO or NEGATIVO")
        if certificado["Resultado"] == "NEGATIVO":
            incumplimientos = certificado.get("Incumplimientos")
            items = incumplimientos.get("Incumplimiento", []) if isinstance(incumplimientos, dict) else []
            tipo = certificado.get("TipoNegativo")
            return NegativeResult(tipo if isinstance(tipo, str) else "",
                                  [i for i in items if isinstance(i, dict)], data, evidence)
    return DataResult(data, evidence)


def _evidence(genericos: etree._Element, ns: str, request_id: str, product: Product) -> Evidence:
    return Evidence(
        request_id=request_id,
        id_solicitud=_text(genericos, ns, "Transmision/IdSolicitud"),
        id_transmision=_text(genericos, ns, "Transmision/IdTransmision"),
        product=product.codigo_producto,
        modality=_text(genericos, ns, "Transmision/CodigoCertificado"),
        purpose=_text(genericos, ns, "Solicitante/Finalidad"),
        procedure=_text(genericos, ns, "Solicitante/Procedimiento", required=False),
        consent=_text(genericos, ns, "Solicitante/Consentimiento"),
        requester_id=_text(genericos, ns, "Solicitante/IdentificadorSolicitante"),
        requester_name=_text(genericos, ns, "Solicitante/NombreSolicitante", required=False),
        official_name=_text(genericos, ns, "Solicitante/Funcionario/NombreCompletoFuncionario"),
        official_nif=_text(genericos, ns, "Solicitante/Funcionario/NifFuncionario", required=False),
        emitter_nif=_text(genericos, ns, "Emisor/NifEmisor", required=False),
        emitter_name=_text(genericos, ns, "Emisor/NombreEmisor", required=False),
        timestamp=_text(genericos, ns, "Transmision/FechaGeneracion"),
        subject_document=_text(genericos, ns, "Titular/Documentacion", required=False),
    )


@dataclass(frozen=True)
class IncomingPeticion:
    """Emitter side (sandbox): a parsed ``Peticion`` or ``SolicitudRespuesta``."""

    kind: str                              # "Peticion" | "SolicitudRespuesta"
    variant: str
    request_id: str
    codigo_certificado: str
    codigo_producto: str
    atributos: dict[str, Any]
    genericos: dict[str, Any] = field(default_factory=dict)
    especificos: dict[str, Any] = field(default_factory=dict)


def detect_variant(body: etree._Element) -> str:
    """``"aoc"`` when the Body holds ``procesa``, ``"state"`` otherwise (emitter side)."""
    children = [c for c in body if isinstance(c.tag, str)]
    if children and namespace_of(children[0]) == OPENURI_NS:
        return "aoc"
    return "state"


def parse_peticion(body: etree._Element) -> IncomingPeticion:
    """Emitter side (sandbox): parse a Body holding ``Peticion`` or ``SolicitudRespuesta`` (either variant)."""
    variant = detect_variant(body)
    children = [c for c in body if isinstance(c.tag, str)]
    node = children[0] if children else None
    if node is not None and variant == "aoc":
        inner = [c for c in node if isinstance(c.tag, str)]
        node = inner[0] if len(inner) == 1 else None
    if node is None:
        raise ViaObertaError("missing_element", "Body holds no Peticion")
    kind = local_name(node)
    if kind not in ("Peticion", "SolicitudRespuesta"):
        raise ViaObertaError("missing_element", "Body holds no Peticion")
    node = _unwrap(body, variant, "procesa", kind, "peticion")
    ns = NAMESPACES[variant]["peticion"]
    atributos = element_to_value(_child(node, ns, "Atributos"))
    if not isinstance(atributos, dict):
        raise ViaObertaError("missing_element", "Atributos is empty")
    request_id = atributos.get("IdPeticion")
    codigo = atributos.get("CodigoCertificado")
    if not isinstance(request_id, str) or not request_id or not isinstance(codigo, str):
        raise ViaObertaError("missing_element", "Atributos/IdPeticion or CodigoCertificado is missing")
    producto = atributos.get("CodigoProducto")
    genericos: dict[str, Any] = {}
    especificos: dict[str, Any] = {}
    if kind == "Peticion":
        solicitud = _child(_child(node, ns, "Solicitudes"), ns, "SolicitudTransmision")
        parsed = element_to_value(_child(solicitud, ns, "DatosGenericos"))
        genericos = parsed if isinstance(parsed, dict) else {}
        especificos_el = solicitud.find(qname(ns, "DatosEspecificos"))
        parsed = element_to_value(especificos_el) if especificos_el is not None else {}
        especificos = parsed if isinstance(parsed, dict) else {}
    return IncomingPeticion(kind, variant, request_id, codigo, producto if isinstance(producto, str) else "",
                            atributos, genericos, especificos)
