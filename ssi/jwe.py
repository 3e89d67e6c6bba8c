"""Compact JWE for encrypted authorization responses (OpenID4VP ``direct_post.jwt``).

HAIP asks for ECDH-ES key agreement on P-256 with A128GCM or A256GCM content encryption; that is
the default allow-list here. joserfc does the cryptography; this module adds what a receiver needs
around it: the header is checked against explicit ``alg``/``enc`` allow-lists *before* any key
agreement, compression (``zip``) and critical headers are refused, and every failure becomes a
:class:`~ssi.errors.JOSEError` with a stable code.
"""

from __future__ import annotations

from typing import Any

from joserfc import jwe as _jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from .encoding import b64url_decode, b64url_encode, json_dumps, json_loads
from .errors import EncodingError, JOSEError
from .jose import Key

DEFAULT_JWE_ALGORITHMS: tuple[str, ...] = ("ECDH-ES",)
DEFAULT_JWE_ENCRYPTIONS: tuple[str, ...] = ("A128GCM", "A256GCM")
#: Refuse tokens larger than this before touching them (a vp_token with several credentials is
#: a few tens of kilobytes).
MAX_JWE_LENGTH = 1_000_000


def _ec_key(key: Key | dict[str, Any], *, private: bool) -> ECKey:
    try:
        if isinstance(key, Key):
            jwk = key.private_jwk() if private else key.public_jwk()
        elif isinstance(key, dict):
            if private:
                raise JOSEError("bad_key", "decryption needs a private Key")
            jwk = {k: v for k, v in key.items() if k in ("kty", "crv", "x", "y", "kid")}
            Key.from_jwk(jwk)  # our strict JWK checks (curve, point on curve, lengths)
        else:
            raise JOSEError("bad_key", "the recipient must be a public JWK or a Key")
        if jwk.get("kty") != "EC":
            raise JOSEError("bad_key", "ECDH-ES needs an EC (P-256/P-384) key")
        jwk = {k: v for k, v in jwk.items() if k != "alg"}
        return ECKey.import_key(jwk)
    except JOSEError:
        raise
    except (JoseError, ValueError, TypeError) as exc:
        raise JOSEError("bad_key", "the key cannot be used for ECDH-ES") from exc


def encrypt_jwe(payload: dict[str, Any] | bytes, recipient: dict[str, Any] | Key, *, alg: str = "ECDH-ES",
                enc: str = "A128GCM", kid: str | None = None, apu: bytes | None = None,
                apv: bytes | None = None) -> str:
    """Encrypt ``payload`` (a JSON object or raw bytes) to ``recipient``'s public key.

    ``kid`` defaults to the recipient JWK's ``kid`` (OpenID4VP requires echoing it); ``apu``/``apv``
    are the raw Agreement PartyUInfo/VInfo bytes.
    """
    if alg not in DEFAULT_JWE_ALGORITHMS:
        raise JOSEError("jwe_alg_not_allowed", f"JWE alg '{alg}' is not supported")
    if enc not in DEFAULT_JWE_ENCRYPTIONS:
        raise JOSEError("jwe_alg_not_allowed", f"JWE enc '{enc}' is not supported")
    if isinstance(recipient, dict) and "alg" in recipient and recipient["alg"] != alg:
        raise JOSEError("jwe_alg_not_allowed", "the recipient key names another algorithm")
    key = _ec_key(recipient, private=False)
    if kid is None:
        kid = recipient.get("kid") if isinstance(recipient, dict) else recipient.kid
    header: dict[str, Any] = {"alg": alg, "enc": enc}
    if kid:
        header["kid"] = kid
    if apu is not None:
        header["apu"] = b64url_encode(apu)
    if apv is not None:
        header["apv"] = b64url_encode(apv)
    plaintext = payload if isinstance(payload, bytes) else json_dumps(payload).encode("utf-8")
    try:
        return _jwe.encrypt_compact(header, plaintext, key, algorithms=[alg, enc])
    except (JoseError, ValueError) as exc:
        raise JOSEError("jwe_encrypt_failed", "the payload could not be encrypted") from exc


def jwe_header(token: Any) -> dict[str, Any]:
    """The protected header of a compact JWE, checked for shape only (for picking a key by ``kid``)."""
    if not isinstance(token, str) or len(token) > MAX_JWE_LENGTH:
        raise JOSEError("bad_jwe", "a compact JWE must be a string of reasonable size")
    parts = token.split(".")
    if len(parts) != 5:
        raise JOSEError("bad_jwe", "a compact JWE has exactly five parts")
    try:
        header = json_loads(b64url_decode(parts[0]))
        for part in parts[1:]:
            b64url_decode(part)
    except EncodingError as exc:
        raise JOSEError("bad_jwe", "a JWE part is not valid base64url/JSON") from exc
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str) or not isinstance(header.get("enc"), str):
        raise JOSEError("bad_jwe", "the JWE header needs string 'alg' and 'enc'")
    return header


def decrypt_jwe(token: Any, key: Key, *, algorithms: tuple[str, ...] = DEFAULT_JWE_ALGORITHMS,
                encryptions: tuple[str, ...] = DEFAULT_JWE_ENCRYPTIONS) -> bytes:
    """Decrypt a compact JWE with our private ``key``.

    Codes: ``jose.bad_jwe`` (not a JWE), ``jose.jwe_alg_not_allowed`` (``alg``/``enc`` off the
    lists, ``zip`` or ``crit`` present), ``jose.jwe_decrypt_failed`` (wrong key, tampering).
    """
    header = jwe_header(token)
    if header["alg"] not in algorithms or header["alg"] not in DEFAULT_JWE_ALGORITHMS:
        raise JOSEError("jwe_alg_not_allowed", "the JWE alg is not allowed")
    if header["enc"] not in encryptions or header["enc"] not in DEFAULT_JWE_ENCRYPTIONS:
        raise JOSEError("jwe_alg_not_allowed", "the JWE enc is not allowed")
    if "zip" in header or "crit" in header:
        raise JOSEError("jwe_alg_not_allowed", "compressed or critical-header JWEs are refused")
    if not isinstance(header.get("epk"), dict):
        raise JOSEError("bad_jwe", "an ECDH-ES JWE needs an 'epk' object")
    ec_key = _ec_key(key, private=True)
    try:
        result = _jwe.decrypt_compact(token, ec_key, algorithms=[header["alg"], header["enc"]])
    except (JoseError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise JOSEError("jwe_decrypt_failed", "the JWE does not decrypt with this key") from exc
    plaintext = result.plaintext
    if plaintext is None:
        raise JOSEError("jwe_decrypt_failed", "the JWE has no plaintext")
    return bytes(plaintext)


def decrypt_jwe_json(token: Any, key: Key, *, algorithms: tuple[str, ...] = DEFAULT_JWE_ALGORITHMS,
                     encryptions: tuple[str, ...] = DEFAULT_JWE_ENCRYPTIONS) -> dict[str, Any]:
    """Decrypt and parse a JWE whose plaintext is a JSON object (an encrypted authorization response)."""
    raw = decrypt_jwe(token, key, algorithms=algorithms, encryptions=encryptions)
    try:
        value = json_loads(raw)
    except EncodingError as exc:
        raise JOSEError("bad_jwe_payload", "the decrypted payload is not JSON") from exc
    if not isinstance(value, dict):
        raise JOSEError("bad_jwe_payload", "the decrypted payload is not a JSON object")
    return value
