"""Authorization code flow: PAR, the authorization endpoint, the citizen's login at VÀLid, the code.

1. The wallet pushes its request (``/par``, optional) or sends it to ``/authorize`` directly:
   ``response_type=code``, ``client_id`` and ``redirect_uri`` (registered: ``oauth_clients``), PKCE
   ``code_challenge`` with ``code_challenge_method=S256`` (required), and ``scope`` (type ids) or
   ``authorization_details`` (``openid_credential`` with ``credential_configuration_id``), optionally
   ``issuer_state``.
2. The issuer sends the citizen to VÀLid (authorization code, scope ``autenticacio_usuari``, its own
   PKCE and ``state``), and VÀLid returns to ``/t/<slug>/login/callback``.
3. The issuer exchanges VÀLid's code, reads ``getUserInfo`` (identifier, name, method, assurance level)
   and redirects the wallet back with its own single-use code (``code``, ``state``, ``iss``).
4. At the token endpoint the code, the PKCE verifier, the redirect URI and the client id are checked;
   the access token is bound to the authenticated identifier only, and names the client: a key proof
   whose ``iss`` names another is refused. A code presented a second time revokes that token.

Each step moves the request row from one ``stage`` to the next with a conditional ``UPDATE``, so a
replayed state or code finds nothing to move.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from sqlalchemy import delete, select, update

from service_kit.db import mark_used_once
from service_kit.errors import APIError, safe_description
from ssi.encoding import json_loads
from ssi.errors import EncodingError
from ssi.oid4vci import INVALID_GRANT, INVALID_REQUEST, UNAUTHORIZED_CLIENT

from .context import IssuerContext, new_id, new_secret, secret_hash, utcnow
from .models import (
    AccessToken,
    AuthorizationRequest,
    DeferredTransaction,
    IssuanceClaim,
    Offer,
    StoredResponse,
)
from .settings import OAuthClient, redirect_uri_problem
from .tenancy import TenantRef

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
VALID_SCOPE = "autenticacio_usuari"
_PKCE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")


NO_CLIENTS = ("the authorization code flow is off: this issuer has no registered wallet clients "
              "(the operator registers them in CARTERA_ISSUER_OAUTH_CLIENTS)")
NO_IDP = ("the authorization code flow is off: this issuer has no identity provider to log citizens in "
          "(CARTERA_ISSUER_IDP_AUTHORIZE_URL, _TOKEN_URL, _USERINFO_URL)")


def _check_client(ctx: IssuerContext, client_id: str) -> OAuthClient | None:
    """The registered client ``client_id`` (None: any client, ``dev_mode`` with none registered).

    Its errors are never redirected: until the client and its redirect URI are known, sending the
    browser anywhere would make the issuer an open redirector (RFC 6749 §4.1.2.1)."""
    if not ctx.settings.idp_configured:
        raise APIError(400, UNAUTHORIZED_CLIENT, NO_IDP)
    clients = ctx.settings.oauth_clients
    if not clients:
        if ctx.settings.dev_mode:
            return None
        raise APIError(400, UNAUTHORIZED_CLIENT, NO_CLIENTS)
    client = clients.get(client_id)
    if client is None:
        raise APIError(400, UNAUTHORIZED_CLIENT, "client_id is not a registered client of this issuer")
    return client


def _check_redirect_uri(ctx: IssuerContext, client_id: str, uri: str) -> None:
    client = _check_client(ctx, client_id)
    if client is not None and uri not in client.redirect_uris:
        # RFC 6749 §3.1.2.2/§3.1.2.3: a public client's redirect URIs are registered, compared exactly.
        raise APIError(400, INVALID_REQUEST, "redirect_uri is not registered for this client")
    problem = redirect_uri_problem(uri, allow_http_loopback=ctx.settings.allow_http_loopback)
    if problem:
        raise APIError(400, INVALID_REQUEST, problem)


INVALID_AUTHORIZATION_DETAILS = "invalid_authorization_details"
#: More authorization details than any wallet asks for (an offer names at most 10 configurations).
MAX_AUTHORIZATION_DETAILS = 20


def _details_error(description: str) -> APIError:
    return APIError(400, INVALID_AUTHORIZATION_DETAILS, description)


def requested_configurations(raw: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The credential configurations an ``authorization_details`` parameter (RFC 9396, at the
    authorization or the token endpoint) asks for, in order and each once, with the parsed details.

    Each detail must be an ``openid_credential`` object naming a ``credential_configuration_id``
    (OpenID4VCI 1.0 §5.1.1); members this issuer does not use (``claims``, ``locations``) are ignored.
    Anything else is 400 ``invalid_authorization_details`` (RFC 9396 §5, §6): JSON that does not
    parse, an empty array, another type. Whether the configurations may be had is the caller's check.
    """
    try:
        details = json_loads(raw)
    except EncodingError as exc:
        raise _details_error("authorization_details is not JSON") from exc
    if not isinstance(details, list) or not details:
        raise _details_error("authorization_details must be a non-empty array")
    if len(details) > MAX_AUTHORIZATION_DETAILS:
        raise _details_error(f"authorization_details has more than {MAX_AUTHORIZATION_DETAILS} entries")
    wanted: list[str] = []
    for item in details:
        if not isinstance(item, dict) or item.get("type") != "openid_credential":
            raise _details_error("only openid_credential details are supported")
        cid = item.get("credential_configuration_id")
        if not isinstance(cid, str) or not cid or len(cid) > 100:
            raise _details_error("each detail needs a credential_configuration_id")
        wanted.append(cid)
    return list(dict.fromkeys(wanted)), details


