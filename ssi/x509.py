"""X.509 certificates for issuers and verifiers: a development CA, ``x5c`` chains and their validation.

Issuer keys are announced in the ``x5c`` JOSE header (RFC 7515 §4.1.6, HAIP): a list of standard
base64 (not base64url) DER certificates, leaf first, each certified by the next. :func:`verify_x5c`
validates such a list against configured trust anchors and returns the leaf.

Why we check by hand *and* with ``cryptography.x509.verification``: cryptography's path builder is the
authority on RFC 5280 path validation (signatures, name chaining, name constraints, DER strictness,
validity), but it reports every failure as one ``VerificationError`` with a free-text message, while
our callers (verifier policies, wallet warnings, API errors) need a stable code per failure. So the
chain is first checked step by step, giving each failure its own code, and only then handed to
cryptography's verifier with extension policies that admit our profile (its web-PKI defaults demand
an extendedKeyUsage and a subjectAltName that credential-signing certificates need not carry). A
refusal by that second pass alone is reported as ``x509.unsupported_algorithm``
    a certificate's key is not ECDSA (P-256, P-384, P-521) or RSA of 2048 bits or more; Ed25519
    certificates are refused because cryptography's path validation does not admit them, and
    :func:`create_ca` / :func:`issue_certificate` refuse such keys so they never make one.
``x509.policy_violation``. Trust anchors are trusted
as configured: their own validity dates are not checked, as in RFC 5280 §6.

Error codes (:class:`~ssi.errors.X509Error`), stable:

``x509.malformed_x5c``
    ``x5c`` is not a non-empty list of standard-base64 DER certificates, or a certificate in it
    cannot be parsed.
``x509.malformed_certificate``
    :func:`load_certificate` / :func:`load_der_certificate` / :func:`load_pem_certificates` got bytes
    that are no certificate.
``x509.chain_too_long``
    more than :data:`MAX_CHAIN_LENGTH` certificates.
``x509.expired`` / ``x509.not_yet_valid``
    a certificate of the chain is outside its validity period at ``now``.
``x509.issuer_mismatch``
    a certificate's issuer name is not the subject of the next certificate.
``x509.bad_chain_signature``
    a certificate's signature does not verify with the next certificate's key.
``x509.untrusted_chain``
    the last certificate neither is nor is issued by a trust anchor.
``x509.not_a_ca``
    a certificate that issues another lacks ``basicConstraints`` CA=true (e.g. a leaf used as a CA).
``x509.bad_key_usage``
    an issuing certificate lacks ``keyCertSign``, or the leaf's keyUsage lacks ``digitalSignature``.
``x509.path_length``
    a CA's ``pathLenConstraint`` is exceeded.
``x509.leaf_is_ca``
    the leaf (signing) certificate is itself a CA certificate. This and the leaf's
    ``bad_key_usage`` are checked before the chain is followed to an anchor (after the chain's own
    dates, critical extensions and links), so they win over ``untrusted_chain``.
``x509.unsupported_critical_extension``
    a certificate carries a critical extension this profile does not process.
``x509.unsupported_algorithm``
    a certificate's key is not ECDSA (P-256, P-384, P-521) or RSA of 2048 bits or more; Ed25519
    certificates are refused because cryptography's path validation does not admit them, and
    :func:`create_ca` / :func:`issue_certificate` refuse such keys so they never make one.
``x509.policy_violation``
    cryptography's RFC 5280 path validation refused the chain for another reason.
``x509.unsupported_key``
    :func:`certificate_key` met a key type that has no JOSE algorithm here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from .encoding import b64url_encode
from .errors import JOSEError, X509Error
from .jose import Key

#: Longest ``x5c`` accepted (leaf, intermediates and possibly the anchor).
MAX_CHAIN_LENGTH = 8

#: Organization name that makes development CAs unmistakable wherever their name is shown.
DEVELOPMENT_ORGANIZATION = "Cartera DEVELOPMENT CA - not for production"

# Extensions whose criticality we can honour: the ones checked here or by cryptography's verifier.
_PROCESSED_CRITICAL = frozenset({
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.NAME_CONSTRAINTS,
    ExtensionOID.EXTENDED_KEY_USAGE,
})

# Certificates are back-dated a little so that a relying party whose clock lags still accepts them.
_CLOCK_SKEW = timedelta(minutes=5)


_EC_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


def _supported_public_key(public: Any) -> bool:
    if isinstance(public, ec.EllipticCurvePublicKey):
        return public.curve.name in _EC_CURVES
    return isinstance(public, rsa.RSAPublicKey) and public.key_size >= 2048


def _require_supported(key: Key) -> None:
    if not _supported_public_key(key.public_key):
        raise X509Error("unsupported_algorithm", f"certificates with {key.alg} keys cannot be validated")


# -- creation ------------------------------------------------------------------------------------

def _hash_for(key: Key) -> hashes.HashAlgorithm:
    private = key.private_key
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return {"secp384r1": hashes.SHA384(), "secp521r1": hashes.SHA512()}.get(private.curve.name, hashes.SHA256())
    return hashes.SHA256()


#: Longest commonName and organizationName put in a certificate, in UTF-8 bytes. RFC 5280's upper
#: bounds (ub-common-name, ub-organization-name) are 64 characters; cryptography refuses a commonName
#: over 64 bytes of UTF-8, which for "Ajuntament de l'Hospitalet..." is the tighter of the two.
NAME_MAX_BYTES = 64
_ELLIPSIS = "\u2026"


def _continues_cluster(char: str) -> bool:
    """Whether ``char`` belongs to the character before it (a combining mark, a joiner, a variation
    selector): a name is never cut just before one."""
    return unicodedata.category(char).startswith("M") or char in "\u200c\u200d" or \
        "\ufe00" <= char <= "\ufe0f"


def fit_name(text: str, max_bytes: int = NAME_MAX_BYTES) -> str:
    """``text`` as a certificate name attribute of at most ``max_bytes`` bytes of UTF-8.

    A text that fits is returned as it is. A longer one (an agency's or a tenant's display name may
    be 200 characters) is cut at a character boundary — never inside a UTF-8 sequence, nor between
    a letter and its combining accent — with trailing spaces dropped and "…" added, so that whoever
    reads the certificate sees that the name goes on.
    """
    if len(text.encode("utf-8")) <= max_bytes:
        return text
    budget = max_bytes - len(_ELLIPSIS.encode("utf-8"))
    cut, used = 0, 0
    for char in text:
        size = len(char.encode("utf-8"))
        if used + size > budget:
            break
        used += size
        cut += 1
    while cut > 0 and (_continues_cluster(text[cut]) or text[cut - 1] in "\u200c\u200d"):
        cut -= 1
    return text[:cut].rstrip() + _ELLIPSIS


def _name(common_name: str, organization: str | None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, fit_name(common_name))]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, fit_name(organization)))
    return x509.Name(attributes)


def create_ca(common_name: str, *, key: Key | None = None, days: int = 3650, development: bool = True,
              organization: str | None = None, not_before: datetime | None = None) -> tuple[Key, x509.Certificate]:
    """Create a self-signed root CA certificate (and an ES256 P-256 key unless ``key`` is given).

    The validity starts at ``not_before`` (default: a few minutes ago, for clock skew).

    With ``development`` the organization names it a development CA, so that no one mistakes it for
    a production trust anchor when its name is shown in a wallet or a log.
    """
    key = key or Key.generate("ES256")
    _require_supported(key)
    if development:
        # The marker is kept whole: a long organization is shortened before it, never the marker.
        marker = f" - {DEVELOPMENT_ORGANIZATION}"
        organization = (f"{fit_name(organization, NAME_MAX_BYTES - len(marker.encode()))}{marker}" if organization
                        else DEVELOPMENT_ORGANIZATION)
    name = _name(common_name, organization)
    start = not_before if not_before is not None else datetime.now(UTC) - _CLOCK_SKEW
    public = key.public_key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    cert = builder.sign(key.private_key, _hash_for(key))  # type: ignore[arg-type]
    return key, cert


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                         encipher_only=False, decipher_only=False)


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                         encipher_only=False, decipher_only=False)


def issue_certificate(ca_key: Key, ca_cert: x509.Certificate, subject_key: Key, common_name: str, *,
                      san_uris: Sequence[str] = (), san_dns: Sequence[str] = (), days: int = 365,
                      is_ca: bool = False, path_length: int | None = None, organization: str | None = None,
                      not_before: datetime | None = None) -> x509.Certificate:
    """Issue a certificate for ``subject_key`` signed by ``ca_key``/``ca_cert``.

    A leaf (default) gets keyUsage digitalSignature and CA=false; with ``is_ca`` an intermediate CA
    (keyCertSign, cRLSign, optional ``path_length``). The validity starts at ``not_before`` (default:
    a few minutes ago) and lasts ``days``.
    """
    _require_supported(ca_key)
    _require_supported(subject_key)
    start = not_before if not_before is not None else datetime.now(UTC) - _CLOCK_SKEW
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    public = subject_key.public_key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organization))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length if is_ca else None), critical=True)
        .add_extension(_ca_key_usage() if is_ca else _leaf_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    builder = builder.add_extension(aki, critical=False)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in san_uris]
    names += [x509.DNSName(d) for d in san_dns]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key.private_key, _hash_for(ca_key))  # type: ignore[arg-type]


# -- encodings -----------------------------------------------------------------------------------

def cert_to_x5c(cert: x509.Certificate) -> str:
    """One ``x5c`` entry: standard base64 (with padding) of the DER, as RFC 7515 §4.1.6 requires."""
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


def x5c_from_chain(certs: Sequence[x509.Certificate]) -> list[str]:
    """The ``x5c`` header value for a chain given leaf first."""
    return [cert_to_x5c(cert) for cert in certs]


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order; at least one."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except (ValueError, TypeError, x509.InvalidVersion) as exc:
        raise X509Error("malformed_certificate", "not a PEM certificate bundle") from exc
    if not certs:
        raise X509Error("malformed_certificate", "the PEM bundle holds no certificate")
    return [_fully_parsed(cert, "malformed_certificate") for cert in certs]


def _fully_parsed(cert: x509.Certificate, code: str) -> x509.Certificate:
    """Force cryptography's lazy parsing of names, extensions and key, so that malformed content
    fails here with ``code`` instead of surfacing later as an untyped error."""
    try:
        _ = (cert.subject, cert.issuer, cert.extensions, cert.not_valid_before_utc,
             cert.not_valid_after_utc, cert.signature_algorithm_oid)
        cert.public_key()
    except UnsupportedAlgorithm as exc:
        raise X509Error("unsupported_algorithm", "a certificate has an unknown key type") from exc
    except Exception as exc:  # noqa: BLE001 - cryptography raises a zoo of types (DuplicateExtension,
        # UnsupportedGeneralNameType, ValueError...) for malformed content; all mean "malformed" here.
        raise X509Error(code, "the certificate's content is malformed") from exc
    if cert.serial_number <= 0:  # RFC 5280 §4.1.2.2; cryptography only warns about it
        raise X509Error(code, "the certificate has a non-positive serial number")
    return cert


def load_der_certificate(der: bytes, *, code: str = "malformed_certificate") -> x509.Certificate:
    """One DER certificate, fully parsed: every way the bytes can be malformed (a bad version
    byte, bad names or extensions, an unknown key type) raises :class:`~ssi.errors.X509Error`
    with ``code`` (``x509.unsupported_algorithm`` for an unknown key type), never a bare
    ``cryptography`` or ``ValueError`` exception."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except (ValueError, TypeError, x509.InvalidVersion) as exc:
        raise X509Error(code, "not a DER certificate") from exc
    return _fully_parsed(cert, code)


