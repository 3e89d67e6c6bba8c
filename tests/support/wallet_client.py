"""A small OpenID4VCI 1.0 wallet for tests and benchmarks: httpx + ``ssi``, no shortcuts into the issuer.

It does what a real wallet does over HTTP, and nothing else::

    async with httpx.AsyncClient() as http:
        wallet = WalletClient(http)
        # pre-authorized code flow: offer URI (by value or by reference) -> metadata -> token (+tx_code)
        # -> nonce -> key proof -> credential (or 202 + transaction_id -> deferred)
        result = await wallet.receive_offer(offer_uri, tx_code="123456")
        sd_jwt = result.credentials[0]            # "<issuer-signed JWT>~<disclosure>~...~"
        holder_key = result.holder_keys[0]        # the key in cnf.jwk, to build KB-JWTs

        # authorization code flow with PKCE (and PAR), logging in at the sandbox identity provider
        # non-interactively with its login_hint (the issuer must forward hints: dev setting)
        result = await wallet.authorize_and_receive(issuer_url, "university-diploma", login_hint="12345678Z")

        # DPoP-bound tokens (HAIP): WalletClient(http, dpop_key=Key.generate())

        # deferred issuance
        if result.transaction_id:
            result = await wallet.poll_deferred(result, attempts=10)

``http`` URLs are accepted for loopback hosts (development). Errors from the issuer come back as
:class:`IssuerError` with the HTTP status and the protocol ``error`` code, so tests can assert on them.
The verifier's and wallet API's tests can use it to obtain real credentials from a running issuer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from ssi.dpop import build_dpop_proof
from ssi.jose import Key
from ssi.oid4vci import (
    PRE_AUTHORIZED_CODE_GRANT,
    CredentialOffer,
    build_proof_jwt,
    parse_credential_offer_uri,
)


class IssuerError(Exception):
    """The issuer answered with an error: ``status`` (HTTP), ``error`` (protocol code), ``body``."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body if isinstance(body, dict) else {"raw": body}
        self.error = self.body.get("error", "")
        super().__init__(f"HTTP {status}: {self.error}: {self.body.get('error_description', '')}")


@dataclass
class IssuanceResult:
    """What a flow produced: credentials (or a deferred transaction) and everything needed to go on."""

    issuer: str
    configuration_id: str
    access_token: str
    credentials: list[str] = field(default_factory=list)
    holder_keys: list[Key] = field(default_factory=list)
    notification_id: str | None = None
    transaction_id: str | None = None
    interval: int | None = None
    issuer_metadata: dict[str, Any] = field(default_factory=dict)
    token_response: dict[str, Any] = field(default_factory=dict)


def well_known(identifier: str, name: str) -> str:
    """The well-known URL of ``identifier`` (segment inserted between host and path, RFC 8414 §3.1)."""
    parts = urlsplit(identifier)
    return f"{parts.scheme}://{parts.netloc}/.well-known/{name}{parts.path.rstrip('/')}"


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _check(response: httpx.Response, *ok: int) -> Any:
    if response.status_code not in (ok or (200,)):
        raise IssuerError(response.status_code, _json_or_text(response))
    return _json_or_text(response)