def _configurations(params: dict[str, str], known: set[str]) -> tuple[list[str], list[dict[str, Any]] | None]:
    wanted: list[str] = []
    details: list[dict[str, Any]] | None = None
    if params.get("authorization_details"):
        wanted, details = requested_configurations(params["authorization_details"])
        if any(cid not in known for cid in wanted):
            raise _details_error("unknown credential_configuration_id")
    for scope in params.get("scope", "").split():
        if scope in known:
            wanted.append(scope)
    if not wanted:
        raise APIError(400, "invalid_scope", "request a credential by scope or authorization_details")
    return list(dict.fromkeys(wanted)), details


async def create_request(ctx: IssuerContext, tenant: TenantRef, params: dict[str, str], known: set[str], *,
                         pushed: bool) -> tuple[str, AuthorizationRequest]:
    """Validate an authorization request and store it; returns (request_uri or id, row).

    ``client_id`` must be a registered client (``oauth_clients``) and ``redirect_uri`` one of its
    redirect URIs, exactly; with no client registered, any client is accepted in ``dev_mode`` and none
    otherwise. Errors found until then are plain :class:`APIError` (a JSON 400, never a redirect: the
    redirect URI is not known good). Errors found once ``client_id`` and ``redirect_uri`` are known
    good are :class:`RedirectableError` (the authorization endpoint sends them back to the wallet,
    RFC 6749 §4.1.2.1; PAR answers JSON).
    """
    if pushed and "request_uri" in params:
        # RFC 9126 §2.1: a pushed request cannot itself refer to a request_uri.
        raise APIError(400, INVALID_REQUEST, "request_uri is not allowed in a pushed authorization request")
    client_id = params.get("client_id", "")
    if not client_id or len(client_id) > 300:
        raise APIError(400, INVALID_REQUEST, "client_id is required")
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri or len(redirect_uri) > 2000:
        raise APIError(400, INVALID_REQUEST, "redirect_uri is required")
    _check_redirect_uri(ctx, client_id, redirect_uri)
    try:
        return await _create_checked(ctx, tenant, params, known, pushed=pushed, client_id=client_id,
                                     redirect_uri=redirect_uri)
    except APIError as exc:
        raise RedirectableError(exc, redirect_uri, params.get("state"), ctx.issuer_url(tenant.slug)) from exc


class RedirectableError(APIError):
    """An authorization request error to send back to the wallet's (validated) redirect URI.

    Its ``error_description`` goes into the redirect within RFC 6749 §4.1.2.1/§5.2's characters
    (``service_kit.errors.safe_description``, as every JSON error answer's: :func:`_redirect`)."""

    def __init__(self, inner: APIError, redirect_uri: str, state: str | None, issuer: str) -> None:
        super().__init__(inner.status_code, inner.error, inner.error_description, inner.headers)
        params = {"error": inner.error, "error_description": inner.error_description, "iss": issuer}
        if state is not None:
            params["state"] = state[:1000]
        self.location = _redirect(redirect_uri, params)


