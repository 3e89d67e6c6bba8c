"""Parser hardening, message shapes and the parsed-dict rule, without the network."""

from __future__ import annotations

import pytest
from lxml import etree

from viaoberta.errors import ViaObertaError, ViaObertaUnavailable
from viaoberta.messages import (
    NAMESPACES,
    DataResult,
    ErrorResult,
    NegativeResult,
    NotFoundResult,
    PendingResult,
    build_fault,
    build_peticion,
    build_respuesta,
    build_solicitud_respuesta,
    element_to_value,
    parse_peticion,
    parse_respuesta,
)
from viaoberta.products import DEGREES, PADRO, PRODUCTS, TAX, WORKING_LIFE, get_product
from viaoberta.xmlsafe import OPENURI_NS, SOAP11_NS, parse_xml, qname

from .helpers import make_request

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><lolz>&lol3;</lolz>"""
XXE_FILE = b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"""
XXE_HTTP = b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "http://127.0.0.1:9/x">]><r>&x;</r>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://127.0.0.1:9/r.dtd"><r/>"""
PARAMETER_ENTITY = b"""<!DOCTYPE r [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><r/>"""


@pytest.mark.parametrize("payload", [BOMB, XXE_FILE, XXE_HTTP, EXTERNAL_DTD, PARAMETER_ENTITY,
                                     BOMB.replace(b"DOCTYPE", b"doctype")])
def test_dtd_and_entities_are_refused(payload: bytes) -> None:
    with pytest.raises(ViaObertaError) as info:
        parse_xml(payload)
    assert info.value.code == "viaoberta.xml_forbidden"


def test_oversized_body_is_refused_before_parsing() -> None:
    with pytest.raises(ViaObertaError) as info:
        parse_xml(b"<a>" + b"x" * 2000 + b"</a>", max_bytes=1000)
    assert info.value.code == "viaoberta.too_large"


@pytest.mark.parametrize("payload", [b"", b"<a>", b"not xml", b"<a></b>", b"\xff\xfe<\x00a\x00", "<a/>"])
def test_malformed_input_is_typed(payload: object) -> None:
    with pytest.raises(ViaObertaError) as info:
        parse_xml(payload)  # type: ignore[arg-type]
    assert info.value.code == "viaoberta.malformed"


def _body(content: etree._Element) -> etree._Element:
    body = etree.Element(qname(SOAP11_NS, "Body"))
    body.append(content)
    return parse_xml(etree.tostring(body))


def _respuesta(variant: str = "aoc", product=PADRO, especificos=None, codigo: str = "0003", **kw) -> etree._Element:
    genericos = {
        "Emisor": {"NifEmisor": product.nif_emisor, "NombreEmisor": product.nombre_emisor},
        "Solicitante": {"IdentificadorSolicitante": "L01", "NombreSolicitante": "Aj", "Procedimiento": "P",
                        "Finalidad": "F", "Consentimiento": "Ley",
                        "Funcionario": {"NombreCompletoFuncionario": "Anna", "NifFuncionario": "11111111H"}},
        "Titular": {"TipoDocumentacion": "NIF", "Documentacion": "12345678Z", "NombreCompleto": "M"},
        "Transmision": {"CodigoCertificado": product.codigo_certificado, "IdSolicitud": "R-1",
                        "IdTransmision": "T1", "FechaGeneracion": "2026-01-01T00:00:00.000+00:00"},
    }
    return _body(build_respuesta(variant=variant, request_id="R", product=product, codigo_estado=codigo,
                                 genericos=genericos if codigo == "0003" else None,
                                 especificos=especificos if especificos is not None else dict(product.example), **kw))


@pytest.mark.parametrize("product", list(PRODUCTS.values()), ids=lambda p: p.key)
@pytest.mark.parametrize("variant", ["aoc", "state"])
def test_each_product_example_round_trips(product, variant: str) -> None:
    result = parse_respuesta(_respuesta(variant, product), variant, expected_request_id="R")
    assert isinstance(result, NegativeResult if product is TAX else DataResult)
    assert result.data == product.example
    assert result.evidence.purpose == "F" and result.evidence.consent == "Ley"
    assert result.evidence.modality == product.codigo_certificado
    assert result.evidence.product == product.codigo_producto
    assert result.evidence.id_transmision == "T1"
    assert result.evidence.official_name == "Anna"


def test_repeated_elements_are_always_lists() -> None:
    one_degree = {"Retorno": DEGREES.example["Retorno"],
                  "ListaTitulos": {"DatosTitulacion": DEGREES.example["ListaTitulos"]["DatosTitulacion"][:1]}}
    result = parse_respuesta(_respuesta(product=DEGREES, especificos=one_degree))
    assert isinstance(result.data["ListaTitulos"]["DatosTitulacion"], list)
    generic = etree.fromstring(b"<r><a>1</a><a>2</a><b><c/></b></r>")
    assert element_to_value(generic) == {"a": ["1", "2"], "b": {"c": ""}}