def load_certificate(der_or_pem: bytes) -> x509.Certificate:
    """One certificate from DER or PEM bytes."""
    try:
        if der_or_pem.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(der_or_pem)
        else:
            cert = x509.load_der_x509_certificate(der_or_pem)
    except (ValueError, TypeError, AttributeError, x509.InvalidVersion) as exc:
        raise X509Error("malformed_certificate", "not a DER or PEM certificate") from exc
    return _fully_parsed(cert, "malformed_certificate")


def _decode_x5c(x5c: Any) -> list[x509.Certificate]:
    if not isinstance(x5c, list) or not x5c:
        raise X509Error("malformed_x5c", "x5c must be a non-empty list")
    if len(x5c) > MAX_CHAIN_LENGTH:
        raise X509Error("chain_too_long", f"x5c holds more than {MAX_CHAIN_LENGTH} certificates")
    chain = []
    for entry in x5c:
        if not isinstance(entry, str):
            raise X509Error("malformed_x5c", "every x5c entry must be a string")
        try:
            der = binascii.a2b_base64(entry.encode("ascii"), strict_mode=True)
        except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
            raise X509Error("malformed_x5c", "an x5c entry is not standard base64 of a DER certificate") from exc
        cert = load_der_certificate(der, code="malformed_x5c")
        if not _supported_public_key(cert.public_key()):
            raise X509Error("unsupported_algorithm", "an x5c certificate's key type is not accepted")
        chain.append(cert)
    return chain