async def _create_checked(ctx: IssuerContext, tenant: TenantRef, params: dict[str, str], known: set[str], *,
                          pushed: bool, client_id: str, redirect_uri: str) -> tuple[str, AuthorizationRequest]:
    if params.get("response_type") != "code":
        raise APIError(400, "unsupported_response_type", "response_type must be code")
    if params.get("code_challenge_method") != "S256" or not _PKCE.match(params.get("code_challenge", "")):
        raise APIError(400, INVALID_REQUEST, "PKCE with code_challenge_method=S256 is required")
    configuration_ids, details = _configurations(params, known)
    issuer_state = params.get("issuer_state") or None
    if issuer_state is not None and len(issuer_state) > 200:
        raise APIError(400, INVALID_REQUEST, "issuer_state is too long")
    if issuer_state is not None and await _open_offer(ctx, tenant, issuer_state, utcnow()) is None:
        raise APIError(400, INVALID_REQUEST, "issuer_state names no open offer with the authorization code grant")
    state = params.get("state")
    if state is not None and len(state) > 1000:
        raise APIError(400, INVALID_REQUEST, "state is too long")
    hint = params.get("login_hint") if ctx.settings.idp_forward_login_hint else None
    request_uri = REQUEST_URI_PREFIX + new_secret() if pushed else None
    row = AuthorizationRequest(
        id=new_id("ar_", 16), tenant_id=tenant.id, request_uri_hash=secret_hash(request_uri) if request_uri else None,
        idp_state_hash=None, code_hash=None, client_id=client_id, redirect_uri=redirect_uri,
        code_challenge=params["code_challenge"], state=state, configuration_ids=configuration_ids,
        authorization_details=details, issuer_state=issuer_state, login_hint=(hint or None) and hint[:100],
        sealed_idp_verifier=None, subject=None, login=None, stage="pushed" if pushed else "new",
        expires_at=utcnow() + dt.timedelta(seconds=ctx.settings.par_ttl if pushed else ctx.settings.login_ttl))
    async with ctx.session() as session:
        session.add(row)
    return request_uri or row.id, row


async def start_login(ctx: IssuerContext, tenant: TenantRef, params: dict[str, str], known: set[str]) -> str:
    """Handle ``/authorize``: resolve a pushed request or accept a plain one; return the VÀLid URL."""
    now = utcnow()
    if "request_uri" in params:
        request_uri = params["request_uri"]
        client_id = params.get("client_id")
        if not client_id:
            raise APIError(400, INVALID_REQUEST, "client_id is required")
        client = _check_client(ctx, client_id)
        # The client id is part of the condition: a call by another client must not take the request.
        # So is a redirect URI still registered for it (the pushed request was checked when pushed).
        registered = [] if client is None else [AuthorizationRequest.redirect_uri.in_(client.redirect_uris)]
        async with ctx.session() as session:
            row = (await session.execute(
                update(AuthorizationRequest).where(
                    AuthorizationRequest.request_uri_hash == secret_hash(request_uri),
                    AuthorizationRequest.tenant_id == tenant.id, AuthorizationRequest.client_id == client_id,
                    AuthorizationRequest.stage == "pushed", AuthorizationRequest.expires_at > now, *registered)
                .values(stage="new", expires_at=now + dt.timedelta(seconds=ctx.settings.login_ttl))
                .returning(AuthorizationRequest.id))).first()
        if row is None:
            raise APIError(400, INVALID_REQUEST, "request_uri is unknown, used, expired or pushed by another client")
        request_id = row[0]
    elif ctx.settings.require_par:
        # Not redirected: the redirect URI of a request that was never pushed has not been checked.
        raise APIError(400, INVALID_REQUEST, "this issuer accepts only pushed authorization requests: "
                                             "push the request to the pushed_authorization_request_endpoint first")
    else:
        _, created = await create_request(ctx, tenant, params, known, pushed=False)
        request_id = created.id
    idp_state = new_secret()
    verifier = new_secret()
    async with ctx.session() as session:
        result = await session.execute(
            update(AuthorizationRequest).where(AuthorizationRequest.id == request_id, AuthorizationRequest.stage == "new")
            .values(stage="login", idp_state_hash=secret_hash(idp_state),
                    sealed_idp_verifier=ctx.box.seal(verifier.encode(), f"issuer:idp-verifier:{request_id}".encode()))
            .returning(AuthorizationRequest.login_hint))
        hint = result.scalar_one_or_none()
    query = {"response_type": "code", "client_id": ctx.settings.idp_client_id,
             "redirect_uri": callback_url(ctx, tenant), "scope": VALID_SCOPE, "state": idp_state,
             "code_challenge": _s256(verifier), "code_challenge_method": "S256"}
    if hint:
        query["login_hint"] = hint
    return f"{ctx.settings.idp_authorize_url}?{urlencode(query)}"


