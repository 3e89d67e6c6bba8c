"""Development X.509 identities for WS-Security: a key and a self-signed certificate, as PEM.

WS-Security deployments (the AOC's included) commonly use RSA certificates, while ``ssi.x509``
issues ES256 certificates for credentials; this small helper covers both for the sandbox, demos
and tests. Production keys and certificates come from the body's own PKI, never from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .errors import ViaObertaError


@dataclass(frozen=True)
class SigningIdentity:
    """A private key (PKCS#8 PEM, unencrypted: development only) and its certificate (PEM)."""

    key_pem: bytes
    cert_pem: bytes


def generate_identity(common_name: str, *, key_type: str = "rsa", days: int = 365,
                      organization: str = "Cartera development (not for production)") -> SigningIdentity:
    """Generate a self-signed signing identity: ``key_type`` ``"rsa"`` (2048-bit) or ``"ec"`` (P-256)."""
    if key_type == "rsa":
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = rsa.generate_private_key(65537, 2048)
    elif key_type == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ViaObertaError("bad_request", "key_type must be rsa or ec")
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
    ])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return SigningIdentity(key_pem, cert.public_bytes(serialization.Encoding.PEM))