def authority_key_identifiers(x5c: Any) -> frozenset[str]:
    """The ``keyIdentifier`` of every Authority Key Identifier in an ``x5c`` chain, base64url-encoded:
    the values an OpenID4VP ``trusted_authorities`` query of type ``aki`` names (OpenID4VP 1.0
    §6.1.1). A leaf alone still yields its CA's identifier. Raises ``X509Error`` for a bad ``x5c``."""
    found = set()
    for cert in _decode_x5c(x5c):
        aki = _extension(cert, x509.AuthorityKeyIdentifier)
        if aki is not None and aki.key_identifier:
            found.add(b64url_encode(aki.key_identifier))
    return frozenset(found)


# -- validation ----------------------------------------------------------------------------------

def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _extension(cert: x509.Certificate, cls: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _check_validity(cert: x509.Certificate, now: datetime, position: str) -> None:
    if now > cert.not_valid_after_utc:
        raise X509Error("expired", f"the {position} certificate has expired")
    if now < cert.not_valid_before_utc:
        raise X509Error("not_yet_valid", f"the {position} certificate is not valid yet")


def _check_issued_by(child: x509.Certificate, parent: x509.Certificate, position: str) -> None:
    if child.issuer != parent.subject:
        raise X509Error("issuer_mismatch", f"the {position} certificate is not issued by the next one")
    try:
        child.verify_directly_issued_by(parent)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError) as exc:
        raise X509Error("bad_chain_signature", f"the {position} certificate's signature does not verify") from exc