def callback_url(ctx: IssuerContext, tenant: TenantRef) -> str:
    """Where VÀLid sends the citizen back (register it with the identity provider)."""
    return f"{ctx.issuer_url(tenant.slug)}/login/callback"


def _redirect(uri: str, params: dict[str, str]) -> str:
    """``uri`` with ``params`` added to its query; an ``error_description`` among them is kept to RFC
    6749's characters (§4.1.2.1: ``%x20-21 / %x23-5B / %x5D-7E``), whatever error it describes."""
    if "error_description" in params:
        params = {**params, "error_description": safe_description(params["error_description"])}
    sep = "&" if urlsplit(uri).query else "?"
    return uri + sep + urlencode(params)


async def finish_login(ctx: IssuerContext, tenant: TenantRef, params: dict[str, str]) -> str:
    """Handle VÀLid's return: exchange its code, read the user, issue our code; return the wallet URL."""
    idp_state = params.get("state", "")
    if not idp_state or len(idp_state) > 200:
        raise APIError(400, INVALID_REQUEST, "state is missing")
    now = utcnow()
    async with ctx.session() as session:
        row = (await session.execute(
            update(AuthorizationRequest).where(
                AuthorizationRequest.idp_state_hash == secret_hash(idp_state), AuthorizationRequest.tenant_id == tenant.id,
                AuthorizationRequest.stage == "login", AuthorizationRequest.expires_at > now)
            .values(stage="callback").returning(AuthorizationRequest))).scalar_one_or_none()
    if row is None:
        raise APIError(400, INVALID_REQUEST, "the login state is unknown, used or expired")
    back: dict[str, str] = {"iss": ctx.issuer_url(tenant.slug)}
    if row.state is not None:
        back["state"] = row.state
    if "error" in params or not params.get("code"):
        return _redirect(row.redirect_uri, {**back, "error": "access_denied",
                                            "error_description": "the citizen did not log in"})
    verifier = ctx.box.open(row.sealed_idp_verifier or b"", f"issuer:idp-verifier:{row.id}".encode()).decode()
    try:
        user = await _valid_user(ctx, tenant, params["code"], verifier)
    except APIError as exc:
        # RFC 6749 §4.1.2.1: the redirect URI is known good, so the wallet hears of the failure
        # (server_error or temporarily_unavailable) and may start again; this request is over.
        await _set_stage(ctx, row.id, "failed")
        return _redirect(row.redirect_uri, {**back, "error": exc.error, "error_description": exc.error_description})
    identifier = str(user.get("identifier") or "")
    if not identifier:
        return _redirect(row.redirect_uri, {**back, "error": "access_denied",
                                            "error_description": "the identity provider gave no identifier"})
    if row.issuer_state:
        offer = await _open_offer(ctx, tenant, row.issuer_state, now)
        if offer is None:
            return _redirect(row.redirect_uri, {**back, "error": "access_denied",
                                                "error_description": "the offer is used, expired or void"})
        if str((offer.subject or {}).get("identifier") or "").upper() != identifier.upper():
            return _redirect(row.redirect_uri, {**back, "error": "access_denied",
                                                "error_description": "the offer is for another person"})
    name = " ".join(p for p in (str(user.get("name") or ""), str(user.get("surnames") or "")) if p).strip()
    subject = {"identifier": identifier, "identifier_type": str(user.get("identifierType") or "NIF"), "name": name,
               "birth_date": None}
    login = {"method": str(user.get("method") or ""), "assurance_level": str(user.get("assuranceLevel") or ""),
             "identity_provider": "valid", "at": now.isoformat()}
    code = new_secret()
    async with ctx.session() as session:
        await session.execute(update(AuthorizationRequest).where(AuthorizationRequest.id == row.id)
                              .values(stage="code", code_hash=secret_hash(code), subject=subject, login=login,
                                      expires_at=utcnow() + dt.timedelta(seconds=ctx.settings.authorization_code_ttl)))
    return _redirect(row.redirect_uri, {**back, "code": code})


async def _set_stage(ctx: IssuerContext, request_id: str, stage: str) -> None:
    async with ctx.session() as session:
        await session.execute(update(AuthorizationRequest).where(AuthorizationRequest.id == request_id)
                              .values(stage=stage))