def test_negative_not_found_pending_and_error() -> None:
    negative = parse_respuesta(_respuesta(product=TAX))
    assert isinstance(negative, NegativeResult)
    assert negative.tipo_negativo == "01" and negative.incumplimientos[0]["Codigo"] == "D01"
    not_found = {"Retorno": {"Estado": {"CodigoEstado": "01", "LiteralError": "No consta"}}}
    assert isinstance(parse_respuesta(_respuesta(product=WORKING_LIFE, especificos=not_found)), NotFoundResult)
    pending = parse_respuesta(_respuesta(codigo="0002", tiempo_estimado=2))
    assert pending == PendingResult(7200, "R", "0002")
    assert parse_respuesta(_respuesta(codigo="0001")).retry_after_seconds == 30
    error = parse_respuesta(_respuesta(codigo="0502", literal_error="Falta Finalidad"))
    assert error == ErrorResult("0502", "Falta Finalidad", "R")
    fault = parse_respuesta(_body(build_fault("0301", "No autorizado", request_id="R")))
    assert fault == ErrorResult("0301", "No autorizado", "R")


def test_wrong_namespace() -> None:
    body = _respuesta("state")
    with pytest.raises(ViaObertaError) as info:
        parse_respuesta(body, "aoc")
    assert info.value.code == "viaoberta.missing_element"  # no procesaResponse wrapper
    aoc = _respuesta("aoc")
    aoc_text = etree.tostring(aoc).replace(NAMESPACES["aoc"]["respuesta"].encode(), b"urn:other")
    with pytest.raises(ViaObertaError) as info:
        parse_respuesta(parse_xml(aoc_text), "aoc")
    assert info.value.code == "viaoberta.wrong_namespace"
    wrapper_text = etree.tostring(aoc).replace(OPENURI_NS.encode(), b"urn:other")
    with pytest.raises(ViaObertaError) as info:
        parse_respuesta(parse_xml(wrapper_text), "aoc")
    assert info.value.code == "viaoberta.wrong_namespace"


@pytest.mark.parametrize("element", ["Atributos", "Estado", "CodigoEstado", "IdPeticion", "Transmisiones",
                                     "DatosGenericos", "DatosEspecificos", "Retorno", "VolanteEmpadronamiento",
                                     "Finalidad", "Consentimiento", "FechaGeneracion"])
def test_missing_elements(element: str) -> None:
    body = _respuesta()
    node = next(n for n in body.iter() if isinstance(n.tag, str) and etree.QName(n).localname == element)
    node.getparent().remove(node)
    with pytest.raises(ViaObertaError) as info:
        parse_respuesta(body)
    assert info.value.code == "viaoberta.missing_element"


def test_answer_for_another_request_and_bad_values() -> None:
    with pytest.raises(ViaObertaError) as info:
        parse_respuesta(_respuesta(), expected_request_id="OTHER")
    assert info.value.code == "viaoberta.malformed"
    # A fault is tied to the query too: one for another IdPeticion, or naming none, refuses nothing for
    # good (a replay); one for this query is the query's refusal.
    for named in ("OTHER", ""):
        with pytest.raises(ViaObertaUnavailable) as info:
            parse_respuesta(_body(build_fault("0301", "No autorizado", request_id=named)), expected_request_id="R")
        assert info.value.code == "viaoberta.unavailable"
    fault = parse_respuesta(_body(build_fault("0301", "No autorizado", request_id="R")), expected_request_id="R")
    assert fault == ErrorResult("0301", "No autorizado", "R")
    bad_tax = {"Retorno": TAX.example["Retorno"], "Certificado": {"Resultado": "QUIZAS"}}
    with pytest.raises(ViaObertaError) as info:
        parse_respuesta(_respuesta(product=TAX, especificos=bad_tax))
    assert info.value.code == "viaoberta.malformed"
    pending_text = etree.tostring(_respuesta(codigo="0002"))
    assert b"<TiempoEstimadoRespuesta>0<" in pending_text
    for bad in (b"soon", b"-1"):
        with pytest.raises(ViaObertaError) as info:
            parse_respuesta(parse_xml(pending_text.replace(b"<TiempoEstimadoRespuesta>0<",
                                                           b"<TiempoEstimadoRespuesta>" + bad + b"<")))
        assert info.value.code == "viaoberta.malformed"


