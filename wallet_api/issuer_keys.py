"""The keys the wallet trusts a credential issuer to sign with.

One rule for everything an issuer signs: the credentials the wallet receives
(:func:`wallet_api.receiving.verify_received`) and the status lists it checks them against
(:mod:`wallet_api.background`). A token with an ``x5c`` header is the issuer's only when the chain
leads to the configured issuer anchors and its leaf certificate names the issuer (SAN URI equal to
``iss``, :func:`ssi.x509.san_matches`): every issuer, every tenant of a shared host, holds a
certificate under the same anchors, so a chain alone says only "some trusted issuer". A token without
``x5c`` is verified with a key the issuer's JWT VC Issuer Metadata publishes, and only when the
operator allows that (``trust_issuer_metadata``). Whose token it is comes from the caller (the
credential issuer the wallet talked to, the issuer of the credential it stores), never from the
token's own claims.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ssi import sd_jwt_vc
from ssi.jose import Key

from .context import WalletContext, get_json_blocking


def issuer_key_resolver(ctx: WalletContext, issuer: str) -> sd_jwt_vc.ChainedKeyResolver:
    """The resolver of ``issuer``'s keys; resolve with a payload whose ``iss`` is ``issuer``
    (:func:`status_list_key` does so for status list tokens, which need not carry ``iss``)."""
    def fetch(url: str) -> Any:
        return get_json_blocking(url, timeout=ctx.settings.http_timeout, policy=ctx.settings.outbound_policy())

    x5c = sd_jwt_vc.X5CKeyResolver(ctx.issuer_anchors) if ctx.issuer_anchors else None
    meta = sd_jwt_vc.IssuerMetadataKeyResolver(fetch, allowed_issuers=[issuer], allow_http_loopback=ctx.dev) \
        if ctx.settings.trust_issuer_metadata else None
    return sd_jwt_vc.ChainedKeyResolver(x5c, meta)


def status_list_key(ctx: WalletContext, issuer: str) -> Callable[[dict[str, Any], dict[str, Any]], Key]:
    """The key callback of :func:`ssi.status_list.verify_status_list_token` for the list a credential of
    ``issuer`` points at: a key of ``issuer``'s by :func:`issuer_key_resolver`, whoever the token says
    signed it. Raises :class:`ssi.errors.SSIError` when the token is not ``issuer``'s."""
    resolver = issuer_key_resolver(ctx, issuer)

    def resolve(header: dict[str, Any], _payload: dict[str, Any]) -> Key:
        return resolver.resolve(header, {"iss": issuer}, now=time.time()).key
    return resolve