def _carries_authorization_code(offer: Offer) -> bool:
    grants = (offer.offer_json or {}).get("grants")
    grant = grants.get("authorization_code") if isinstance(grants, dict) else None
    return isinstance(grant, dict) and grant.get("issuer_state") == offer.id


async def _open_offer(ctx: IssuerContext, tenant: TenantRef, offer_id: str, now: dt.datetime) -> Offer | None:
    """The offer ``issuer_state`` names while it may still be taken: this tenant's, not used (by
    either grant), not burnt, not expired, and made with the authorization code grant."""
    async with ctx.db.read_session() as session:
        offer = (await session.execute(select(Offer).where(
            Offer.id == offer_id, Offer.tenant_id == tenant.id, Offer.used.is_(False), Offer.burnt.is_(False),
            Offer.expires_at > now))).scalar_one_or_none()
    return offer if offer is not None and _carries_authorization_code(offer) else None


async def _valid_user(ctx: IssuerContext, tenant: TenantRef, code: str, verifier: str) -> dict[str, Any]:
    secret = ctx.settings.idp_client_secret.get_secret_value() if ctx.settings.idp_client_secret else ""
    timeout = ctx.settings.idp_timeout
    client = ctx.idp_http or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
    try:
        token_response = await client.post(ctx.settings.idp_token_url, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": callback_url(ctx, tenant),
            "code_verifier": verifier, "client_id": ctx.settings.idp_client_id, "client_secret": secret},
            timeout=timeout)
        if token_response.status_code != 200:
            raise APIError(502, "server_error", "the identity provider refused the login code")
        answer = token_response.json()
        access = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(access, str):
            raise APIError(502, "server_error", "the identity provider's token answer is malformed")
        info = await client.get(ctx.settings.idp_userinfo_url, params={"AccessToken": access}, timeout=timeout)
        if info.status_code != 200:
            raise APIError(502, "server_error", "the identity provider did not return the user")
        data = info.json()
        if not isinstance(data, dict):
            raise APIError(502, "server_error", "the identity provider did not return the user")
        return data
    except httpx.HTTPError as exc:
        raise APIError(503, "temporarily_unavailable", "the identity provider is unreachable",
                       {"Retry-After": "30"}) from exc
    except ValueError as exc:  # not JSON
        raise APIError(502, "server_error", "the identity provider's answer is malformed") from exc
    finally:
        if ctx.idp_http is None:
            await client.aclose()


@dataclass(frozen=True)
class CodeGrant:
    """What an authorization code grants."""

    subject: dict[str, Any]
    configuration_ids: list[str]
    credential_ids: dict[str, str]
    selector: str | None
    login: dict[str, Any]
    offer_id: str | None
    client_id: str
    request_id: str


async def revoke_replayed_code(ctx: IssuerContext, tenant: TenantRef, code_hash: str) -> bool:
    """A code presented again after its redemption: revoke the tokens issued on it (RFC 6749 §4.1.2,
    RFC 9700 §4.5.3.1: a code used twice has leaked, and either party may be the attacker).

    The request moves to ``replayed`` whatever its expiry, from ``used`` (redemption under way: its
    token is then refused, ``grants.new_access_token``) or ``redeemed`` (its tokens are deleted here,
    with their deferred transactions, claims and stored responses).
    Returns whether a redeemed code was found. The row lives until its expiry's purge, so a replay
    after that finds nothing; the code itself was useless by then.
    """
    async with ctx.session() as session:
        replayed = (await session.execute(
            update(AuthorizationRequest).where(
                AuthorizationRequest.code_hash == code_hash, AuthorizationRequest.tenant_id == tenant.id,
                AuthorizationRequest.stage.in_(("used", "redeemed", "replayed")))
            .values(stage="replayed").returning(AuthorizationRequest.id))).scalar_one_or_none()
        if replayed is None:
            return False
        # What the tokens started goes with them: a deferred transaction is polled with its token's
        # hash (and, on purpose, after the token's expiry), so a revoked token would otherwise still
        # collect its credential; a stored response would still be replayed to it.
        tokens = select(AccessToken.token_hash).where(AccessToken.tenant_id == tenant.id,
                                                      AccessToken.authorization_request_id == replayed)
        await session.execute(delete(DeferredTransaction).where(DeferredTransaction.tenant_id == tenant.id,
                                                                DeferredTransaction.token_hash.in_(tokens)))
        await session.execute(delete(StoredResponse).where(StoredResponse.request_hash.in_(
            select(IssuanceClaim.request_hash).where(IssuanceClaim.token_hash.in_(tokens)))))
        await session.execute(delete(IssuanceClaim).where(IssuanceClaim.token_hash.in_(tokens)))
        await session.execute(delete(AccessToken).where(AccessToken.tenant_id == tenant.id,
                                                        AccessToken.authorization_request_id == replayed))
    return True


