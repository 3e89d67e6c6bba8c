"""Keys, JWK and compact JWS with an explicit algorithm allow-list.

Why our own compact-JWS code instead of a JOSE library's: compact JWS is the hot path of every
issuance and presentation, and SD-JWT needs the parsed parts (signing input, header, raw payload)
that a library hides, so verification must parse once and verify with a cached key object. The
compact form is small enough to get exactly right: three parts, strict base64url and JSON (no
duplicate members), ``alg`` from a fixed allow-list that excludes ``none`` and every MAC, ``crit``
refused. Interoperability with joserfc and jwcrypto is proved in the tests; joserfc is used for JWE,
where its breadth matters. Cryptography itself is always the ``cryptography`` package.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .encoding import b64url_decode, b64url_encode, json_dumps, json_loads
from .errors import EncodingError, JOSEError

#: Algorithms accepted for credentials, presentations and proofs unless a caller narrows the list.
DEFAULT_ALGORITHMS: tuple[str, ...] = ("ES256", "ES384", "EdDSA")
#: Algorithms this module can verify at all (RSA only for outside identity providers' ID tokens).
SUPPORTED_ALGORITHMS: frozenset[str] = frozenset({"ES256", "ES384", "EdDSA", "RS256", "PS256"})
#: Algorithms accepted for an outside OpenID provider's ID token, whatever its discovery document
#: advertises: OpenID Connect Core §15.1 makes RS256 mandatory for providers, and most sign with it
#: alone. Nothing else Cartera verifies (credentials, key proofs, KB-JWTs, DPoP, status lists) widens
#: to RSA: those keep :data:`DEFAULT_ALGORITHMS`.
ID_TOKEN_ALGORITHMS: tuple[str, ...] = ("ES256", "ES384", "EdDSA", "RS256", "PS256")
#: The shortest RSA modulus accepted (NIST SP 800-131A; RFC 7518 §3.3 requires 2048 bits for RS256).
MIN_RSA_BITS = 2048
_RSA_ALGS = frozenset({"RS256", "PS256"})

_EC_CURVES: dict[str, tuple[ec.EllipticCurve, str, int]] = {
    "P-256": (ec.SECP256R1(), "ES256", 32),
    "P-384": (ec.SECP384R1(), "ES384", 48),
}
_ALG_HASH = {"ES256": hashes.SHA256(), "ES384": hashes.SHA384(), "RS256": hashes.SHA256(), "PS256": hashes.SHA256()}
_ECDSA = {"ES256": ec.ECDSA(hashes.SHA256()), "ES384": ec.ECDSA(hashes.SHA384())}
_ALG_KTY = {"ES256": "EC", "ES384": "EC", "EdDSA": "OKP", "RS256": "RSA", "PS256": "RSA"}
_ALG_CRV = {"ES256": "P-256", "ES384": "P-384", "EdDSA": "Ed25519"}

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
#: Signs for a key whose private part is held elsewhere (a PKCS#11 token, a KMS): takes the JWS signing
#: input and returns the JWS signature, so raw ``r || s`` for ECDSA (RFC 7518 §3.4), never DER.
Signer = Callable[[bytes], bytes]


_ALG_SIZE = {"ES256": 32, "ES384": 48}
_P256_FITS = frozenset({"ES256"})


def _fitting_algorithms(public: Any) -> frozenset[str]:
    """The JOSE algorithms a public key can verify (empty for an unsupported key or curve)."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        name = public.curve.name
        return frozenset(alg for crv, (curve, alg, _size) in _EC_CURVES.items() if curve.name == name)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return frozenset({"EdDSA"})
    if isinstance(public, rsa.RSAPublicKey):
        return frozenset({"RS256", "PS256"})
    return frozenset()


