"""OAuth 2.0 DPoP (RFC 9449): build and verify DPoP proofs, bind access tokens to a key.

A DPoP proof is a JWT (``typ: dpop+jwt``) signed by the client's key, carried in the ``DPoP`` HTTP
header; its header holds the public ``jwk`` and its payload ``jti``, ``htm`` (HTTP method), ``htu``
(the target URI without query and fragment), ``iat``, and ``ath`` (base64url SHA-256 of the access
token) when presented with one. The server binds the access token to the key's RFC 7638 thumbprint
(``jkt``) and checks every later proof against it. Replay of ``jti`` is the caller's to prevent
(it needs storage): :func:`verify_dpop_proof` returns the ``jti`` to record.

Failures raise :class:`~ssi.errors.MessageError` with codes ``message.dpop_*``; answer them with the
OAuth error ``invalid_dpop_proof``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .encoding import b64url_encode
from .errors import JOSEError, MessageError
from .jose import DEFAULT_ALGORITHMS, Key, parse_jws, sign_jws, verify_parsed

DPOP_TYP = "dpop+jwt"
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")


def access_token_hash(access_token: str) -> str:
    """``ath``: base64url SHA-256 of the ASCII access token."""
    return b64url_encode(hashlib.sha256(access_token.encode("ascii")).digest())


def normalize_htu(uri: str) -> str:
    """The URI as compared in ``htu``: scheme and host lower-cased, no query, no fragment."""
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise MessageError("dpop_bad_htu", "htu is not a URI") from exc
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", "", ""))


def build_dpop_proof(key: Key, method: str, uri: str, *, access_token: str | None = None, nonce: str | None = None,
                     iat: int | None = None, jti: str | None = None) -> str:
    """A DPoP proof for ``method`` ``uri`` (with ``ath`` when ``access_token`` is given)."""
    payload: dict[str, Any] = {"jti": jti or secrets.token_urlsafe(16), "htm": method.upper(),
                               "htu": normalize_htu(uri), "iat": int(time.time()) if iat is None else iat}
    if access_token is not None:
        payload["ath"] = access_token_hash(access_token)
    if nonce is not None:
        payload["nonce"] = nonce
    return sign_jws({"typ": DPOP_TYP, "jwk": key.public_jwk(include_kid=False)}, payload, key)


@dataclass(frozen=True)
class VerifiedDPoP:
    """A valid DPoP proof: the key's thumbprint (``jkt``), the ``jti`` to record, and ``iat``."""

    jkt: str
    jti: str
    iat: int


def verify_dpop_proof(proof: Any, *, method: str, uri: str, access_token: str | None = None,
                      expected_jkt: str | None = None, now: float | None = None, max_age: int = 300,
                      leeway: int = 30, algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS) -> VerifiedDPoP:
    """Verify a DPoP proof received with a ``method`` request to ``uri``.

    Codes: ``message.dpop_malformed``, ``dpop_bad_typ``, ``dpop_bad_key``, ``dpop_private_key``,
    ``dpop_alg_not_allowed``, ``dpop_bad_signature``, ``dpop_bad_htm``, ``dpop_bad_htu``,
    ``dpop_bad_iat``, ``dpop_stale``, ``dpop_missing_jti``, ``dpop_bad_ath``, ``dpop_key_mismatch``.
    """
    now = time.time() if now is None else now
    if not isinstance(proof, str) or len(proof) > 8192:
        raise MessageError("dpop_malformed", "the DPoP proof is not a compact JWS")
    try:
        jws = parse_jws(proof)
        payload = jws.json_payload()
    except JOSEError as exc:
        raise MessageError("dpop_malformed", "the DPoP proof is not a compact JWS with a JSON payload") from exc
    header = jws.header
    if header.get("typ") != DPOP_TYP:
        raise MessageError("dpop_bad_typ", "the DPoP proof's typ is not dpop+jwt")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise MessageError("dpop_bad_key", "the DPoP proof carries no jwk")
    if any(m in jwk for m in _PRIVATE_MEMBERS):
        raise MessageError("dpop_private_key", "the DPoP jwk contains private key material")
    if header["alg"] not in algorithms:
        raise MessageError("dpop_alg_not_allowed", "the DPoP proof's algorithm is not allowed")
    try:
        key = Key.from_jwk(jwk, alg=header["alg"])
    except JOSEError as exc:
        raise MessageError("dpop_bad_key", "the DPoP jwk is not a usable public key") from exc
    try:
        verify_parsed(jws, key, algorithms)
    except JOSEError as exc:
        raise MessageError("dpop_bad_signature", "the DPoP proof does not verify with its jwk") from exc
    if payload.get("htm") != method.upper():
        raise MessageError("dpop_bad_htm", "the DPoP proof is for another HTTP method")
    htu = payload.get("htu")
    if not isinstance(htu, str) or normalize_htu(htu) != normalize_htu(uri):
        raise MessageError("dpop_bad_htu", "the DPoP proof is for another URI")
    iat = payload.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise MessageError("dpop_bad_iat", "the DPoP proof has no numeric iat")
    # Compared, never subtracted: 'iat' may be an integer too large for a float (OverflowError).
    if iat > now + leeway or iat < now - max_age:
        raise MessageError("dpop_stale", "the DPoP proof is too old or from the future")
    jti = payload.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 200:
        raise MessageError("dpop_missing_jti", "the DPoP proof has no jti")
    if access_token is not None and payload.get("ath") != access_token_hash(access_token):
        raise MessageError("dpop_bad_ath", "the DPoP proof is not bound to this access token")
    jkt = key.thumbprint()
    if expected_jkt is not None and jkt != expected_jkt:
        raise MessageError("dpop_key_mismatch", "the DPoP key is not the one the access token is bound to")
    return VerifiedDPoP(jkt=jkt, jti=jti, iat=int(iat))