def _code_mismatch(row: AuthorizationRequest, code_verifier: str | None, redirect_uri: str | None,
                   client_id: str) -> str | None:
    """Why the redeemed code's request does not match this token request (``invalid_grant``), or None."""
    if not code_verifier or not _PKCE.match(code_verifier) or not hmac.compare_digest(_s256(code_verifier),
                                                                                       row.code_challenge):
        return "code_verifier does not match the code_challenge"
    if redirect_uri != row.redirect_uri:
        return "redirect_uri does not match the authorization request"
    if client_id != row.client_id:
        return "the code was issued to another client"
    return None


async def redeem_authorization_code(ctx: IssuerContext, tenant: TenantRef, *, code: str, code_verifier: str | None,
                                    redirect_uri: str | None, client_id: str | None,
                                    requested: list[str] | None = None) -> CodeGrant:
    """Check and consume an authorization code (single-use); ``invalid_grant`` for any mismatch.

    ``client_id`` is required (RFC 6749 §4.1.3: the wallet is a public client); without it the request
    is ``invalid_request``, and from a client not (or no longer) registered ``unauthorized_client``: in
    both cases the code is not spent. A code obtained with ``issuer_state`` takes that
    offer (as its pre-authorized code would): the offer must still be open, and is then used up.

    With ``requested`` (the configurations the token request's ``authorization_details`` names, RFC
    9396 §6) the grant is narrowed to those; one the authorization request did not ask for is
    ``invalid_authorization_details``, decided inside the transaction that took the code, which then
    rolls back: the code is not spent (a code that fails the checks above is spent, as without details).
    """
    if not client_id:
        raise APIError(400, INVALID_REQUEST, "client_id is required")
    _check_client(ctx, client_id)  # a client no longer registered is refused, its code not spent
    now = utcnow()
    async with ctx.session() as session:
        row = (await session.execute(
            update(AuthorizationRequest).where(
                AuthorizationRequest.code_hash == secret_hash(code), AuthorizationRequest.tenant_id == tenant.id,
                AuthorizationRequest.stage == "code", AuthorizationRequest.expires_at > now)
            .values(stage="used").returning(AuthorizationRequest))).scalar_one_or_none()
        if (row is not None and requested is not None and _code_mismatch(row, code_verifier, redirect_uri, client_id)
                is None and not set(requested) <= set(row.configuration_ids)):
            # Raised inside the transaction, which rolls back: the code stays at stage "code".
            raise _details_error("authorization_details names a credential configuration the authorization "
                                 "request did not ask for")
    if row is None:
        await revoke_replayed_code(ctx, tenant, secret_hash(code))
        raise APIError(400, INVALID_GRANT, "the authorization code is unknown, expired or already used")
    mismatch = _code_mismatch(row, code_verifier, redirect_uri, client_id)
    if mismatch is not None:
        raise APIError(400, INVALID_GRANT, mismatch)
    selector = None
    credential_ids: dict[str, str] = {}
    offer_id = None
    if row.issuer_state:
        offer = await _open_offer(ctx, tenant, row.issuer_state, now)
        taken = None
        if offer is not None:
            # The same conditional UPDATE as the pre-authorized code's: of the two grants (and of
            # concurrent codes) exactly one takes the offer.
            async with ctx.session() as session:
                taken = await mark_used_once(session, Offer, Offer.burnt.is_(False), Offer.expires_at > now,
                                             id=offer.id, tenant_id=tenant.id)
        if offer is None or taken is None:
            raise APIError(400, INVALID_GRANT, "the credential offer is used, expired or void")
        selector, offer_id = offer.selector, offer.id
        # The offer's reserved credential ids are not carried over: the configurations here are the
        # ones the wallet asked for, not necessarily the offer's.
        credential_ids = {}
    configuration_ids = list(row.configuration_ids) if requested is None else list(requested)
    return CodeGrant(subject=row.subject or {}, configuration_ids=configuration_ids,
                     credential_ids=credential_ids, selector=selector, login=row.login or {}, offer_id=offer_id,
                     client_id=row.client_id, request_id=row.id)