def _der_to_raw(der: bytes, size: int) -> bytes:
    """ECDSA-Sig-Value (DER, as OpenSSL emits it) to the JWS ``r || s`` form (RFC 7518 §3.4)."""
    # Short-form lengths always hold for P-256 and P-384; anything else takes the generic path.
    if len(der) > 8 and der[0] == 0x30 and der[1] == len(der) - 2 and der[2] == 0x02:
        r_len = der[3]
        s_at = 4 + r_len
        if s_at + 2 <= len(der) and der[s_at] == 0x02 and s_at + 2 + der[s_at + 1] == len(der) \
                and r_len <= size + 1 and der[s_at + 1] <= size + 1:
            return der[4:s_at][-size:].rjust(size, b"\x00") + der[s_at + 2:][-size:].rjust(size, b"\x00")
    r, s = decode_dss_signature(der)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _der_integer(value: bytes) -> bytes:
    # Minimal DER INTEGER content: no leading zero octets, one 0x00 before a set high bit.
    value = value.lstrip(b"\x00") or b"\x00"
    if value[0] & 0x80:
        value = b"\x00" + value
    return b"\x02" + len(value).to_bytes(1, "big") + value


def _raw_to_der(signature: bytes, size: int) -> bytes:
    """JWS ``r || s`` (each ``size`` octets) to the DER ECDSA-Sig-Value that OpenSSL verifies."""
    body = _der_integer(signature[:size]) + _der_integer(signature[size:])
    return b"\x30" + len(body).to_bytes(1, "big") + body


def _int_to_b64(value: int, length: int) -> str:
    return b64url_encode(value.to_bytes(length, "big"))


def _b64_member(jwk: dict[str, Any], name: str, length: int | None = None) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise JOSEError("bad_jwk", f"JWK member '{name}' missing or not a string")
    try:
        raw = b64url_decode(value)
    except EncodingError as exc:
        raise JOSEError("bad_jwk", f"JWK member '{name}' is not base64url") from exc
    if length is not None and len(raw) != length:
        raise JOSEError("bad_jwk", f"JWK member '{name}' has the wrong length")
    return raw