@pytest.mark.parametrize("variant", ["aoc", "state"])
def test_peticion_shape(variant: str) -> None:
    request = make_request("12345678Z", "padro", specific={"Consulta.CodigoMunicipio": "08019"})
    content = build_peticion(request, variant)
    ns = NAMESPACES[variant]["peticion"]
    peticion = content[0] if variant == "aoc" else content
    if variant == "aoc":
        assert content.tag == qname(OPENURI_NS, "procesa")
    assert peticion.tag == qname(ns, "Peticion")
    find = lambda path: peticion.findtext("/".join(qname(ns, p) for p in path.split("/")))  # noqa: E731
    assert find("Atributos/CodigoCertificado") == "RESIDENT"
    assert find("Atributos/CodigoProducto") == "PADRO"
    assert find("Atributos/DatosAutorizacion/Finalidad") == request.purpose
    assert find("Solicitudes/SolicitudTransmision/DatosGenericos/Solicitante/Consentimiento") == "Si"
    assert find("Solicitudes/SolicitudTransmision/DatosGenericos/Titular/Documentacion") == "12345678Z"
    assert find("Solicitudes/SolicitudTransmision/DatosGenericos/Emisor/NifEmisor") == PADRO.nif_emisor
    assert find("Solicitudes/SolicitudTransmision/DatosEspecificos/Consulta/CodigoMunicipio") == "08019"
    incoming = parse_peticion(_body(content))
    assert incoming.variant == variant and incoming.request_id == request.request_id
    assert len(request.request_id) <= 26
    poll = parse_peticion(_body(build_solicitud_respuesta(request.request_id, "RESIDENT", variant)))
    assert poll.kind == "SolicitudRespuesta" and poll.codigo_producto == "PADRO"


@pytest.mark.parametrize(("overrides", "code"), [
    ({"purpose": ""}, "viaoberta.bad_request"),
    ({"consent": "Maybe"}, "viaoberta.bad_request"),
    ({"official_name": " "}, "viaoberta.bad_request"),
    ({"official_nif": ""}, "viaoberta.bad_request"),
    ({"subject_document_type": "Passport"}, "viaoberta.bad_request"),
    ({"request_id": "X" * 27}, "viaoberta.bad_request"),
    ({"product": "NOPE"}, "viaoberta.unknown_product"),
    ({"specific": {"Consulta.Other": "1"}}, "viaoberta.bad_request"),
])
def test_invalid_requests_are_not_built(overrides: dict, code: str) -> None:
    with pytest.raises(ViaObertaError) as info:
        options = dict(overrides)
        build_peticion(make_request("12345678Z", options.pop("product", "ECOT103"), **options))
    assert info.value.code == code


def test_product_lookup() -> None:
    assert get_product("AEAT_DADES") is TAX
    assert get_product("working_life") is WORKING_LIFE
    assert get_product("nope") is None
    assert TAX.nif_emisor == "Q2826000H"


def test_the_answer_must_be_for_the_product_asked() -> None:
    # The answer's own CodigoCertificado never decides how it is read: a working-life answer to a
    # tax query is not a tax certificate, whatever it carries.
    carrying_tax = {**dict(WORKING_LIFE.example), "Certificado": {"Resultado": "POSITIVO"}}
    with pytest.raises(ViaObertaError) as info:
        parse_respuesta(_respuesta(product=WORKING_LIFE, especificos=carrying_tax), expected_product="ECOT103")
    assert info.value.code == "viaoberta.malformed"
    assert isinstance(parse_respuesta(_respuesta(product=TAX), expected_product="ECOT103"), NegativeResult)
    # Atributos right, Transmision naming another product.
    text = etree.tostring(_respuesta(product=TAX)).replace(
        b"<CodigoCertificado>ECOT103</CodigoCertificado><IdSolicitud>",
        b"<CodigoCertificado>VIDA_LABORAL</CodigoCertificado><IdSolicitud>")
    with pytest.raises(ViaObertaError) as info:
        parse_respuesta(parse_xml(text), expected_product="ECOT103")
    assert info.value.code == "viaoberta.malformed"


@pytest.mark.parametrize("retorno", ["99", "02", "", "0003"])
def test_only_the_success_retorno_carries_data(retorno: str) -> None:
    data = {**dict(TAX.example), "Retorno": {"Estado": {"CodigoEstado": retorno, "LiteralError": "error"}}}
    result = parse_respuesta(_respuesta(product=TAX, especificos=data), expected_product="ECOT103")
    assert isinstance(result, ErrorResult) and result.literal_error == "error"


@pytest.mark.parametrize("field", ["subject_name", "purpose", "procedure", "official_name", "subject_document"])
@pytest.mark.parametrize("bad", ["Anna\x0bPuig", "Emissi\x01o", "Anna \ud800", "x\ufffe"])
def test_text_xml_cannot_carry_is_a_bad_request(field: str, bad: str) -> None:
    # A name from the identity provider or a tenant's purpose: typed, not lxml's ValueError.
    from dataclasses import replace

    request = replace(make_request("12345678Z", "ECOT103"), **{field: bad})
    with pytest.raises(ViaObertaError) as info:
        build_peticion(request)
    assert info.value.code == "viaoberta.bad_request"
    fine = replace(make_request("12345678Z", "ECOT103"), subject_name="Núria\tD'Àvila Çé 😀")
    assert build_peticion(fine) is not None
