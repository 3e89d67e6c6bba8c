"""Sender-constrained access tokens (DPoP, RFC 9449) and the ``Authorization`` header of protocol requests.

A wallet that sends a ``DPoP`` proof to the token endpoint gets a ``DPoP`` token bound to its key's
thumbprint; every request with that token must then use ``Authorization: DPoP <token>`` and carry a
fresh proof for that method and URL, with ``ath`` and the same key. A bearer token must come as
``Authorization: Bearer``. Proof ``jti`` values are recorded (hashed, with the key) for the proof
lifetime, so a captured proof cannot be replayed. ``require_dpop`` refuses bearer tokens altogether
(HAIP).
"""

from __future__ import annotations

import datetime as dt
import re

from fastapi import Request
from sqlalchemy.exc import IntegrityError

from service_kit.errors import APIError
from ssi.dpop import verify_dpop_proof
from ssi.errors import MessageError
from ssi.jose import DEFAULT_ALGORITHMS
from ssi.oid4vci import INVALID_DPOP_PROOF, INVALID_REQUEST

from .context import IssuerContext, secret_hash, utcnow
from .models import DPoPProofUse

DPOP_MAX_AGE = 300
_LEEWAY = 30
#: How long a single-use record (a DPoP proof's ``jti``, a used ``c_nonce``) is kept past the last moment
#: its value is valid: workers' clocks may disagree, and one whose clock is behind still accepts a value
#: another already takes for expired; purged then, its record could not refuse a replay there.
USED_RECORD_MARGIN = dt.timedelta(seconds=2 * _LEEWAY)


#: The credentials of ``Authorization: Bearer`` (RFC 6750 §2.1 ``b64token``) and ``DPoP`` (RFC 9449 §7.1,
#: ``token68``): one token, no spaces or commas.
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
#: The schemes a protected endpoint takes.
_SCHEMES = ("bearer", "dpop")


def _scheme(header: str) -> str:
    return header.partition(" ")[0].lower()


def authorization(request: Request) -> tuple[str, str] | None:
    """``(scheme, token)`` from ``Authorization: Bearer|DPoP <token>`` (scheme lower-cased), or None:
    no credentials this issuer takes (no header, another scheme) or a token longer than any of ours
    (:func:`token_refused` answers 401).

    A header that is not one credential — the scheme without a token, a token with spaces or commas
    (two credentials in one header), several ``Authorization`` headers — is a malformed request: 400
    ``invalid_request`` (RFC 6750 §3.1), challenged in the request's scheme, not ``invalid_token``."""
    headers = request.headers.getlist("authorization")
    if not headers:
        return None
    if len(headers) > 1:
        raise _malformed("send one Authorization header, not several", _scheme(headers[0]))
    scheme, _, value = headers[0].partition(" ")
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        return None
    value = value.strip()
    if not value:
        raise _malformed("the Authorization header has no access token", scheme)
    if not _TOKEN68.fullmatch(value):
        raise _malformed("the Authorization header must carry one access token (no spaces or commas)", scheme)
    if len(value) > 200:
        return None
    return scheme, value


def _malformed(description: str, scheme: str) -> APIError:
    challenge = f'DPoP error="invalid_request", {_DPOP_ALGS}' if scheme == "dpop" else 'Bearer error="invalid_request"'
    return APIError(400, INVALID_REQUEST, description, {"WWW-Authenticate": challenge})


def _proof_header(request: Request) -> str | None:
    values = request.headers.getlist("dpop")
    if len(values) > 1:
        raise APIError(400, INVALID_DPOP_PROOF, "exactly one DPoP header is allowed")
    return values[0] if values else None


async def _record(ctx: IssuerContext, jkt: str, jti: str, *, resource: bool) -> None:
    try:
        async with ctx.session() as session:
            session.add(DPoPProofUse(jti_hash=secret_hash(f"{jkt}:{jti}"),
                                     expires_at=utcnow() + dt.timedelta(seconds=DPOP_MAX_AGE) + USED_RECORD_MARGIN))
    except IntegrityError as exc:
        if resource:
            raise _unauthorized("the DPoP proof was already used", True, INVALID_DPOP_PROOF) from exc
        raise APIError(400, INVALID_DPOP_PROOF, "the DPoP proof was already used") from exc


