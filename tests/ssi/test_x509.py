"""X.509: development CA, issuance, x5c encoding and chain validation with a code per failure."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID, ObjectIdentifier
from hypothesis import given, settings
from hypothesis import strategies as st

from ssi import x509 as ssi_x509
from ssi.encoding import b64url_decode
from ssi.errors import SSIError, X509Error
from ssi.jose import Key, sign_jws, verify_jws
from ssi.x509 import (
    DEVELOPMENT_ORGANIZATION,
    MAX_CHAIN_LENGTH,
    cert_to_pem,
    cert_to_x5c,
    certificate_key,
    certificate_subject_name,
    create_ca,
    issue_certificate,
    load_certificate,
    load_pem_certificates,
    san_dns_names,
    san_matches,
    san_uris,
    verify_x5c,
    x5c_from_chain,
    x509_hash,
)

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def pki():
    """root -> intermediate (pathlen 0) -> leaf, plus a directly issued leaf."""
    root_key, root = create_ca("Cartera Test Root")
    inter_key = Key.generate("ES256")
    inter = issue_certificate(root_key, root, inter_key, "Test Issuing CA", is_ca=True, path_length=0)
    leaf_key = Key.generate("ES256")
    leaf = issue_certificate(inter_key, inter, leaf_key, "Issuer signing key", organization="Ajuntament de Prova",
                             san_uris=["https://issuer.example.org/tenant"], san_dns=["issuer.example.org"])
    direct_key = Key.generate("ES256")
    direct = issue_certificate(root_key, root, direct_key, "Direct leaf", san_dns=["direct.example"])
    return {"root_key": root_key, "root": root, "inter_key": inter_key, "inter": inter,
            "leaf_key": leaf_key, "leaf": leaf, "direct_key": direct_key, "direct": direct}


def code_of(excinfo: pytest.ExceptionInfo[X509Error]) -> str:
    return excinfo.value.code


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _custom_cert(issuer_key: Key, issuer_name: x509.Name, subject_key: Key, cn: str,
                 extensions: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    """A certificate with exactly the given extensions, for shapes issue_certificate never makes."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer_name)
        .public_key(subject_key.public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=30))
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(issuer_key.private_key, hashes.SHA256())


def _key_usage(**flags: bool) -> x509.KeyUsage:
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"]
    return x509.KeyUsage(**{n: flags.get(n, False) for n in names})


# -- creation and encodings ----------------------------------------------------------------------

def test_create_ca_is_marked_development_and_is_a_ca(pki):
    root = pki["root"]
    assert root.subject == root.issuer
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    assert root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert certificate_subject_name(root) == DEVELOPMENT_ORGANIZATION
    assert pki["root_key"].alg == "ES256"
    root.verify_directly_issued_by(root)


def test_create_ca_production_keeps_given_name_and_key():
    key = Key.generate("ES384")
    got_key, cert = create_ca("Agency Root", key=key, development=False, organization="Agència Oberta", days=10)
    assert got_key is key
    assert certificate_subject_name(cert) == "Agència Oberta"
    assert "DEVELOPMENT" not in cert.subject.rfc4514_string()
    assert certificate_key(cert).thumbprint() == key.thumbprint()
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= timedelta(days=10, minutes=6)


def test_create_ca_development_with_organization_still_marked():
    _, cert = create_ca("Root", organization="Ajuntament")
    name = certificate_subject_name(cert)
    assert name.startswith("Ajuntament") and DEVELOPMENT_ORGANIZATION in name


def test_ed25519_certificates_refused_at_creation():
    with pytest.raises(X509Error) as exc:
        create_ca("Ed root", key=Key.generate("EdDSA"))
    assert code_of(exc) == "x509.unsupported_algorithm"
    root_key, root = create_ca("Root")
    with pytest.raises(X509Error) as exc:
        issue_certificate(root_key, root, Key.generate("EdDSA"), "ed leaf")
    assert code_of(exc) == "x509.unsupported_algorithm"


def test_issued_leaf_extensions(pki):
    leaf, inter = pki["leaf"], pki["inter"]
    assert leaf.issuer == inter.subject
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = inter.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert san_uris(leaf) == ["https://issuer.example.org/tenant"]
    assert san_dns_names(leaf) == ["issuer.example.org"]
    assert certificate_subject_name(leaf) == "Ajuntament de Prova"
    assert certificate_subject_name(pki["direct"]) == "Direct leaf"