def _check_issuer_ca(cert: x509.Certificate, below: int, position: str) -> None:
    """``cert`` issues other certificates; ``below`` is how many intermediate CAs lie beneath it."""
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise X509Error("not_a_ca", f"the {position} certificate issues others but is not a CA")
    usage = _extension(cert, x509.KeyUsage)
    if usage is None or not usage.key_cert_sign:
        raise X509Error("bad_key_usage", f"the {position} certificate may not sign certificates")
    if constraints.path_length is not None and below > constraints.path_length:
        raise X509Error("path_length", f"the {position} certificate's path length constraint is exceeded")


def _check_critical(cert: x509.Certificate, position: str) -> None:
    for extension in cert.extensions:
        if extension.critical and extension.oid not in _PROCESSED_CRITICAL:
            raise X509Error("unsupported_critical_extension",
                            f"the {position} certificate has an unsupported critical extension")


def _position(index: int) -> str:
    return "leaf" if index == 0 else f"intermediate #{index}"


def verify_x5c(x5c: Any, trust_anchors: Sequence[x509.Certificate], *,
               now: datetime | None = None) -> x509.Certificate:
    """Validate an ``x5c`` chain against ``trust_anchors`` at ``now`` and return its leaf.

    The chain may end with the trust anchor itself or with a certificate it issued. A single
    certificate that is itself a trust anchor (a pinned leaf) is accepted as such.
    Raises :class:`~ssi.errors.X509Error` with the codes listed in the module docstring.
    """
    chain = _decode_x5c(x5c)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    anchor_ders = {_der(anchor) for anchor in trust_anchors}

    # An anchor sent inside x5c is dropped: its trust comes from configuration, not from the token.
    path = list(chain)
    anchor: x509.Certificate | None = None
    if len(path) > 1 and _der(path[-1]) in anchor_ders:
        anchor = path.pop()
    pinned = len(path) == 1 and anchor is None and _der(path[0]) in anchor_ders

    for index, cert in enumerate(path):
        _check_validity(cert, now, _position(index))
    for index, cert in enumerate(path):
        _check_critical(cert, _position(index))
    for index in range(len(path) - 1):
        _check_issued_by(path[index], path[index + 1], _position(index))
    # The leaf's own rules come before any chain decision, so that a caller admitting an untrusted
    # chain (OpenID4VP's allow_untrusted) never gets 'untrusted_chain' for a CA certificate, or one
    # without digitalSignature, that signs: those stay hard failures.
    leaf = path[0]
    constraints = _extension(leaf, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        raise X509Error("leaf_is_ca", "the signing certificate is a CA certificate")
    usage = _extension(leaf, x509.KeyUsage)
    if usage is not None and not usage.digital_signature:
        raise X509Error("bad_key_usage", "the signing certificate may not make digital signatures")
    if not pinned:
        last = path[-1]
        if anchor is None:
            candidates = [a for a in trust_anchors if a.subject == last.issuer]
            for candidate in candidates:
                try:
                    last.verify_directly_issued_by(candidate)
                except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
                    continue  # another anchor with the same name may be the issuer
                anchor = candidate
                break
            if anchor is None:
                raise X509Error("untrusted_chain", "the chain does not lead to a configured trust anchor")
        else:
            _check_issued_by(last, anchor, _position(len(path) - 1))
        for index in range(1, len(path)):
            _check_issuer_ca(path[index], index - 1, _position(index))
        _check_issuer_ca(anchor, len(path) - 1, "trust anchor")

    if not pinned:
        _cryptography_path_validation(leaf, path[1:], anchor, now)  # type: ignore[arg-type]
    return leaf


# cryptography insists that a CA policy requires basicConstraints; its values were checked above.
_CA_POLICY = ExtensionPolicy.permit_all().require_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)