def plain_bearer_request(ctx: IssuerContext, request: Request) -> bool:
    """No DPoP header and none required: :func:`token_request_binding` would answer ``None`` at once."""
    return "dpop" not in request.headers and not ctx.settings.require_dpop


async def token_request_binding(ctx: IssuerContext, request: Request, token_url: str) -> str | None:
    """At the token endpoint: the ``jkt`` to bind the new token to, or None (bearer)."""
    proof = _proof_header(request)
    if proof is None:
        if ctx.settings.require_dpop:
            raise APIError(400, INVALID_DPOP_PROOF, "a DPoP proof is required")
        return None
    try:
        verified = verify_dpop_proof(proof, method="POST", uri=token_url, max_age=DPOP_MAX_AGE, leeway=_LEEWAY)
    except MessageError as exc:
        raise APIError(400, INVALID_DPOP_PROOF, exc.detail) from exc
    await _record(ctx, verified.jkt, verified.jti, resource=False)
    return verified.jkt


#: The ``algs`` of a ``DPoP`` challenge (RFC 9449 §7.1): the proof algorithms accepted.
_DPOP_ALGS = f'algs="{" ".join(DEFAULT_ALGORITHMS)}"'


def _unauthorized(description: str, dpop: bool, error: str = "invalid_token") -> APIError:
    challenge = f'DPoP error="{error}", {_DPOP_ALGS}' if dpop else f'Bearer error="{error}"'
    return APIError(401, error, description, {"WWW-Authenticate": challenge})


def token_refused(ctx: IssuerContext, request: Request) -> APIError:
    """The 401 for a request whose access token is missing, unknown or expired, challenging in the
    scheme it used: ``DPoP error="invalid_token", algs="..."`` for ``Authorization: DPoP`` (RFC 9449
    §7.1), ``Bearer error="invalid_token"`` for ``Bearer``. A request without credentials this issuer
    takes — no ``Authorization`` header, or one of another scheme (``Basic``) — gets challenges without
    an error code (RFC 6750 §3.1): ``DPoP`` with its ``algs``, preceded by ``Bearer`` unless
    ``require_dpop``."""
    header = request.headers.get("authorization")
    scheme = _scheme(header) if header is not None else None
    if scheme not in _SCHEMES:
        challenges = [f"DPoP {_DPOP_ALGS}"] if ctx.settings.require_dpop else ["Bearer", f"DPoP {_DPOP_ALGS}"]
        return APIError(401, "invalid_token", "the access token is missing", {"WWW-Authenticate": ", ".join(challenges)})
    return _unauthorized("the access token is missing, unknown or expired", scheme == "dpop")


async def check_presentation(ctx: IssuerContext, request: Request, scheme: str, token: str, jkt: str | None,
                             url: str) -> None:
    """At a protected endpoint: the token is presented as its binding requires (401 otherwise)."""
    if jkt is None:
        if scheme != "bearer":
            raise _unauthorized("this access token is not DPoP-bound; use the Bearer scheme", False)
        return
    if scheme != "dpop":
        raise _unauthorized("this access token is DPoP-bound; use the DPoP scheme with a proof", True)
    proof = _proof_header(request)
    if proof is None:
        raise _unauthorized("a DPoP proof is required with this access token", True, INVALID_DPOP_PROOF)
    try:
        verified = verify_dpop_proof(proof, method=request.method, uri=url, access_token=token, expected_jkt=jkt,
                                     max_age=DPOP_MAX_AGE, leeway=_LEEWAY)
    except MessageError as exc:
        raise _unauthorized(exc.detail, True, INVALID_DPOP_PROOF) from exc
    await _record(ctx, verified.jkt, verified.jti, resource=True)