def test_intermediate_extensions(pki):
    bc = pki["inter"].extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    assert pki["inter"].extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


def test_not_before_and_days_are_honoured(pki):
    start = datetime(2030, 1, 1, tzinfo=UTC)
    cert = issue_certificate(pki["root_key"], pki["root"], Key.generate(), "future", not_before=start, days=2)
    assert cert.not_valid_before_utc == start
    assert cert.not_valid_after_utc == start + timedelta(days=2)
    naive = issue_certificate(pki["root_key"], pki["root"], Key.generate(), "naive", not_before=datetime(2030, 1, 1))
    assert naive.not_valid_before_utc == start


def test_x5c_is_standard_base64_of_der(pki):
    entry = cert_to_x5c(pki["leaf"])
    assert base64.b64decode(entry, validate=True) == _der(pki["leaf"])
    assert "-" not in entry and "_" not in entry
    assert x5c_from_chain([pki["leaf"], pki["inter"]]) == [cert_to_x5c(pki["leaf"]), cert_to_x5c(pki["inter"])]


def test_pem_and_der_round_trips(pki):
    pem = cert_to_pem(pki["leaf"])
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert load_certificate(pem) == pki["leaf"]
    assert load_certificate(_der(pki["leaf"])) == pki["leaf"]
    bundle = cert_to_pem(pki["leaf"]) + cert_to_pem(pki["inter"]) + cert_to_pem(pki["root"])
    assert load_pem_certificates(bundle) == [pki["leaf"], pki["inter"], pki["root"]]


