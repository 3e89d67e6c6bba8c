"""WS-Security for SCSP v3: sign the SOAP Body, and verify a signed answer against pinned certificates.

Library choice: ``signxml`` (pure Python over lxml and ``cryptography``, maintained, already a
dependency). It has no WS-Security layer of its own, but its *detached* mode signs any element
referenced by ``#Id`` and resolves ``Id`` attributes by local name, so ``wsu:Id`` works; exclusive
c14n (``http://www.w3.org/2001/10/xml-exc-c14n#``) is used for ``SignedInfo`` and as the reference
transform, which keeps the Body's digest independent of the envelope's namespace declarations.
We add the WS-Security parts ourselves: a ``wsse:BinarySecurityToken`` (X.509v3, base64 DER) in the
``wsse:Security`` header, and a ``ds:KeyInfo`` holding a ``wsse:SecurityTokenReference`` to it.
``xmlsec`` (bindings to libxmlsec1) would also do, but needs a native library at the exact
version lxml was built against, which makes a plain ``pip install`` fragile; nothing here needs
its extra breadth (encryption, many key formats).

Verification (:func:`verify_envelope`) pins the platform's certificates: the token's certificate
must be byte-identical to one configured, and only RSA-SHA256/ECDSA-SHA256 with SHA-256 digests
and exclusive c14n are accepted. To defeat signature wrapping, the caller gets back the element
``signxml`` returns as signed (re-parsed from the canonical bytes that were digested), after
checking it is a SOAP ``Body`` whose ``wsu:Id`` is the one referenced and the envelope's only Body.

``signxml`` logs canonicalized payloads at DEBUG level; those are registry data, so its logger is
held at WARNING here (see "No source data is logged" in the issue).
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from signxml import DigestAlgorithm, SignatureConstructionMethod, SignatureMethod, XMLSigner, XMLVerifier
from signxml.exceptions import (
    InvalidCertificate,
    InvalidDigest,
    InvalidInput,
    InvalidSignature,
    SignXMLException,
)
from signxml.verifier import SignatureConfiguration

from .errors import ViaObertaError
from .xmlsafe import DS_NS, SOAP11_NS, WSSE_NS, WSU_NS, local_name, qname

logging.getLogger("signxml").setLevel(logging.WARNING)

EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
X509V3 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"
BASE64_BINARY = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
_WSU_ID = qname(WSU_NS, "Id")
_ALLOWED_METHODS = frozenset({SignatureMethod.RSA_SHA256, SignatureMethod.ECDSA_SHA256})


def load_certificate(pem: bytes) -> x509.Certificate:
    """Load one PEM certificate, as a typed error when it is not one."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except (ValueError, TypeError) as exc:
        raise ViaObertaError("bad_certificate", "not a PEM X.509 certificate") from exc


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """Load the WS-Security signing key (RSA or P-256), as a typed error when it is not one."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ViaObertaError("bad_key", "not an unencrypted PEM private key") from exc
    if isinstance(key, rsa.RSAPrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ViaObertaError("bad_key", "WS-Security signing needs an RSA or P-256 key")


def sign_envelope(body_content: etree._Element, key_pem: bytes, cert_pem: bytes) -> bytes:
    """Wrap ``body_content`` in a SOAP 1.1 envelope whose Body is signed with WS-Security; return the bytes."""
    key = load_private_key(key_pem)
    cert = load_certificate(cert_pem)
    token_id = "X509-" + secrets.token_hex(8)
    body_id = "Body-" + secrets.token_hex(8)
    envelope = etree.Element(qname(SOAP11_NS, "Envelope"),
                             nsmap={"soapenv": SOAP11_NS, "wsse": WSSE_NS, "wsu": WSU_NS})
    header = etree.SubElement(envelope, qname(SOAP11_NS, "Header"))
    security = etree.SubElement(header, qname(WSSE_NS, "Security"), {qname(SOAP11_NS, "mustUnderstand"): "1"})
    token = etree.SubElement(security, qname(WSSE_NS, "BinarySecurityToken"),
                             {"EncodingType": BASE64_BINARY, "ValueType": X509V3, _WSU_ID: token_id})
    token.text = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
    body = etree.SubElement(envelope, qname(SOAP11_NS, "Body"), {_WSU_ID: body_id})
    body.append(body_content)

    key_info = etree.Element(qname(DS_NS, "KeyInfo"), nsmap={"ds": DS_NS})
    reference = etree.SubElement(etree.SubElement(key_info, qname(WSSE_NS, "SecurityTokenReference"),
                                                  nsmap={"wsse": WSSE_NS}),
                                 qname(WSSE_NS, "Reference"))
    reference.set("URI", f"#{token_id}")
    reference.set("ValueType", X509V3)
    method = SignatureMethod.RSA_SHA256 if isinstance(key, rsa.RSAPrivateKey) else SignatureMethod.ECDSA_SHA256
    signer = XMLSigner(method=SignatureConstructionMethod.detached, signature_algorithm=method,
                       digest_algorithm=DigestAlgorithm.SHA256, c14n_algorithm=EXC_C14N)
    try:
        signature = signer.sign(envelope, key=key, reference_uri=[f"#{body_id}"], key_info=key_info)
    except SignXMLException as exc:
        raise ViaObertaError("signing_failed", "could not sign the SOAP Body") from exc
    security.append(signature)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def unsigned_envelope(body_content: etree._Element) -> bytes:
    """A SOAP 1.1 envelope without WS-Security (used for faults the sandbox cannot sign, and in tests)."""
    envelope = etree.Element(qname(SOAP11_NS, "Envelope"), nsmap={"soapenv": SOAP11_NS})
    etree.SubElement(envelope, qname(SOAP11_NS, "Body")).append(body_content)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def envelope_body(root: etree._Element) -> etree._Element:
    """The envelope's single SOAP Body (unverified), checking the envelope's shape."""
    if local_name(root) != "Envelope":
        raise ViaObertaError("missing_element", "not a SOAP Envelope")
    if root.tag != qname(SOAP11_NS, "Envelope"):
        raise ViaObertaError("wrong_namespace", "the Envelope is not SOAP 1.1")
    bodies = root.findall(qname(SOAP11_NS, "Body"))
    if len(bodies) != 1:
        raise ViaObertaError("missing_element" if not bodies else "malformed", "the Envelope must hold one Body")
    if len(root.findall(f".//{qname(SOAP11_NS, 'Body')}")) != 1:
        raise ViaObertaError("malformed", "a second SOAP Body is nested in the message")
    return bodies[0]


def is_signed(root: etree._Element) -> bool:
    """True when the envelope carries any XML signature."""
    return root.find(f".//{qname(DS_NS, 'Signature')}") is not None


def verify_envelope(root: etree._Element, trusted: list[x509.Certificate]) -> tuple[etree._Element, x509.Certificate]:
    """Verify the WS-Security signature over the Body; return ``(signed Body, signer certificate)``.

    Raises ``viaoberta.unsigned`` when there is no signature, ``viaoberta.untrusted_signer`` when
    the token is not one of ``trusted``, ``viaoberta.bad_signature`` for anything else wrong.
    """
    body = envelope_body(root)
    signatures = root.findall(f".//{qname(DS_NS, 'Signature')}")
    security = root.find(f"{qname(SOAP11_NS, 'Header')}/{qname(WSSE_NS, 'Security')}")
    if not signatures:
        raise ViaObertaError("unsigned", "the message carries no WS-Security signature")
    if security is None or len(signatures) != 1 or signatures[0].getparent() is not security:
        raise ViaObertaError("bad_signature", "exactly one signature is expected, in the wsse:Security header")
    signature = signatures[0]

    token_ref = signature.find(f"{qname(DS_NS, 'KeyInfo')}/{qname(WSSE_NS, 'SecurityTokenReference')}/"
                               f"{qname(WSSE_NS, 'Reference')}")
    uri = token_ref.get("URI", "") if token_ref is not None else ""
    if not uri.startswith("#"):
        raise ViaObertaError("bad_signature", "KeyInfo must reference a BinarySecurityToken")
    tokens = [t for t in security.findall(qname(WSSE_NS, "BinarySecurityToken")) if t.get(_WSU_ID) == uri[1:]]
    if len(tokens) != 1 or tokens[0].get("ValueType") != X509V3:
        raise ViaObertaError("bad_signature", "the referenced X.509 BinarySecurityToken is missing")
    try:
        der = base64.b64decode((tokens[0].text or "").strip(), validate=True)
        cert = x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError) as exc:
        raise ViaObertaError("bad_signature", "the BinarySecurityToken is not an X.509 certificate") from exc
    if not any(der == t.public_bytes(serialization.Encoding.DER) for t in trusted):
        raise ViaObertaError("untrusted_signer", "the signing certificate is not a configured platform certificate")

    signed_info = signature.find(qname(DS_NS, "SignedInfo"))
    if signed_info is None:
        raise ViaObertaError("bad_signature", "SignedInfo is missing")
    c14n = signed_info.find(qname(DS_NS, "CanonicalizationMethod"))
    references = signed_info.findall(qname(DS_NS, "Reference"))
    body_id = body.get(_WSU_ID)
    if c14n is None or c14n.get("Algorithm") != EXC_C14N:
        raise ViaObertaError("bad_signature", "SignedInfo must use exclusive c14n")
    if not body_id or len(references) != 1 or references[0].get("URI") != f"#{body_id}":
        raise ViaObertaError("bad_signature", "the signature must cover exactly the SOAP Body")

    config = SignatureConfiguration(
        require_x509=True, location=f"./{{{SOAP11_NS}}}Header/{{{WSSE_NS}}}Security/", expect_references=1,
        signature_methods=_ALLOWED_METHODS, digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
    )
    try:
        result = XMLVerifier().verify(root, x509_cert=cert, expect_config=config)
    except (InvalidSignature, InvalidDigest, InvalidCertificate, InvalidInput, SignXMLException) as exc:
        raise ViaObertaError("bad_signature", "the WS-Security signature does not verify") from exc
    except (ValueError, TypeError, binascii.Error, etree.DocumentInvalid, etree.C14NError) as exc:
        # DocumentInvalid: signxml checks the Signature against the XML-DSig schema (e.g. a
        # SignatureValue that is not base64) and lets lxml's error through; C14NError: lxml cannot
        # canonicalize the signed element of an altered document (found by the mutation test).
        raise ViaObertaError("bad_signature", "the WS-Security signature is malformed") from exc
    signed = result.signed_xml if not isinstance(result, list) else None
    if signed is None or signed.tag != qname(SOAP11_NS, "Body") or signed.get(_WSU_ID) != body_id:
        raise ViaObertaError("bad_signature", "the signed element is not the SOAP Body")
    return signed, cert
