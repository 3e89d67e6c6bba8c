"""WS-Security signing and verification, including signature-wrapping attempts."""

from __future__ import annotations

import copy

import pytest
from lxml import etree

from viaoberta.errors import ViaObertaError
from viaoberta.messages import build_peticion, parse_peticion
from viaoberta.wssecurity import load_certificate, sign_envelope, unsigned_envelope, verify_envelope
from viaoberta.xmlsafe import DS_NS, SOAP11_NS, WSSE_NS, WSU_NS, parse_xml, qname

from .helpers import identity, make_request


def _signed(key_type: str = "rsa") -> tuple[bytes, list]:
    ident = identity(f"signer-{key_type}", key_type)
    data = sign_envelope(build_peticion(make_request("12345678Z", "ECOT103")), ident.key_pem, ident.cert_pem)
    return data, [load_certificate(ident.cert_pem)]


def _code(data: bytes | etree._Element, trusted: list) -> str:
    root = data if isinstance(data, etree._Element) else parse_xml(data)
    with pytest.raises(ViaObertaError) as info:
        verify_envelope(root, trusted)
    return info.value.code


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
def test_sign_and_verify(key_type: str) -> None:
    data, trusted = _signed(key_type)
    root = parse_xml(data)
    body, cert = verify_envelope(root, trusted)
    assert body.tag == qname(SOAP11_NS, "Body")
    assert cert == trusted[0]
    assert parse_peticion(body).codigo_certificado == "ECOT103"
    signature = root.find(f".//{qname(DS_NS, 'Signature')}")
    assert signature.getparent().tag == qname(WSSE_NS, "Security")
    method = signature.find(f"{qname(DS_NS, 'SignedInfo')}/{qname(DS_NS, 'SignatureMethod')}").get("Algorithm")
    assert method.endswith("rsa-sha256" if key_type == "rsa" else "ecdsa-sha256")
    token_ref = signature.find(f".//{qname(WSSE_NS, 'SecurityTokenReference')}/{qname(WSSE_NS, 'Reference')}")
    assert root.find(f".//{qname(WSSE_NS, 'BinarySecurityToken')}").get(qname(WSU_NS, "Id")) == token_ref.get("URI")[1:]


def test_tampered_body_fails() -> None:
    data, trusted = _signed()
    assert _code(data.replace(b"12345678Z", b"87654321X"), trusted) == "viaoberta.bad_signature"


def test_tampered_signature_value_fails() -> None:
    data, trusted = _signed()
    root = parse_xml(data)
    value = root.find(f".//{qname(DS_NS, 'SignatureValue')}")
    value.text = ("A" if value.text[0] != "A" else "B") + value.text[1:]
    assert _code(root, trusted) == "viaoberta.bad_signature"


def test_unsigned_and_untrusted() -> None:
    assert _code(unsigned_envelope(build_peticion(make_request("12345678Z", "ECOT103"))), []) == "viaoberta.unsigned"
    data, _ = _signed()
    other = [load_certificate(identity("someone else").cert_pem)]
    assert _code(data, other) == "viaoberta.untrusted_signer"


def test_wrapping_the_signed_body_elsewhere_fails() -> None:
    data, trusted = _signed()
    root = parse_xml(data)
    body = root.find(qname(SOAP11_NS, "Body"))
    # Classic wrapping: keep the signed Body in the header, put a forged one in its place.
    header = root.find(qname(SOAP11_NS, "Header"))
    wrapper = etree.SubElement(header, "Wrapper")
    wrapper.append(copy.deepcopy(body))
    for element in body.iter():
        if element.text == "12345678Z":
            element.text = "87654321X"
    assert _code(root, trusted) in ("viaoberta.malformed", "viaoberta.bad_signature")


def test_forged_body_with_a_new_id_fails() -> None:
    data, trusted = _signed()
    root = parse_xml(data)
    body = root.find(qname(SOAP11_NS, "Body"))
    body.set(qname(WSU_NS, "Id"), "forged")
    assert _code(root, trusted) == "viaoberta.bad_signature"


def test_second_signature_or_moved_signature_fails() -> None:
    data, trusted = _signed()
    root = parse_xml(data)
    signature = root.find(f".//{qname(DS_NS, 'Signature')}")
    root.find(qname(SOAP11_NS, "Body")).append(copy.deepcopy(signature))
    assert _code(root, trusted) == "viaoberta.bad_signature"
    root = parse_xml(data)
    signature = root.find(f".//{qname(DS_NS, 'Signature')}")
    root.find(qname(SOAP11_NS, "Header")).append(signature)
    assert _code(root, trusted) == "viaoberta.bad_signature"


def test_missing_token_and_bad_token() -> None:
    data, trusted = _signed()
    root = parse_xml(data)
    token = root.find(f".//{qname(WSSE_NS, 'BinarySecurityToken')}")
    token.getparent().remove(token)
    assert _code(root, trusted) == "viaoberta.bad_signature"
    root = parse_xml(data)
    root.find(f".//{qname(WSSE_NS, 'BinarySecurityToken')}").text = "not base64!"
    assert _code(root, trusted) == "viaoberta.bad_signature"


def test_envelope_shape_errors() -> None:
    _, trusted = _signed()
    assert _code(parse_xml(b"<a/>"), trusted) == "viaoberta.missing_element"
    assert _code(parse_xml(b'<e:Envelope xmlns:e="urn:x"><e:Body/></e:Envelope>'), trusted) == "viaoberta.wrong_namespace"
    assert _code(parse_xml(f'<e:Envelope xmlns:e="{SOAP11_NS}"/>'.encode()), trusted) == "viaoberta.missing_element"