class WalletClient:
    """An OpenID4VCI wallet over ``http`` (an ``httpx.AsyncClient`` the caller owns)."""

    def __init__(self, http: httpx.AsyncClient, *, client_id: str = "cartera-test-wallet",
                 redirect_uri: str = "http://127.0.0.1:9/callback", dpop_key: Key | None = None) -> None:
        self.http = http
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        #: With a key, tokens are requested DPoP-bound (RFC 9449) and presented with fresh proofs.
        self.dpop_key = dpop_key

    def auth_headers(self, access_token: str, method: str, url: str) -> dict[str, str]:
        """``Authorization`` (Bearer, or DPoP plus a fresh ``DPoP`` proof) for a protected request."""
        if self.dpop_key is None:
            return {"Authorization": f"Bearer {access_token}"}
        return {"Authorization": f"DPoP {access_token}",
                "DPoP": build_dpop_proof(self.dpop_key, method, url, access_token=access_token)}

    # -- discovery ------------------------------------------------------------------------------
    async def resolve_offer(self, offer_uri: str) -> CredentialOffer:
        """Parse an offer link; fetch ``credential_offer_uri`` when the offer is by reference."""
        offer, uri = parse_credential_offer_uri(offer_uri, allow_http_loopback=True)
        if offer is not None:
            return offer
        data = _check(await self.http.get(uri or ""))
        return CredentialOffer.parse(data, allow_http_loopback=True)

    async def issuer_metadata(self, issuer: str) -> dict[str, Any]:
        data = _check(await self.http.get(well_known(issuer, "openid-credential-issuer")))
        if data.get("credential_issuer") != issuer:
            raise IssuerError(200, {"error": "metadata_mismatch", "error_description": "credential_issuer differs"})
        return data  # type: ignore[no-any-return]

    async def as_metadata(self, issuer: str) -> dict[str, Any]:
        return _check(await self.http.get(well_known(issuer, "oauth-authorization-server")))  # type: ignore[no-any-return]

    # -- token, nonce, credential ---------------------------------------------------------------
    async def token(self, token_endpoint: str, form: dict[str, str]) -> dict[str, Any]:
        headers = {"DPoP": build_dpop_proof(self.dpop_key, "POST", token_endpoint)} if self.dpop_key else {}
        return _check(await self.http.post(token_endpoint, data=form, headers=headers))  # type: ignore[no-any-return]

    async def nonce(self, metadata: dict[str, Any]) -> str:
        return str(_check(await self.http.post(metadata["nonce_endpoint"]))["c_nonce"])

    def proofs(self, keys: list[Key], issuer: str, nonce: str | None) -> list[str]:
        return [build_proof_jwt(k, audience=issuer, nonce=nonce) for k in keys]

    async def credential_request(self, metadata: dict[str, Any], access_token: str, body: dict[str, Any]) -> httpx.Response:
        """POST a raw credential request body (for tests of malformed requests)."""
        return await self.http.post(metadata["credential_endpoint"], json=body,
                                    headers=self.auth_headers(access_token, "POST", metadata["credential_endpoint"]))

    async def request_credential(self, result: IssuanceResult, keys: list[Key] | None = None,
                                 proofs: list[str] | None = None) -> IssuanceResult:
        """Fresh nonce, one proof per key (default: one new ES256 key), credential request."""
        keys = keys or [Key.generate("ES256")]
        if proofs is None:
            proofs = self.proofs(keys, result.issuer, await self.nonce(result.issuer_metadata))
        response = await self.credential_request(result.issuer_metadata, result.access_token, {
            "credential_configuration_id": result.configuration_id, "proofs": {"jwt": proofs}})
        return self._credential_result(result, keys, _check(response, 200, 202))

    @staticmethod
    def _credential_result(result: IssuanceResult, keys: list[Key], body: dict[str, Any]) -> IssuanceResult:
        if "transaction_id" in body:
            return replace(result, holder_keys=keys, transaction_id=body["transaction_id"], interval=body.get("interval"))
        return replace(result, holder_keys=keys, credentials=[c["credential"] for c in body["credentials"]],
                       notification_id=body.get("notification_id"), transaction_id=None)

    async def poll_deferred(self, result: IssuanceResult, *, attempts: int = 20, wait: float = 0.2) -> IssuanceResult:
        """Poll the deferred endpoint until the credentials come (``wait`` seconds between polls)."""
        for _ in range(attempts):
            url = result.issuer_metadata["deferred_credential_endpoint"]
            response = await self.http.post(url, json={"transaction_id": result.transaction_id},
                                            headers=self.auth_headers(result.access_token, "POST", url))
            body = _check(response, 200, 202)
            if response.status_code == 200:
                return self._credential_result(result, result.holder_keys, body)
            await asyncio.sleep(wait)
        raise IssuerError(202, {"error": "still_pending"})

    async def notify(self, result: IssuanceResult, event: str = "credential_accepted") -> httpx.Response:
        url = result.issuer_metadata["notification_endpoint"]
        return await self.http.post(url, json={"notification_id": result.notification_id, "event": event},
                                    headers=self.auth_headers(result.access_token, "POST", url))

    # -- flows ----------------------------------------------------------------------------------
    async def redeem_offer(self, offer_uri: str, tx_code: str | None = None,
                           configuration_id: str | None = None) -> IssuanceResult:
        """Offer → metadata → token: a result ready for :meth:`request_credential`."""
        offer = await self.resolve_offer(offer_uri)
        issuer = offer.credential_issuer
        metadata = await self.issuer_metadata(issuer)
        as_meta = await self.as_metadata(issuer)
        grant = offer.grants.pre_authorized_code if offer.grants else None
        if grant is None:
            raise IssuerError(0, {"error": "no_pre_authorized_grant"})
        form = {"grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": grant.pre_authorized_code}
        if tx_code is not None:
            form["tx_code"] = tx_code
        token = await self.token(as_meta["token_endpoint"], form)
        return IssuanceResult(issuer=issuer, configuration_id=configuration_id or offer.credential_configuration_ids[0],
                              access_token=token["access_token"], issuer_metadata=metadata, token_response=token)

    async def receive_offer(self, offer_uri: str, tx_code: str | None = None, *, keys: list[Key] | None = None,
                            configuration_id: str | None = None) -> IssuanceResult:
        """The whole pre-authorized code flow."""
        result = await self.redeem_offer(offer_uri, tx_code, configuration_id)
        return await self.request_credential(result, keys)

    async def authorize(self, issuer: str, configuration_id: str, *, login_hint: str | None = None,
                        use_par: bool = True, issuer_state: str | None = None) -> IssuanceResult:
        """Authorization code flow with PKCE S256 (PAR by default) up to the access token."""
        metadata = await self.issuer_metadata(issuer)
        as_meta = await self.as_metadata(issuer)
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(16)
        params = {"response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
                  "code_challenge": challenge, "code_challenge_method": "S256", "state": state,
                  "scope": metadata["credential_configurations_supported"][configuration_id]["scope"]}
        if login_hint:
            params["login_hint"] = login_hint
        if issuer_state:
            params["issuer_state"] = issuer_state
        if use_par:
            pushed = _check(await self.http.post(as_meta["pushed_authorization_request_endpoint"], data=params), 201)
            url = f"{as_meta['authorization_endpoint']}?{urlencode({'client_id': self.client_id, 'request_uri': pushed['request_uri']})}"
        else:
            url = f"{as_meta['authorization_endpoint']}?{urlencode(params)}"
        # Follow redirects by hand (issuer -> identity provider -> issuer callback) until the wallet's own URI.
        for _ in range(10):
            if url.startswith(self.redirect_uri):
                break
            response = await self.http.get(url)
            if response.status_code not in (302, 303):
                raise IssuerError(response.status_code, _json_or_text(response))
            url = response.headers["location"]
        else:
            raise IssuerError(0, {"error": "too_many_redirects"})
        back = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        if back.get("state") != state:
            raise IssuerError(0, {"error": "state_mismatch"})
        if "error" in back:
            raise IssuerError(400, back)
        if back.get("iss") not in (None, issuer):
            raise IssuerError(0, {"error": "iss_mismatch"})
        token = await self.token(as_meta["token_endpoint"], {
            "grant_type": "authorization_code", "code": back["code"], "code_verifier": verifier,
            "redirect_uri": self.redirect_uri, "client_id": self.client_id})
        return IssuanceResult(issuer=issuer, configuration_id=configuration_id, access_token=token["access_token"],
                              issuer_metadata=metadata, token_response=token)

    async def authorize_and_receive(self, issuer: str, configuration_id: str, *, login_hint: str | None = None,
                                    use_par: bool = True, keys: list[Key] | None = None) -> IssuanceResult:
        """The whole authorization code flow."""
        result = await self.authorize(issuer, configuration_id, login_hint=login_hint, use_par=use_par)
        return await self.request_credential(result, keys)