class Key:
    """An asymmetric key (private or public only) with its JOSE algorithm and optional ``kid``.

    Construct with :meth:`generate`, :meth:`from_jwk`, :meth:`from_pem`,
    :meth:`from_cryptography`, or :meth:`from_signer` for a private key this process does not hold.
    Public-key objects are cached so that verification does no parsing.
    """

    __slots__ = ("_private", "_public", "alg", "kid", "_thumbprint", "_fits", "_ec_size", "_signer", "_jwk_members")

    def __init__(self, private: PrivateKey | None = None, public: PublicKey | None = None,
                 alg: str | None = None, kid: str | None = None) -> None:
        if private is None and public is None:
            raise JOSEError("bad_key", "a key needs a private or a public part")
        self._private = private
        self._public: PublicKey = public if public is not None else private.public_key()  # type: ignore[union-attr]
        # The algorithms this key can serve, decided once: isinstance against cryptography's
        # abstract key classes costs more than a set lookup on every sign and verify.
        self._fits = _fitting_algorithms(self._public)
        self.alg = alg or self._default_alg()
        if self.alg not in SUPPORTED_ALGORITHMS or not self._alg_fits(self.alg):
            raise JOSEError("alg_key_mismatch", f"algorithm {self.alg} does not fit this key")
        self.kid = kid
        self._thumbprint: str | None = None
        #: Coordinate size of an EC key (0 otherwise): ECDSA signatures are two such integers.
        self._ec_size = _ALG_SIZE.get(self.alg, 0)
        self._signer: Signer | None = None
        self._jwk_members: dict[str, str] | None = None

    @classmethod
    def _p256_public(cls, public: ec.EllipticCurvePublicKey, kid: str | None) -> Key:
        """A public ES256 key from an object the caller built on P-256 (the holder-key hot path)."""
        self = cls.__new__(cls)
        self._private = None
        self._public = public
        self._fits = _P256_FITS
        self.alg = "ES256"
        self.kid = kid
        self._thumbprint = None
        self._ec_size = 32
        self._signer = None
        self._jwk_members = None
        return self

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def generate(cls, alg: str = "ES256", kid: str | None = None) -> Key:
        if alg == "ES256":
            private: PrivateKey = ec.generate_private_key(ec.SECP256R1())
        elif alg == "ES384":
            private = ec.generate_private_key(ec.SECP384R1())
        elif alg == "EdDSA":
            private = ed25519.Ed25519PrivateKey.generate()
        else:
            raise JOSEError("alg_not_allowed", f"cannot generate keys for {alg}")
        return cls(private=private, alg=alg, kid=kid)

    @classmethod
    def from_cryptography(cls, obj: PrivateKey | PublicKey, alg: str | None = None, kid: str | None = None) -> Key:
        if isinstance(obj, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
            return cls(private=obj, alg=alg, kid=kid)
        if isinstance(obj, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
            return cls(public=obj, alg=alg, kid=kid)
        raise JOSEError("unsupported_key", "unsupported key type")

    @classmethod
    def from_signer(cls, public: PublicKey | Key, sign: Signer, alg: str | None = None,
                    kid: str | None = None) -> Key:
        """A signing key whose private part stays where it is (a PKCS#11 token, a KMS).

        ``public`` is the key's public part (a ``cryptography`` public key or a :class:`Key`);
        ``sign(data)`` returns the JWS signature over ``data`` for ``alg`` (raw ``r || s`` for ECDSA).
        The result signs and verifies like any private :class:`Key` (``is_private`` is true), but
        its private part cannot be read: :attr:`private_key`, :meth:`private_jwk` and
        :meth:`private_pem` raise :class:`JOSEError` ``jose.not_extractable``.
        """
        if not callable(sign):
            raise JOSEError("bad_key", "the signer must be callable")
        if isinstance(public, Key):
            kid = kid if kid is not None else public.kid
            alg = alg or public.alg
            public = public.public_key
        if not isinstance(public, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
            raise JOSEError("unsupported_key", "unsupported public key type")
        if alg not in (None, "ES256", "ES384", "EdDSA"):
            # RSA stays verification-only here, as for software keys (:meth:`sign` never signed RSA).
            raise JOSEError("alg_not_allowed", f"cannot sign with {alg} through a signer")
        key = cls(public=public, alg=alg, kid=kid)
        if key.alg not in ("ES256", "ES384", "EdDSA"):
            raise JOSEError("alg_not_allowed", f"cannot sign with {key.alg} through a signer")
        key._signer = sign
        return key

    @classmethod
    def from_pem(cls, pem: bytes, password: bytes | None = None, alg: str | None = None,
                 kid: str | None = None) -> Key:
        try:
            if b"PRIVATE KEY" in pem:
                obj: Any = serialization.load_pem_private_key(pem, password=password)
            else:
                obj = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise JOSEError("bad_key", "not a readable PEM key") from exc
        return cls.from_cryptography(obj, alg=alg, kid=kid)

    @classmethod
    def from_jwk(cls, jwk: Any, alg: str | None = None) -> Key:
        """Import a JWK. Unknown members (``key_ops``, ``use``, ``x5c``...) are ignored;
        wrong ones (bad curve, point not on the curve, wrong lengths) are refused."""
        if not isinstance(jwk, dict):
            raise JOSEError("bad_jwk", "a JWK must be a JSON object")
        kty = jwk.get("kty")
        kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
        jwk_alg = jwk.get("alg") if isinstance(jwk.get("alg"), str) else None
        if alg and jwk_alg and alg != jwk_alg:
            raise JOSEError("alg_key_mismatch", "the JWK names another algorithm")
        alg = alg or jwk_alg
        try:
            if kty == "EC":
                crv = jwk.get("crv")
                if crv not in _EC_CURVES:
                    raise JOSEError("bad_jwk", "unsupported EC curve")
                curve, default_alg, size = _EC_CURVES[crv]
                x = int.from_bytes(_b64_member(jwk, "x", size), "big")
                y = int.from_bytes(_b64_member(jwk, "y", size), "big")
                public_numbers = ec.EllipticCurvePublicNumbers(x, y, curve)
                if "d" in jwk:
                    d = int.from_bytes(_b64_member(jwk, "d", size), "big")
                    private = ec.EllipticCurvePrivateNumbers(d, public_numbers).private_key()
                    return cls(private=private, alg=alg or default_alg, kid=kid)
                return cls(public=public_numbers.public_key(), alg=alg or default_alg, kid=kid)
            if kty == "OKP":
                if jwk.get("crv") != "Ed25519":
                    raise JOSEError("bad_jwk", "unsupported OKP curve")
                x_raw = _b64_member(jwk, "x", 32)
                if "d" in jwk:
                    private_ed = ed25519.Ed25519PrivateKey.from_private_bytes(_b64_member(jwk, "d", 32))
                    if private_ed.public_key().public_bytes_raw() != x_raw:
                        raise JOSEError("bad_jwk", "private and public parts do not match")
                    return cls(private=private_ed, alg=alg or "EdDSA", kid=kid)
                return cls(public=ed25519.Ed25519PublicKey.from_public_bytes(x_raw), alg=alg or "EdDSA", kid=kid)
            if kty == "RSA":
                if "d" in jwk:
                    raise JOSEError("bad_jwk", "RSA private JWKs are not accepted")
                n = int.from_bytes(_b64_member(jwk, "n"), "big")
                e = int.from_bytes(_b64_member(jwk, "e"), "big")
                if n.bit_length() < MIN_RSA_BITS:
                    raise JOSEError("bad_jwk", f"RSA keys shorter than {MIN_RSA_BITS} bits are refused")
                rsa_key = cls(public=rsa.RSAPublicNumbers(e, n).public_key(), alg=alg or "RS256", kid=kid)
                if alg:
                    # An RSA key fits RS256 and PS256; one whose JWK names its algorithm serves that
                    # one only (RFC 7517 §4.4), so a PS256 key never verifies an RS256 token.
                    rsa_key._fits = frozenset({alg})
                return rsa_key
        except JOSEError:
            raise
        except (ValueError, TypeError, OverflowError) as exc:
            raise JOSEError("bad_jwk", "the JWK does not describe a valid key") from exc
        raise JOSEError("bad_jwk", "unsupported or missing 'kty'")

    # -- properties -----------------------------------------------------------------------------
    @property
    def is_private(self) -> bool:
        """True when this key can sign (its private part is here or behind a signer)."""
        return self._private is not None or self._signer is not None

    @property
    def is_external(self) -> bool:
        """True when the private part is held elsewhere (:meth:`from_signer`) and cannot be exported."""
        return self._signer is not None

    @property
    def public_key(self) -> PublicKey:
        return self._public

    @property
    def private_key(self) -> PrivateKey:
        if self._private is None:
            if self._signer is not None:
                raise JOSEError("not_extractable", "the private key is held by an external signer (e.g. a PKCS#11 "
                                                   "token) and cannot be read or exported")
            raise JOSEError("not_private", "this is a public key")
        return self._private

    def public(self) -> Key:
        """The same key without its private part (serving the same algorithms)."""
        key = Key(public=self._public, alg=self.alg, kid=self.kid)
        key._fits = self._fits
        return key

    def _default_alg(self) -> str:
        if isinstance(self._public, ec.EllipticCurvePublicKey):
            for _crv, (curve, alg, _size) in _EC_CURVES.items():
                if self._public.curve.name == curve.name:
                    return alg
            raise JOSEError("unsupported_key", "unsupported EC curve")
        if isinstance(self._public, ed25519.Ed25519PublicKey):
            return "EdDSA"
        return "RS256"

    def _alg_fits(self, alg: str) -> bool:
        return alg in self._fits

    # -- JWK export -----------------------------------------------------------------------------
    def public_jwk(self, include_kid: bool = True) -> dict[str, str]:
        """The RFC 7517 public JWK (only the required members, plus ``kid`` if set and asked)."""
        # The key material never changes: its members are worked out once (a proof or a DPoP header
        # carries the holder's JWK every time), and each call gets its own dict.
        members = self._jwk_members
        if members is None:
            members = self._jwk_members = self._public_jwk_members()
        jwk = dict(members)
        if include_kid and self.kid:
            jwk["kid"] = self.kid
        return jwk

    def _public_jwk_members(self) -> dict[str, str]:
        pub = self._public
        if isinstance(pub, ec.EllipticCurvePublicKey):
            crv = _ALG_CRV[self.alg]
            size = _EC_CURVES[crv][2]
            numbers = pub.public_numbers()
            jwk = {"kty": "EC", "crv": crv, "x": _int_to_b64(numbers.x, size), "y": _int_to_b64(numbers.y, size)}
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(pub.public_bytes_raw())}
        else:
            rsa_numbers = pub.public_numbers()
            jwk = {"kty": "RSA", "n": b64url_encode(rsa_numbers.n.to_bytes((rsa_numbers.n.bit_length() + 7) // 8, "big")),
                   "e": b64url_encode(rsa_numbers.e.to_bytes((rsa_numbers.e.bit_length() + 7) // 8, "big"))}
        return jwk

    def private_jwk(self) -> dict[str, str]:
        """The private JWK. Only for encrypted storage: never log or send it."""
        jwk = self.public_jwk()
        priv = self.private_key
        if isinstance(priv, ec.EllipticCurvePrivateKey):
            jwk["d"] = _int_to_b64(priv.private_numbers().private_value, _EC_CURVES[jwk["crv"]][2])
        elif isinstance(priv, ed25519.Ed25519PrivateKey):
            jwk["d"] = b64url_encode(priv.private_bytes_raw())
        else:
            raise JOSEError("unsupported_key", "RSA private keys are not exported as JWK")
        jwk["alg"] = self.alg
        return jwk

    def private_pem(self, password: bytes | None = None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        return self.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)

    def public_pem(self) -> bytes:
        return self._public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def thumbprint(self) -> str:
        """RFC 7638 JWK thumbprint (SHA-256, base64url)."""
        if self._thumbprint is None:
            jwk = self.public_jwk(include_kid=False)
            canonical = json_dumps({k: jwk[k] for k in sorted(jwk)})
            self._thumbprint = b64url_encode(hashlib.sha256(canonical.encode()).digest())
        return self._thumbprint

    # -- raw signatures -------------------------------------------------------------------------
    def sign(self, data: bytes) -> bytes:
        """A JWS signature over ``data`` (raw ``r||s`` for ECDSA, as RFC 7518 §3.4 requires)."""
        priv = self._private
        if priv is None:
            if self._signer is not None:
                return self._external_sign(data)
            raise JOSEError("not_private", "this is a public key")
        size = self._ec_size
        if size:
            return _der_to_raw(priv.sign(data, _ECDSA[self.alg]), size)  # type: ignore[call-arg, arg-type]
        if isinstance(priv, ed25519.Ed25519PrivateKey):
            return priv.sign(data)
        raise JOSEError("unsupported_key", "this key cannot sign here")

    def _external_sign(self, data: bytes) -> bytes:
        signature = self._signer(data)  # type: ignore[misc]
        # A signer handing back DER (as OpenSSL and some HSM wrappers do) or a truncated value would
        # yield tokens nobody can verify: refuse it here, where the cause is still known.
        expected = 2 * self._ec_size if self._ec_size else 64
        if not isinstance(signature, bytes) or len(signature) != expected:
            raise JOSEError("bad_signer", f"the external signer returned no {expected}-octet {self.alg} signature")
        return signature

    def verify(self, signature: bytes, data: bytes, alg: str | None = None) -> bool:
        """True when ``signature`` is valid for ``data`` under this key and algorithm."""
        alg = alg or self.alg
        # _fits only ever holds supported algorithms, so this is also the SUPPORTED_ALGORITHMS test.
        if alg not in self._fits:
            return False
        pub = self._public
        try:
            size = self._ec_size
            if size:
                if len(signature) != 2 * size:
                    return False
                pub.verify(_raw_to_der(signature, size), data, _ECDSA[alg])  # type: ignore[call-arg, arg-type]
            elif isinstance(pub, ed25519.Ed25519PublicKey):
                pub.verify(signature, data)
            elif alg == "RS256":
                pub.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            else:
                pub.verify(signature, data, padding.PSS(padding.MGF1(hashes.SHA256()), hashes.SHA256().digest_size),
                           hashes.SHA256())
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:  # never shows key material
        kind = "external-signer" if self._signer is not None else "private" if self._private is not None else "public"
        return f"<Key {self.alg} {kind} kid={self.kid!r}>"


# -- compact JWS ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class JWS:
    """A parsed (not yet verified) compact JWS."""

    header: dict[str, Any]
    payload: bytes
    signing_input: bytes
    signature: bytes

    def json_payload(self) -> dict[str, Any]:
        try:
            value = json_loads(self.payload)
        except EncodingError as exc:
            raise JOSEError("malformed", "the JWS payload is not JSON") from exc
        if not isinstance(value, dict):
            raise JOSEError("malformed", "the JWS payload is not a JSON object")
        return value


def sign_jws(header: dict[str, Any], payload: bytes | dict[str, Any], key: Key) -> str:
    """Sign a compact JWS. ``alg`` is taken from the key; a different one in ``header`` is an error."""
    if header.get("alg", key.alg) != key.alg:
        raise JOSEError("alg_key_mismatch", "header alg does not match the signing key")
    header = {"alg": key.alg, **header}
    body = payload if isinstance(payload, bytes) else json_dumps(payload).encode("utf-8")
    signing_input = (b64url_encode(json_dumps(header).encode("utf-8")) + "." + b64url_encode(body)).encode("ascii")
    return signing_input.decode("ascii") + "." + b64url_encode(key.sign(signing_input))


def parse_jws(token: Any) -> JWS:
    """Split and decode a compact JWS without verifying it. Refuses ``crit`` and non-object headers."""
    if not isinstance(token, str):
        raise JOSEError("malformed", "a compact JWS must be a string")
    parts = token.split(".")
    if len(parts) != 3:
        raise JOSEError("malformed", "a compact JWS has exactly three parts")
    try:
        header = json_loads(b64url_decode(parts[0]))
        payload = b64url_decode(parts[1])
        signature = b64url_decode(parts[2])
    except EncodingError as exc:
        raise JOSEError("malformed", "a JWS part is not valid base64url/JSON") from exc
    if not isinstance(header, dict):
        raise JOSEError("malformed", "the JWS header is not a JSON object")
    if not isinstance(header.get("alg"), str):
        raise JOSEError("malformed", "the JWS header has no 'alg'")
    if "crit" in header:
        raise JOSEError("unsupported_crit", "critical header parameters are not supported")
    return JWS(header, payload, (parts[0] + "." + parts[1]).encode("ascii"), signature)


def check_algorithm(alg: str, algorithms: tuple[str, ...] | list[str] | frozenset[str] = DEFAULT_ALGORITHMS) -> None:
    """Refuse ``none``, every MAC and anything not on the allow-list."""
    if alg == "none" or alg.startswith("HS") or alg not in algorithms or alg not in SUPPORTED_ALGORITHMS:
        raise JOSEError("alg_not_allowed", f"algorithm '{alg}' is not allowed")


def verify_parsed(jws: JWS, key: Key, algorithms: tuple[str, ...] | list[str] | frozenset[str] = DEFAULT_ALGORITHMS) -> JWS:
    """Verify a parsed JWS with ``key``. Codes: ``jose.alg_not_allowed`` (``alg`` off the allow-list,
    ``none``, a MAC), ``jose.alg_key_mismatch`` (``alg`` is not one the key serves: an RSA algorithm on
    an EC key, say), ``jose.weak_key`` (RSA shorter than :data:`MIN_RSA_BITS`), ``jose.bad_signature``."""
    alg = jws.header["alg"]
    check_algorithm(alg, algorithms)
    if not key._alg_fits(alg):
        raise JOSEError("alg_key_mismatch", f"algorithm '{alg}' does not fit the verification key")
    if alg in _RSA_ALGS and key._public.key_size < MIN_RSA_BITS:  # type: ignore[union-attr]
        # from_jwk refuses such keys already; this holds for keys built from PEM or cryptography too.
        raise JOSEError("weak_key", f"RSA keys shorter than {MIN_RSA_BITS} bits are refused")
    if not key.verify(jws.signature, jws.signing_input, alg):
        raise JOSEError("bad_signature", "the signature does not verify")
    return jws


def verify_jws(token: str, key: Key, algorithms: tuple[str, ...] | list[str] | frozenset[str] = DEFAULT_ALGORITHMS) -> JWS:
    """Parse and verify a compact JWS; raise :class:`JOSEError` on any failure."""
    return verify_parsed(parse_jws(token), key, algorithms)


# -- JWT time claims -----------------------------------------------------------------------------

DEFAULT_LEEWAY = 60
#: The NumericDates accepted: those ``datetime`` can represent (years 1 to 9999, UTC). A larger one
#: (``exp: 1e300``, ``10**30``) is no real date; refused as malformed, it cannot make a caller's
#: ``datetime.fromtimestamp`` raise ``OverflowError`` after the token was accepted.
MIN_NUMERIC_DATE = -62135596800
MAX_NUMERIC_DATE = 253402300799


def is_numeric_date(value: Any) -> bool:
    """Whether ``value`` is a JSON number (not a boolean) within the accepted NumericDate range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return MIN_NUMERIC_DATE <= value <= MAX_NUMERIC_DATE  # False for NaN as well


def check_time_claims(payload: dict[str, Any], *, now: float | None = None, leeway: int = DEFAULT_LEEWAY,
                      require: tuple[str, ...] = (), error: type[JOSEError] | Any = JOSEError) -> None:
    """Validate ``exp``, ``nbf`` and ``iat`` (NumericDate) with ``leeway`` seconds of clock skew.

    ``error(code, detail)`` builds what is raised; the codes are ``missing_<claim>`` (for a claim in
    ``require``), ``bad_<claim>`` (not a number, or outside :data:`MIN_NUMERIC_DATE` ..
    :data:`MAX_NUMERIC_DATE`), ``expired``, ``not_yet_valid`` and ``iat_in_future``."""
    now = time.time() if now is None else now
    for name in ("exp", "nbf", "iat"):
        value = payload.get(name)
        # A member that is present but null is not a NumericDate: refused below, not skipped
        # (skipping it made the comparisons further down raise TypeError).
        if value is None and name not in payload:
            if name in require:
                raise error(f"missing_{name}", f"the token has no '{name}'")
            continue
        if not is_numeric_date(value):
            raise error(f"bad_{name}", f"'{name}' is not a NumericDate")
    if "exp" in payload and now - leeway >= payload["exp"]:
        raise error("expired", "the token has expired")
    if "nbf" in payload and now + leeway < payload["nbf"]:
        raise error("not_yet_valid", "the token is not valid yet")
    if "iat" in payload and now + leeway < payload["iat"]:
        raise error("iat_in_future", "the token was issued in the future")