def _cryptography_path_validation(leaf: x509.Certificate, intermediates: list[x509.Certificate],
                                  anchor: x509.Certificate, now: datetime) -> None:
    # The checks above proved the chain's shape; this second pass lets cryptography's RFC 5280
    # implementation catch what we do not re-implement (name constraints, DER and serial rules,
    # algorithm policy). Both extension policies are permissive because the CA rules of our
    # profile were enforced above and our leaves carry neither EKU nor, always, a SAN.
    builder = (
        PolicyBuilder()
        .store(Store([anchor]))
        .time(now.astimezone(UTC))
        .max_chain_depth(MAX_CHAIN_LENGTH)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=ExtensionPolicy.permit_all())
    )
    try:
        builder.build_client_verifier().verify(leaf, intermediates)
    except VerificationError as exc:
        raise X509Error("policy_violation", "the chain fails RFC 5280 path validation") from exc


# -- inspection ----------------------------------------------------------------------------------

def certificate_key(cert: x509.Certificate) -> Key:
    """The certificate's public key as a :class:`~ssi.jose.Key` (algorithm from the key type)."""
    try:
        public = cert.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise X509Error("unsupported_key", "the certificate's key type is not supported") from exc
    if isinstance(public, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        try:
            return Key.from_cryptography(public)
        except JOSEError as exc:
            raise X509Error("unsupported_key", "the certificate's key has no supported JOSE algorithm") from exc
    raise X509Error("unsupported_key", "the certificate's key type is not supported")


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return _extension(cert, x509.SubjectAlternativeName)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise X509Error("malformed_certificate", "the subjectAltName extension is malformed") from exc


def san_uris(cert: x509.Certificate) -> list[str]:
    """The URIs in the certificate's subjectAltName."""
    san = _san(cert)
    return list(san.get_values_for_type(x509.UniformResourceIdentifier)) if san else []


def san_dns_names(cert: x509.Certificate) -> list[str]:
    """The DNS names in the certificate's subjectAltName."""
    san = _san(cert)
    return list(san.get_values_for_type(x509.DNSName)) if san else []


def san_matches(cert: x509.Certificate, expected: str) -> bool:
    """Whether the certificate's subjectAltName names ``expected``, as SD-JWT VC binds an ``iss`` to an
    ``x5c`` leaf (draft-ietf-oauth-sd-jwt-vc, section 3.5).

    A URL matches a SAN URI exactly, and only that: several issuers may share one host (Cartera's
    tenants are ``https://host/t/<slug>``), so a DNS SAN equal to the URL's host would let any of them
    sign as any other. A DNS name, bare or as a ``dns:`` URI (RFC 4501), matches a DNS SAN, ignoring
    case. Wildcard DNS names are not honoured: an issuer's certificate names its host.
    """
    if not isinstance(expected, str) or not expected:
        return False
    if "://" in expected:
        return expected in san_uris(cert)
    host = expected[4:] if expected[:4].lower() == "dns:" else expected
    host = host.lower().rstrip(".")
    if not host or "/" in host or "?" in host:
        return False
    return any(name.lower().rstrip(".") == host for name in san_dns_names(cert))


def x509_hash(cert: x509.Certificate) -> str:
    """base64url (no padding) of SHA-256 over the DER: the value of OpenID4VP's ``x509_hash:`` prefix."""
    return b64url_encode(hashlib.sha256(_der(cert)).digest())


def certificate_subject_name(cert: x509.Certificate) -> str:
    """A readable name for the certificate's subject: its organization, else its common name."""
    for oid in (NameOID.ORGANIZATION_NAME, NameOID.COMMON_NAME):
        values = cert.subject.get_attributes_for_oid(oid)
        if values:
            value = values[0].value
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return cert.subject.rfc4514_string()