@pytest.mark.parametrize("data", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_load_certificate_refuses_garbage(data):
    with pytest.raises(X509Error) as exc:
        load_certificate(data)
    assert code_of(exc) == "x509.malformed_certificate"


def _with_version(cert: x509.Certificate, version: int) -> bytes:
    der = _der(cert)
    at = der.find(bytes([0xA0, 0x03, 0x02, 0x01, 0x02]))  # [0] EXPLICIT INTEGER 2 (v3)
    assert at > 0
    return der[:at + 4] + bytes([version]) + der[at + 5:]


@pytest.mark.parametrize("version", [3, 5, 0x7F])
def test_der_loader_types_a_bad_version(pki, version):
    # cryptography raises x509.InvalidVersion (not a ValueError) for these
    with pytest.raises(X509Error) as exc:
        ssi_x509.load_der_certificate(_with_version(pki["leaf"], version))
    assert code_of(exc) == "x509.malformed_certificate"
    with pytest.raises(X509Error) as exc:
        ssi_x509.load_der_certificate(_with_version(pki["leaf"], version), code="malformed_x5c")
    assert code_of(exc) == "x509.malformed_x5c"
    with pytest.raises(X509Error) as exc:
        verify_x5c([base64.b64encode(_with_version(pki["leaf"], version)).decode()], [pki["root"]])
    assert code_of(exc) == "x509.malformed_x5c"
    assert ssi_x509.load_der_certificate(_der(pki["leaf"])) == pki["leaf"]


@pytest.mark.parametrize("data", [b"", b"no pem here", b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n"])
def test_load_pem_certificates_refuses_garbage(data):
    with pytest.raises(X509Error) as exc:
        load_pem_certificates(data)
    assert code_of(exc) == "x509.malformed_certificate"


def test_certificate_key_verifies_signatures_of_subject_key(pki):
    token = sign_jws({"typ": "dc+sd-jwt"}, {"iss": "https://issuer.example.org"}, pki["leaf_key"])
    key = certificate_key(pki["leaf"])
    assert not key.is_private and key.alg == "ES256"
    assert key.thumbprint() == pki["leaf_key"].thumbprint()
    assert verify_jws(token, key).json_payload()["iss"] == "https://issuer.example.org"


def test_x509_hash_is_b64url_sha256_of_der(pki):
    value = x509_hash(pki["leaf"])
    assert b64url_decode(value) == hashlib.sha256(_der(pki["leaf"])).digest()
    assert len(value) == 43 and "=" not in value
    assert x509_hash(pki["leaf"]) != x509_hash(pki["inter"])


# -- SAN matching --------------------------------------------------------------------------------

@pytest.mark.parametrize(("expected", "result"), [
    ("https://issuer.example.org/tenant", True),       # exact SAN URI
    # A URL never matches through its host's DNS SAN: issuers sharing a host would pass for each other.
    ("https://issuer.example.org", False),
    ("https://ISSUER.example.org/other/path", False),
    ("https://issuer.example.org/tenant/", False),     # not the SAN URI
    ("issuer.example.org", True),                      # bare host: a DNS SAN
    ("Issuer.Example.Org", True),                      # DNS comparison ignores case
    ("dns:issuer.example.org", True),                  # RFC 4501 DNS URI
    ("DNS:issuer.example.org.", True),
    ("http://issuer.example.org", False),
    ("https://evil.example.org", False),
    ("https://issuer.example.org.evil.test", False),
    ("evil.example.org", False),
    ("dns:issuer.example.org/x", False),
    ("dns:", False),
    ("", False),
    ("https://[bad", False),
])
def test_san_matches(pki, expected, result):
    assert san_matches(pki["leaf"], expected) is result


def test_san_matches_without_san(pki):
    _, root = create_ca("No SAN")
    assert san_uris(root) == [] and san_dns_names(root) == []
    assert not san_matches(root, "https://issuer.example.org")


def test_uri_only_san_does_not_match_other_uri(pki):
    cert = issue_certificate(pki["root_key"], pki["root"], Key.generate(), "uri only",
                             san_uris=["https://a.example/issuer"])
    assert san_matches(cert, "https://a.example/issuer")
    assert not san_matches(cert, "https://a.example/other")
    assert not san_matches(cert, "a.example")


# -- verify_x5c: success -------------------------------------------------------------------------

def test_verify_chain_with_intermediate(pki):
    leaf = verify_x5c(x5c_from_chain([pki["leaf"], pki["inter"]]), [pki["root"]])
    assert leaf == pki["leaf"]


def test_verify_chain_including_anchor(pki):
    assert verify_x5c(x5c_from_chain([pki["leaf"], pki["inter"], pki["root"]]), [pki["root"]]) == pki["leaf"]


def test_verify_direct_leaf_among_several_anchors(pki):
    _, other = create_ca("Other root")
    assert verify_x5c([cert_to_x5c(pki["direct"])], [other, pki["root"]]) == pki["direct"]


def test_verify_anchor_with_same_name_but_other_key_is_skipped(pki):
    _, impostor = create_ca("Cartera Test Root")
    assert impostor.subject == pki["root"].subject
    assert verify_x5c([cert_to_x5c(pki["direct"])], [impostor, pki["root"]]) == pki["direct"]
    with pytest.raises(X509Error) as exc:
        verify_x5c([cert_to_x5c(pki["direct"])], [impostor])
    assert code_of(exc) == "x509.untrusted_chain"


def test_verify_pinned_leaf(pki):
    assert verify_x5c([cert_to_x5c(pki["direct"])], [pki["direct"]]) == pki["direct"]


def test_verify_with_naive_now(pki):
    naive_now = datetime.now(UTC).replace(tzinfo=None)
    assert verify_x5c([cert_to_x5c(pki["direct"])], [pki["root"]], now=naive_now) == pki["direct"]


def test_verify_p384_root(pki):
    root_key, root = create_ca("P-384 root", key=Key.generate("ES384"))
    leaf = issue_certificate(root_key, root, Key.generate("ES256"), "leaf")
    assert verify_x5c([cert_to_x5c(leaf)], [root]) == leaf


# -- verify_x5c: each failure with its code ------------------------------------------------------

@pytest.mark.parametrize("x5c", [[], None, "MIIB", {"0": "x"}, [1], [None], ["!!!"], ["TUlJ-_"], ["AAAA"],
                                 ["TUlJQg"], [base64.b64encode(b"not a certificate").decode()], ["é"]])
def test_malformed_x5c(x5c):
    with pytest.raises(X509Error) as exc:
        verify_x5c(x5c, [])
    assert code_of(exc) == "x509.malformed_x5c"


def test_base64url_x5c_entry_is_refused(pki):
    entry = base64.urlsafe_b64encode(_der(pki["leaf"])).rstrip(b"=").decode()
    if entry == cert_to_x5c(pki["leaf"]):  # pragma: no cover - happens only if no +,/,= occur at all
        entry = entry + "="
    with pytest.raises(X509Error) as exc:
        verify_x5c([entry], [pki["root"]])
    assert code_of(exc) == "x509.malformed_x5c"


def test_chain_too_long(pki):
    with pytest.raises(X509Error) as exc:
        verify_x5c([cert_to_x5c(pki["leaf"])] * (MAX_CHAIN_LENGTH + 1), [pki["root"]])
    assert code_of(exc) == "x509.chain_too_long"


def test_expired_leaf(pki):
    leaf = issue_certificate(pki["root_key"], pki["root"], Key.generate(), "old",
                             not_before=NOW - timedelta(days=10), days=1)
    with pytest.raises(X509Error) as exc:
        verify_x5c([cert_to_x5c(leaf)], [pki["root"]])
    assert code_of(exc) == "x509.expired"


def test_expired_at_given_now(pki):
    with pytest.raises(X509Error) as exc:
        verify_x5c(x5c_from_chain([pki["leaf"], pki["inter"]]), [pki["root"]], now=NOW + timedelta(days=400))
    assert code_of(exc) == "x509.expired"


def test_not_yet_valid_leaf(pki):
    leaf = issue_certificate(pki["root_key"], pki["root"], Key.generate(), "future",
                             not_before=NOW + timedelta(days=1))
    with pytest.raises(X509Error) as exc:
        verify_x5c([cert_to_x5c(leaf)], [pki["root"]])
    assert code_of(exc) == "x509.not_yet_valid"


def test_expired_intermediate(pki):
    inter_key = Key.generate()
    inter = issue_certificate(pki["root_key"], pki["root"], inter_key, "old CA", is_ca=True,
                              not_before=NOW - timedelta(days=10), days=1)
    leaf = issue_certificate(inter_key, inter, Key.generate(), "leaf")
    with pytest.raises(X509Error) as exc:
        verify_x5c(x5c_from_chain([leaf, inter]), [pki["root"]])
    assert code_of(exc) == "x509.expired"


def test_unknown_anchor(pki):
    _, other = create_ca("Other root")
    with pytest.raises(X509Error) as exc:
        verify_x5c(x5c_from_chain([pki["leaf"], pki["inter"]]), [other])
    assert code_of(exc) == "x509.untrusted_chain"
    with pytest.raises(X509Error) as exc:
        verify_x5c(x5c_from_chain([pki["leaf"], pki["inter"]]), [])
    assert code_of(exc) == "x509.untrusted_chain"


def test_self_signed_chain_end_not_an_anchor(pki):
    _, other = create_ca("Other root")
    with pytest.raises(X509Error) as exc:
        verify_x5c(x5c_from_chain([pki["leaf"], pki["inter"], pki["root"]]), [other])
    assert code_of(exc) == "x509.untrusted_chain"


def test_leaf_used_as_ca(pki):
    rogue = issue_certificate(pki["direct_key"], pki["direct"], Key.generate(), "rogue")
    with pytest.raises(X509Error) as exc:
        verify_x5c(x5c_from_chain([rogue, pki["direct"]]), [pki["root"]])
    assert code_of(exc) == "x509.not_a_ca"


def test_intermediate_without_ca_flag(pki):
    inter_key = Key.generate()
    inter = _custom_cert(pki["root_key"], pki["root"].subject, inter_key, "not a CA",
                         [(x509.BasicConstraints(ca=False, path_length=None), True),
                          (_key_usage(key_cert_sign=True), True)])
    leaf = issue_certificate(inter_key, inter, Key.generate(), "leaf")
    with pytest.raises(X509Error) as exc:
        verify_x5c(x5c_from_chain([leaf, inter]), [pki["root"]])
    assert code_of(exc) == "x509.not_a_ca"


def test_intermediate_without_basic_constraints(pki):
    inter_key = Key.generate()
    inter = _custom_cert(pki["root_key"], pki["root"].subject, inter_key, "no bc",
                         [(_key_usage(key_cert_sign=True), True)])
    leaf = issue_certificate(inter_key, inter, Key.generate(), "leaf")
    with pytest.raises(X509Error) as exc:
        verify_x5c(x5c_from_chain([leaf, inter]), [pki["root"]])
    assert code_of(exc) == "x509.not_a_ca"


def test_intermediate_without_key_cert_sign(pki):
    inter_key = Key.generate()
    inter = _custom_cert(pki["root_key"], pki["root"].subject, inter_key, "CA without keyCertSign",
                         [(x509.BasicConstraints(ca=True, path_length=None), True),
                          (_key_usage(digital_signature=True), True)])
    leaf = issue_certificate(inter_key, inter, Key.generate(), "leaf")
    with pytest.raises(X509Error) as exc:
        verify_x5c(x5c_from_chain([leaf, inter]), [pki["root"]])
    assert code_of(exc) == "x509.bad_key_usage"


def test_leaf_key_usage_without_digital_signature(pki):
    leaf = _custom_cert(pki["root_key"], pki["root"].subject, Key.generate(), "enc only",
                        [(x509.BasicConstraints(ca=False, path_length=None), True),
                         (_key_usage(key_agreement=True), True)])
    with pytest.raises(X509Error) as exc:
        verify_x5c([cert_to_x5c(leaf)], [pki["root"]])
    assert code_of(exc) == "x509.bad_key_usage"


def test_leaf_without_key_usage_is_accepted(pki):
    leaf = _custom_cert(pki["root_key"], pki["root"].subject, Key.generate(), "minimal", [])
    assert verify_x5c([cert_to_x5c(leaf)], [pki["root"]]) == leaf


def test_leaf_is_ca(pki):
    with pytest.raises(X509Error) as exc:
        verify_x5c([cert_to_x5c(pki["inter"])], [pki["root"]])
    assert code_of(exc) == "x509.leaf_is_ca"


def test_leaf_rules_come_before_the_untrusted_chain_decision(pki):
    # A caller admitting untrusted chains (OpenID4VP allow_untrusted) acts on 'untrusted_chain': a CA
    # certificate, or one without digitalSignature, must never reach it.
    stranger_key, stranger = create_ca("Stranger CA")
    with pytest.raises(X509Error) as exc:
        verify_x5c([cert_to_x5c(stranger)], [pki["root"]])
    assert code_of(exc) == "x509.leaf_is_ca"
    enc_only = _custom_cert(stranger_key, stranger.subject, Key.generate(), "enc only",
                            [(x509.BasicConstraints(ca=False, path_length=None), True),
                             (_key_usage(key_agreement=True), True)])
    with pytest.raises(X509Error) as exc:
        verify_x5c([cert_to_x5c(enc_only)], [pki["root"]])
    assert code_of(exc) == "x509.bad_key_usage"
    signer = issue_certificate(stranger_key, stranger, Key.generate(), "signer")
    with pytest.raises(X509Error) as exc:
        verify_x5c([cert_to_x5c(signer)], [pki["root"]])
    assert code_of(exc) == "x509.untrusted_chain"


def test_path_length_exceeded(pki):
    inter2_key = Key.generate()
    inter2 = issue_certificate(pki["inter_key"], pki["inter"], inter2_key, "sub CA", is_ca=True)
    leaf = issue_certificate(inter2_key, inter2, Key.generate(), "leaf")
    with pytest.raises(X509Error) as exc:
        verify_x5c(x5c_from_chain([leaf, inter2, pki["inter"]]), [pki["root"]])
    assert code_of(exc) == "x509.path_length"


def test_anchor_path_length_is_enforced():
    root_key = Key.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Strict root")])
    # A root that allows no intermediate CA below it.
    strict_root = _custom_cert(root_key, name, root_key, "Strict root",
                               [(x509.BasicConstraints(ca=True, path_length=0), True),
                                (_key_usage(key_cert_sign=True, crl_sign=True), True)])
    inter_key = Key.generate()
    inter = issue_certificate(root_key, strict_root, inter_key, "inter", is_ca=True)
    leaf = issue_certificate(inter_key, inter, Key.generate(), "leaf")
    with pytest.raises(X509Error) as exc:
        verify_x5c(x5c_from_chain([leaf, inter]), [strict_root])
    assert code_of(exc) == "x509.path_length"
    direct = issue_certificate(root_key, strict_root, Key.generate(), "direct")
    assert verify_x5c([cert_to_x5c(direct)], [strict_root]) == direct


def test_tampered_signature(pki):
    der = bytearray(_der(pki["direct"]))
    der[-1] ^= 0x01  # last byte of the ECDSA signature value
    entry = base64.b64encode(bytes(der)).decode()
    with pytest.raises(X509Error) as exc:
        verify_x5c([entry], [pki["root"]])
    assert code_of(exc) in {"x509.untrusted_chain", "x509.bad_chain_signature"}
    # Inside a chain (issuer present) the failure is the signature itself.
    der = bytearray(_der(pki["leaf"]))
    der[-1] ^= 0x01
    with pytest.raises(X509Error) as exc:
        verify_x5c([base64.b64encode(bytes(der)).decode(), cert_to_x5c(pki["inter"])], [pki["root"]])
    assert code_of(exc) == "x509.bad_chain_signature"


def test_forged_intermediate_with_same_name(pki):
    forger_key = Key.generate()
    forged_leaf = _custom_cert(forger_key, pki["inter"].subject, Key.generate(), "forged",
                               [(x509.BasicConstraints(ca=False, path_length=None), True)])
    with pytest.raises(X509Error) as exc:
        verify_x5c(x5c_from_chain([forged_leaf, pki["inter"]]), [pki["root"]])
    assert code_of(exc) == "x509.bad_chain_signature"


def test_issuer_mismatch(pki):
    with pytest.raises(X509Error) as exc:
        verify_x5c(x5c_from_chain([pki["leaf"], pki["direct"]]), [pki["root"]])
    assert code_of(exc) == "x509.issuer_mismatch"


def test_wrong_order(pki):
    with pytest.raises(X509Error) as exc:
        verify_x5c(x5c_from_chain([pki["inter"], pki["leaf"]]), [pki["root"]])
    assert code_of(exc) == "x509.issuer_mismatch"


def test_unsupported_critical_extension(pki):
    odd = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    leaf = _custom_cert(pki["root_key"], pki["root"].subject, Key.generate(), "odd",
                        [(x509.BasicConstraints(ca=False, path_length=None), True), (odd, True)])
    with pytest.raises(X509Error) as exc:
        verify_x5c([cert_to_x5c(leaf)], [pki["root"]])
    assert code_of(exc) == "x509.unsupported_critical_extension"
    tolerated = _custom_cert(pki["root_key"], pki["root"].subject, Key.generate(), "odd",
                             [(x509.BasicConstraints(ca=False, path_length=None), True), (odd, False)])
    assert verify_x5c([cert_to_x5c(tolerated)], [pki["root"]]) == tolerated


def test_name_constraints_enforced_by_cryptography_pass():
    root_key = Key.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Constrained root")])
    root = _custom_cert(root_key, name, root_key, "Constrained root",
                        [(x509.BasicConstraints(ca=True, path_length=None), True),
                         (_key_usage(key_cert_sign=True, crl_sign=True), True),
                         (x509.NameConstraints(permitted_subtrees=[x509.DNSName("good.example")],
                                               excluded_subtrees=None), True)])
    good = issue_certificate(root_key, root, Key.generate(), "good", san_dns=["issuer.good.example"])
    assert verify_x5c([cert_to_x5c(good)], [root]) == good
    evil = issue_certificate(root_key, root, Key.generate(), "evil", san_dns=["issuer.evil.example"])
    with pytest.raises(X509Error) as exc:
        verify_x5c([cert_to_x5c(evil)], [root])
    assert code_of(exc) == "x509.policy_violation"


def test_wrong_san_is_detectable_after_validation(pki):
    leaf = verify_x5c(x5c_from_chain([pki["leaf"], pki["inter"]]), [pki["root"]])
    assert not san_matches(leaf, "https://other-agency.example")


# -- robustness ----------------------------------------------------------------------------------

_json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40) | st.binary(max_size=40).map(
        lambda b: base64.b64encode(b).decode()),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(_json_like)
def test_verify_x5c_random_input_only_raises_ssi_errors(value):
    with pytest.raises(SSIError):
        verify_x5c(value, [])


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=255))
def test_verify_x5c_mutated_certificate_only_raises_ssi_errors(position, value):
    root_key, root = _SHARED_ROOT
    der = bytearray(_der(_SHARED_LEAF))
    der[position % len(der)] = value
    entry = base64.b64encode(bytes(der)).decode()
    try:
        leaf = verify_x5c([entry], [root])
    except SSIError:
        return
    # A mutation that still verifies can only be one that left the DER unchanged.
    assert _der(leaf) == _der(_SHARED_LEAF)


_SHARED_ROOT = create_ca("Fuzz root")
_SHARED_LEAF = issue_certificate(_SHARED_ROOT[0], _SHARED_ROOT[1], Key.generate(), "fuzz leaf",
                                 san_dns=["fuzz.example"])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_load_certificate_random_bytes(data):
    with pytest.raises(SSIError):
        load_certificate(data)
