"""Property tests for the Via Oberta parsers: random and mutated input gives only ``ViaObertaError``
with a stable code, never another exception; built messages round-trip through the parsers."""

from __future__ import annotations

import functools
import string
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from viaoberta.errors import ViaObertaError
from viaoberta.messages import (
    build_peticion,
    build_respuesta,
    element_to_value,
    parse_fault,
    parse_peticion,
    parse_respuesta,
    value_to_elements,
)
from viaoberta.products import PADRO, PRODUCTS, TAX
from viaoberta.wssecurity import envelope_body, load_certificate, sign_envelope, verify_envelope
from viaoberta.xmlsafe import SOAP11_NS, parse_xml, qname

from .helpers import identity, make_request

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The costlier properties (a signature or a whole XML message per example) run fewer examples.
FEWER = settings(SETTINGS, max_examples=40)
CODE_PREFIX = "viaoberta."

NAMES = st.text(string.ascii_letters, min_size=1, max_size=8)
TEXT = st.text(string.ascii_letters + string.digits + " -.", min_size=1, max_size=12).map(str.strip).filter(bool)
TREES = st.recursive(TEXT, lambda children: st.dictionaries(NAMES, children, min_size=1, max_size=4), max_leaves=12)


def _typed(error: ViaObertaError) -> None:
    assert error.code.startswith(CODE_PREFIX), error.code
    assert error.detail


def _body(content: etree._Element) -> etree._Element:
    body = etree.Element(qname(SOAP11_NS, "Body"))
    body.append(content)
    return parse_xml(etree.tostring(body))


@functools.cache
def _signed_peticion() -> bytes:
    ident = identity("Cartera issuer (requesting body)")
    return sign_envelope(build_peticion(make_request("12345678Z", "ECOT103")), ident.key_pem, ident.cert_pem)


def _xml_parsers(data: bytes) -> None:
    """Every parser a received message goes through, in the order the client and sandbox use them."""
    root = parse_xml(data)
    body = envelope_body(root)
    verify_envelope(root, [load_certificate(identity("Cartera issuer (requesting body)").cert_pem)])
    parse_fault(body)
    parse_peticion(body)
    parse_respuesta(body)


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_only_typed_errors(data: bytes) -> None:
    try:
        _xml_parsers(data)
    except ViaObertaError as error:
        _typed(error)


@SETTINGS
@given(st.text(max_size=300))
def test_random_xml_like_text_only_typed_errors(text: str) -> None:
    try:
        _xml_parsers(("<?xml version='1.0'?><e:Envelope xmlns:e='" + SOAP11_NS + "'>" + text).encode())
    except ViaObertaError as error:
        _typed(error)


@SETTINGS
@given(st.data())
def test_mutated_signed_envelopes_only_typed_errors(data: st.DataObject) -> None:
    original = _signed_peticion()
    position = data.draw(st.integers(0, len(original) - 1), label="position")
    replacement = data.draw(st.binary(min_size=0, max_size=3), label="replacement")
    mutated = original[:position] + replacement + original[position + 1:]
    try:
        _xml_parsers(mutated)
    except ViaObertaError as error:
        _typed(error)
    else:
        # Accepted only when the mutation kept the signed content (whitespace, attribute order).
        assert parse_peticion(envelope_body(parse_xml(mutated))).codigo_certificado == "ECOT103"


@FEWER
@given(TREES.filter(lambda tree: isinstance(tree, dict)), st.sampled_from(["a", "b"]))
def test_trees_round_trip_through_elements(tree: dict, root_name: str) -> None:
    root = etree.Element(qname("urn:test", root_name))
    value_to_elements(root, tree, "urn:test")
    assert element_to_value(parse_xml(etree.tostring(root))) == tree


@SETTINGS
@given(st.sampled_from(sorted(PRODUCTS)), st.sampled_from(["aoc", "state"]),
       st.text(string.ascii_uppercase + string.digits, min_size=1, max_size=26),
       st.text(string.ascii_letters + " ", min_size=1, max_size=40).map(str.strip).filter(bool))
def test_peticion_round_trips(product: str, variant: str, request_id: str, purpose: str) -> None:
    request = replace(make_request("12345678Z", product), request_id=request_id, purpose=purpose)
    incoming = parse_peticion(_body(build_peticion(request, variant)))
    assert (incoming.variant, incoming.request_id, incoming.kind) == (variant, request_id, "Peticion")
    assert incoming.codigo_certificado == PRODUCTS[product].codigo_certificado
    assert incoming.atributos["DatosAutorizacion"]["Finalidad"] == purpose


@FEWER
@given(st.sampled_from(["aoc", "state"]), st.sampled_from(["0003", "0001", "0002", "0502", "9999", ""]),
       st.one_of(st.none(), st.dictionaries(NAMES, TREES, max_size=3)),
       st.one_of(st.none(), st.dictionaries(NAMES, TREES, max_size=3)))
def test_odd_respuestas_only_typed_errors(variant: str, codigo: str, genericos: dict | None,
                                          especificos: dict | None) -> None:
    """An emitter's answer with any status code and arbitrary generic/specific data parses into a
    result or a typed error."""
    for product in (PADRO, TAX):
        content = build_respuesta(variant=variant, request_id="REQ1", product=product, codigo_estado=codigo,
                                  literal_error="x", tiempo_estimado=1, genericos=genericos, especificos=especificos)
        try:
            result = parse_respuesta(_body(content), variant, expected_request_id="REQ1")
        except ViaObertaError as error:
            _typed(error)
        else:
            assert result is not None


def test_a_signature_value_that_is_not_base64_is_a_bad_signature() -> None:
    # Found by the mutation test above: signxml's schema check raised lxml's DocumentInvalid.
    root = parse_xml(_signed_peticion())
    value = root.find(".//{http://www.w3.org/2000/09/xmldsig#}SignatureValue")
    value.text = value.text[1:]
    try:
        verify_envelope(root, [load_certificate(identity("Cartera issuer (requesting body)").cert_pem)])
    except ViaObertaError as error:
        assert error.code == "viaoberta.bad_signature"
    else:
        raise AssertionError("a truncated SignatureValue verified")
