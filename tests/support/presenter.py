"""A small OpenID4VP wallet built on ``ssi`` for tests: fetch, verify, match, present, post.

Flow: parse the ``openid4vp://`` link → fetch the request object from ``request_uri`` (GET, or POST
with ``wallet_nonce``) → verify it (x5c chain to the relying-party anchors, client id rules) → evaluate
the DCQL query against the holder's SD-JWT VCs → present the matched claims with a KB-JWT (``aud`` =
full client id, ``nonce``) → ``direct_post`` or ``direct_post.jwt`` (ECDH-ES to the request's key).

Every step is a separate method so tests can tamper with any of them.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ssi.dcql import evaluate
from ssi.encoding import json_dumps
from ssi.jose import Key
from ssi.jwe import encrypt_jwe
from ssi.oid4vp import RequestObject, parse_authorization_request_uri, verify_request_object
from ssi.sd_jwt import SDJWT


@dataclass
class HeldCredential:
    """An SD-JWT VC (as issued, with every disclosure) and the holder key bound to it."""

    token: str
    holder_key: Key

    @property
    def parsed(self) -> SDJWT:
        return SDJWT.parse(self.token)


class Presenter:
    """A test wallet. ``rp_anchors``: the relying-party trust anchors for request objects."""

    def __init__(self, client: httpx.Client, rp_anchors: Sequence[Any], *, allow_untrusted: bool = False,
                 allow_unsigned: bool = False) -> None:
        self.client = client
        self.rp_anchors = list(rp_anchors)
        self.allow_untrusted = allow_untrusted
        self.allow_unsigned = allow_unsigned

    # -- the request -----------------------------------------------------------------------------
    def fetch_request(self, uri: str, *, method: str = "get") -> RequestObject:
        """Fetch and verify the request object named by an ``openid4vp://`` / ``haip-vp://`` link."""
        auth = parse_authorization_request_uri(uri, allow_http_loopback=True)
        assert auth.request_uri is not None
        wallet_nonce = None
        if method == "post":
            wallet_nonce = secrets.token_urlsafe(16)
            response = self.client.post(auth.request_uri, data={"wallet_nonce": wallet_nonce})
        else:
            response = self.client.get(auth.request_uri)
        response.raise_for_status()
        assert response.headers["content-type"].startswith("application/oauth-authz-req+jwt")
        return verify_request_object(response.text, trust_anchors=self.rp_anchors, client_id=auth.client_id,
                                     allow_untrusted=self.allow_untrusted, allow_unsigned=self.allow_unsigned,
                                     wallet_nonce=wallet_nonce, allow_http_loopback=True)

    # -- the answer ------------------------------------------------------------------------------
    @staticmethod
    def present_one(credential: HeldCredential, paths: Sequence[Sequence[Any]], request: RequestObject, *,
                    aud: str | None = None, nonce: str | None = None, iat: int | None = None,
                    holder_key: Key | None = None) -> str:
        """One presentation of ``credential`` disclosing ``paths`` with a KB-JWT for ``request``."""
        return credential.parsed.present([tuple(p) for p in paths], holder_key=holder_key or credential.holder_key,
                                         aud=aud if aud is not None else request.client_id,
                                         nonce=nonce if nonce is not None else request.nonce,
                                         iat=iat if iat is not None else int(time.time()))

    def build_vp_token(self, request: RequestObject, credentials: Sequence[HeldCredential]) -> dict[str, list[str]]:
        """Match the request's DCQL query against ``credentials`` and present what it asks."""
        by_token = {c.token: c for c in credentials}
        parsed = [c.parsed for c in credentials]
        result = evaluate(request.query, parsed)
        assert result.satisfiable, f"the test wallet cannot satisfy the query: {result.unsatisfied}"
        vp_token: dict[str, list[str]] = {}
        for qid in result.required + result.optional:
            match = result.matches[qid][0]
            held = by_token[match.credential.token]
            vp_token[qid] = [self.present_one(held, match.paths, request)]
        return vp_token

    def post_response(self, request: RequestObject, vp_token: dict[str, Any] | None = None, *,
                      error: str | None = None, state: str | None = None, enc: str = "A128GCM",
                      recipient: dict[str, Any] | None = None) -> httpx.Response:
        """POST the Authorization Response to ``response_uri`` in the request's response mode."""
        payload: dict[str, Any] = {"state": state if state is not None else request.state}
        if error is not None:
            payload["error"] = error
        else:
            payload["vp_token"] = vp_token
        if request.response_mode == "direct_post.jwt":
            assert request.client_metadata is not None
            key = recipient or request.client_metadata.encryption_key()
            assert key is not None
            jwe = encrypt_jwe(payload, key, enc=enc)
            return self.client.post(request.response_uri, data={"response": jwe})
        form = {"state": payload["state"]}
        if error is not None:
            form["error"] = error
        else:
            form["vp_token"] = json_dumps(vp_token)
        return self.client.post(request.response_uri, data=form)

    def present(self, uri: str, credentials: Sequence[HeldCredential], *, method: str = "get") -> httpx.Response:
        """The whole flow for an ``openid4vp://`` link; returns the response endpoint's answer."""
        request = self.fetch_request(uri, method=method)
        return self.post_response(request, self.build_vp_token(request, credentials))
