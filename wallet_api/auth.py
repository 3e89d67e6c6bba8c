"""Citizen login (VÀLid and generic OpenID Connect) and the app's sessions.

The flow the app follows::

    GET  /v1/auth/login?provider=valid&redirect_uri=<app>&state=<app state>
                        &code_challenge=<S256 of the app's verifier>&code_challenge_method=S256
         → 302 to the identity provider (authorization code + PKCE S256)
    GET  /v1/auth/callback?code=...&state=...           (the provider sends the browser here)
         → 302 to <app>?code=<one-time app code>&state=<app state>
    POST /v1/auth/token  grant_type=authorization_code&code=...&redirect_uri=<app>&code_verifier=...
         → {"access_token", "refresh_token", "expires_in", ...}

Tokens never travel in a URL: the app gets a one-time code (60 s) bound to its redirect URI and to
its PKCE challenge (RFC 7636, S256 only, required: RFC 9700 §2.1.1), and exchanges it with the
verifier. The app is a public client, and another app registering the same private-use URI scheme
(RFC 8252 §8.1) can receive its redirect; without the verifier, which never left the app, that code
is worth nothing. Access tokens are short-lived; refresh tokens rotate on every use (a refresh token
used twice revokes the session, as a stolen copy would). Tokens, codes and states are stored as HMACs
under the token key (:func:`wallet_api.vault.token_mac`), which the master key seals: writing the
database is not enough to make a token. The wallet belongs to the identifier the provider asserts; the
database stores an HMAC of it (see :mod:`wallet_api.vault`), and a login opens a wallet only if the
wallet's sealed profile names that same identifier.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service_kit.crypto import SecretBoxError
from service_kit.db import consume_once
from service_kit.errors import APIError
from ssi.errors import SSIError
from ssi.jose import (
    DEFAULT_LEEWAY,
    ID_TOKEN_ALGORITHMS,
    Key,
    check_algorithm,
    check_time_claims,
    parse_jws,
    verify_parsed,
)
from ssi.oid4vci import is_loopback_host

from . import audit
from .context import FetchError, WalletContext
from .models import AppCode, LoginTransaction, Session, UsedRefreshToken, Wallet, utcnow
from .settings import OIDCProvider
from .vault import DataKey, VaultError, new_id, token_mac

#: The member of a wallet's sealed profile saying a PIN was set on it once: a NULL ``pin_hash`` is then a
#: PIN removed outside the wallet (``wallet_api.pin``).
PIN_RECORDED = "pin_ever_set"

VALID_PROVIDER = "valid"
APP_CODE_TTL = 60
#: How old an ID token may be (its ``iat``) when the wallet gets it from the provider's token endpoint,
#: which issues it right then: an older one is a replay of a token minted for another login.
ID_TOKEN_MAX_AGE = 600

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    """Who the provider says logged in."""

    provider: str
    identifier: str
    name: str
    email: str
    method: str
    assurance_level: str


def s256(verifier: str) -> str:
    """The S256 PKCE challenge of ``verifier``: BASE64URL(SHA-256(ASCII(verifier))), unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def pkce_pair() -> tuple[str, str]:
    """A PKCE ``(code_verifier, S256 code_challenge)``."""
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)


#: RFC 7636 §4.1: 43 to 128 unreserved characters.
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
#: An S256 challenge: 32 bytes in unpadded base64url.
S256_CHALLENGE = r"^[A-Za-z0-9_-]{43}$"


def check_app_redirect(ctx: WalletContext, redirect_uri: str) -> None:
    """The app redirect URI must be registered (or, in development, any loopback http(s) URI)."""
    if redirect_uri in ctx.settings.app_redirect_uris:
        return
    try:
        parts = urlsplit(redirect_uri)
    except ValueError:
        parts = None
    if ctx.dev and parts is not None and parts.scheme in ("http", "https") and parts.hostname \
            and is_loopback_host(parts.hostname) and not parts.fragment:
        return
    raise APIError(400, "invalid_request", "redirect_uri is not a registered wallet app URI")


def callback_url(ctx: WalletContext) -> str:
    """The wallet's redirect URI at identity providers."""
    return f"{ctx.settings.public_url}/v1/auth/callback"


def _provider(ctx: WalletContext, name: str) -> OIDCProvider | None:
    for provider in ctx.settings.oidc_providers:
        if provider.name == name:
            return provider
    return None


def providers(ctx: WalletContext) -> list[dict[str, str]]:
    """The login providers the app can offer."""
    out = []
    if ctx.settings.idp_url:
        out.append({"name": VALID_PROVIDER, "label": "VÀLid", "kind": "valid"})
    out += [{"name": p.name, "label": p.label or p.name, "kind": "oidc"} for p in ctx.settings.oidc_providers]
    return out


# Per-process caches of OIDC providers' discovery documents and JWKS: the only module-level state of
# the service. Safe to lose (a miss fetches again; a worker without them behaves the same), bounded
# (at most _DISCOVERY_MAX providers each, emptied when full; entries live _DISCOVERY_TTL seconds), and
# holding public data only. A rotated key is picked up at once: an unknown kid, or no cached key
# verifying a token, fetches the JWKS again (ID tokens come from the provider's token endpoint over the
# back channel, so a bad one cannot be used to make the wallet fetch repeatedly).
_discovery_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_DISCOVERY_TTL = 300.0
_DISCOVERY_MAX = 32


async def oidc_discovery(ctx: WalletContext, provider: OIDCProvider) -> dict[str, Any]:
    """The provider's discovery document (bounded cache, safe to lose)."""
    cached = _discovery_cache.get(provider.issuer)
    if cached is not None and time.monotonic() - cached[0] < _DISCOVERY_TTL:
        return cached[1]
    url = provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
    async with ctx.client(operator_configured=True) as client:
        doc = await ctx.get_json(client, url)
    if not isinstance(doc, dict) or doc.get("issuer") != provider.issuer:
        raise FetchError("the provider's discovery document does not name its issuer")
    for member in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(doc.get(member), str):
            raise FetchError(f"the provider's discovery document has no {member}")
    if len(_discovery_cache) >= _DISCOVERY_MAX:
        _discovery_cache.clear()
    _discovery_cache[provider.issuer] = (time.monotonic(), doc)
    return doc


async def start_login(ctx: WalletContext, *, provider: str, redirect_uri: str, app_state: str | None,
                      code_challenge: str, login_hint: str | None, user_agent: str) -> str:
    """Record a login transaction and return the identity provider URL to send the browser to.

    ``code_challenge`` is the app's S256 PKCE challenge: the app code this login ends with is
    exchanged only with its verifier."""
    check_app_redirect(ctx, redirect_uri)
    if not re.fullmatch(S256_CHALLENGE, code_challenge):
        raise APIError(400, "invalid_request", "code_challenge must be an S256 challenge (43 base64url characters)")
    state = secrets.token_urlsafe(32)
    verifier, challenge = pkce_pair()
    nonce = secrets.token_urlsafe(24)
    params: dict[str, str] = {
        "response_type": "code", "redirect_uri": callback_url(ctx), "state": state,
        "code_challenge": challenge, "code_challenge_method": "S256",
    }
    if provider == VALID_PROVIDER:
        if not ctx.settings.idp_url:
            raise APIError(400, "invalid_request", "VÀLid login is not configured")
        params.update(client_id=ctx.settings.idp_client_id, scope=ctx.settings.idp_scope)
        if login_hint and ctx.settings.idp_allow_login_hint:
            params["login_hint"] = login_hint
        endpoint = f"{ctx.settings.idp_url}/o/oauth2/auth"
    else:
        oidc = _provider(ctx, provider)
        if oidc is None:
            raise APIError(400, "invalid_request", "unknown login provider")
        try:
            doc = await oidc_discovery(ctx, oidc)
        except FetchError as exc:
            raise APIError(502, "temporarily_unavailable", f"the login provider is unavailable: {exc.detail}") from exc
        params.update(client_id=oidc.client_id, scope=oidc.scope, nonce=nonce)
        if login_hint:
            params["login_hint"] = login_hint
        endpoint = doc["authorization_endpoint"]
    state_digest = token_mac(await ctx.vault.token_key(ctx.db), "login-state", state)
    sealed = ctx.vault.box.seal(
        _json_bytes({"verifier": verifier, "nonce": nonce, "redirect_uri": redirect_uri, "app_state": app_state,
                     "app_challenge": code_challenge}),
        _login_aad(state_digest))
    async with ctx.db.session() as session:
        session.add(LoginTransaction(state_hash=state_digest, provider=provider, sealed=sealed,
                                     user_agent=user_agent[:300],
                                     expires_at=utcnow() + dt.timedelta(seconds=ctx.settings.login_ttl)))
    sep = "&" if urlsplit(endpoint).query else "?"
    return endpoint + sep + urlencode(params)


def _login_aad(state_digest: str) -> bytes:
    return b"cartera-wallet|login|" + state_digest.encode()


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _app_redirect(redirect_uri: str, params: dict[str, str]) -> str:
    sep = "&" if urlsplit(redirect_uri).query else "?"
    return redirect_uri + sep + urlencode(params)


async def finish_login(ctx: WalletContext, *, state: str | None, code: str | None, error: str | None) -> str:
    """Handle the provider's redirect; return the app URL to redirect to (with a code or an error)."""
    if not state:
        raise APIError(400, "invalid_request", "state is missing")
    key = await ctx.vault.token_key(ctx.db)
    state_digest = token_mac(key, "login-state", state)
    async with ctx.db.session() as session:
        row = await consume_once(session, LoginTransaction, LoginTransaction.expires_at > utcnow(),
                                 state_hash=state_digest)
    if row is None:
        raise APIError(400, "invalid_request", "unknown or expired login (start again)")
    data = json.loads(ctx.vault.box.open(row.sealed, _login_aad(state_digest)))
    back: dict[str, str] = {"state": data["app_state"]} if data.get("app_state") else {}
    if error or not code:
        return _app_redirect(data["redirect_uri"], {"error": "access_denied",
                                                    "error_description": "the login was cancelled or refused", **back})
    try:
        identity = await (_valid_identity(ctx, code, data["verifier"]) if row.provider == VALID_PROVIDER
                          else _oidc_identity(ctx, row.provider, code, data["verifier"], data["nonce"]))
    except (FetchError, SSIError, LoginError) as exc:
        detail = exc.detail if hasattr(exc, "detail") else "login failed"
        return _app_redirect(data["redirect_uri"], {"error": "access_denied", "error_description": str(detail), **back})
    app_code = secrets.token_urlsafe(32)
    try:
        async with ctx.db.session() as session:
            sess = await _open_session(ctx, session, identity, row.user_agent)
            session.add(AppCode(code_hash=token_mac(key, "app-code", app_code), session_id=sess.id,
                                redirect_uri_hash=_app_code_binding(key, data["redirect_uri"], data["app_challenge"]),
                                expires_at=utcnow() + dt.timedelta(seconds=APP_CODE_TTL)))
    except WalletIntegrityError:
        return _app_redirect(data["redirect_uri"], {
            "error": "server_error", "error_description": "the wallet could not be opened; please contact support",
            **back})
    return _app_redirect(data["redirect_uri"], {"code": app_code, **back})


def _app_code_binding(key: bytes, redirect_uri: str, challenge: str) -> str:
    """What an app code is bound to (stored in ``app_codes.redirect_uri_hash``): the app's redirect URI
    and its PKCE challenge, one HMAC of both."""
    return token_mac(key, "app-code-binding", _json_bytes([redirect_uri, challenge]).decode())


async def _open_session(ctx: WalletContext, session: AsyncSession, identity: Identity, user_agent: str) -> Session:
    """The wallet of ``identity`` (created on the first login) with a new session and its login record."""
    wallet = await ensure_wallet(ctx, session, identity)
    sess = Session(id=new_id("ses"), wallet_id=wallet.id, provider=identity.provider, method=identity.method,
                   assurance_level=identity.assurance_level, user_agent=user_agent)
    session.add(sess)
    await session.flush()
    await audit.record_login(session, ctx.vault.data_key(wallet), session_id=sess.id, provider=identity.provider,
                             method=identity.method, assurance_level=identity.assurance_level)
    return sess


class WalletIntegrityError(Exception):
    """The wallet the subject index points at belongs to someone else (its sealed profile says so)."""


class LoginError(Exception):
    """The provider's answer is not acceptable."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


async def _valid_identity(ctx: WalletContext, code: str, verifier: str) -> Identity:
    settings = ctx.settings
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": callback_url(ctx),
            "code_verifier": verifier, "client_id": settings.idp_client_id}
    if settings.idp_client_secret is not None:
        form["client_secret"] = settings.idp_client_secret.get_secret_value()
    async with ctx.client(operator_configured=True) as client:
        token = await ctx.request_json(client, "POST", f"{settings.idp_url}/o/oauth2/token", data=form)
        access = token.get("access_token") if isinstance(token, dict) else None
        if not isinstance(access, str):
            raise LoginError("the identity provider sent no access token")
        info = await ctx.get_json(client, f"{settings.idp_url}/serveis-rest/getUserInfo",
                                  params={"AccessToken": access})
    if not isinstance(info, dict) or info.get("status", "ok") != "ok" or not isinstance(info.get("identifier"), str) \
            or not info["identifier"]:
        raise LoginError("the identity provider did not say who logged in")
    name = " ".join(str(info.get(k) or "") for k in ("name", "surnames")).strip()
    return Identity(provider=VALID_PROVIDER, identifier=info["identifier"], name=name,
                    email=str(info.get("email") or ""), method=str(info.get("method") or ""),
                    assurance_level=str(info.get("assuranceLevel") or ""))


_jwks_cache: dict[str, tuple[float, list[Key]]] = {}


async def _provider_keys(ctx: WalletContext, jwks_uri: str, refresh: bool) -> list[Key]:
    cached = _jwks_cache.get(jwks_uri)
    if cached is not None and not refresh and time.monotonic() - cached[0] < _DISCOVERY_TTL:
        return cached[1]
    async with ctx.client(operator_configured=True) as client:
        jwks = await ctx.get_json(client, jwks_uri)
    keys: list[Key] = []
    for jwk in (jwks.get("keys") if isinstance(jwks, dict) else None) or []:
        if isinstance(jwk, dict) and jwk.get("use", "sig") == "sig":
            try:
                keys.append(Key.from_jwk(jwk).public())
            except SSIError:
                continue  # a key type we cannot use must not hide the usable ones
    if len(_jwks_cache) >= _DISCOVERY_MAX:
        _jwks_cache.clear()
    _jwks_cache[jwks_uri] = (time.monotonic(), keys)
    return keys


async def verify_id_token(ctx: WalletContext, provider: OIDCProvider, doc: dict[str, Any], id_token: Any,
                          nonce: str) -> dict[str, Any]:
    """Verify an ID token: signature with the provider's JWKS, ``iss``, ``aud``, ``azp``, ``exp``, ``iat``,
    ``nonce``.

    ``iat`` is required, neither in the future nor older than :data:`ID_TOKEN_MAX_AGE` (both with the
    clock leeway); ``azp``, when present (and it must be when ``aud`` names several clients), is this
    wallet's client id.

    The algorithm must be on :data:`~ssi.jose.ID_TOKEN_ALGORITHMS` (ES256, ES384, EdDSA, RS256, PS256),
    whatever the provider's ``id_token_signing_alg_values_supported`` says, and fit the JWKS key that
    verifies it (the key's ``kty``, and its ``alg`` when the JWK names one): an RS256 header never makes
    an EC key verify, nor a MAC keyed with a public key. RSA keys under 2048 bits are not used."""
    jws = parse_jws(id_token)
    claims = jws.json_payload()
    try:
        check_algorithm(jws.header["alg"], ID_TOKEN_ALGORITHMS)
    except SSIError as exc:
        raise LoginError("the ID token's signature algorithm is not allowed") from exc
    kid = jws.header.get("kid")
    keys = await _provider_keys(ctx, doc["jwks_uri"], refresh=False)
    stale = kid is not None and all(k.kid != kid for k in keys)
    if stale or not _signed_by_one_of(jws, keys, kid):
        # The provider may have rotated its keys (a new kid, or new keys without kids): fetch once more.
        keys = await _provider_keys(ctx, doc["jwks_uri"], refresh=True)
        if not _signed_by_one_of(jws, keys, kid):
            raise LoginError("the ID token signature does not verify with the provider's keys")
    if claims.get("iss") != provider.issuer:
        raise LoginError("the ID token was issued by another provider")
    aud = claims.get("aud")
    if not (aud == provider.client_id or (isinstance(aud, list) and provider.client_id in aud)):
        raise LoginError("the ID token is not addressed to this wallet")
    # OIDC Core §3.1.3.7: with several audiences azp is required; present, it must be this wallet.
    if ("azp" in claims or (isinstance(aud, list) and len(aud) > 1)) and claims.get("azp") != provider.client_id:
        raise LoginError("the ID token's azp is not this wallet")
    now = time.time()
    check_time_claims(claims, now=now, require=("exp", "iat"), error=LoginErrorSSI)
    if claims["iat"] < now - ID_TOKEN_MAX_AGE - DEFAULT_LEEWAY:
        raise LoginError("the ID token was issued too long ago")
    if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
        raise LoginError("the ID token nonce does not match the login")
    return claims


def _signed_by_one_of(jws: Any, keys: list[Key], kid: Any) -> bool:
    for key in keys:
        if kid is not None and key.kid != kid:
            continue
        try:
            verify_parsed(jws, key, ID_TOKEN_ALGORITHMS)
        except SSIError:
            continue
        return True
    return False


class LoginErrorSSI(SSIError):
    """Time claim failures of an ID token."""

    area = "login"


async def _oidc_identity(ctx: WalletContext, name: str, code: str, verifier: str, nonce: str) -> Identity:
    provider = _provider(ctx, name)
    if provider is None:
        raise LoginError("the login provider is no longer configured")
    doc = await oidc_discovery(ctx, provider)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": callback_url(ctx),
            "code_verifier": verifier, "client_id": provider.client_id}
    if provider.client_secret is not None:
        form["client_secret"] = provider.client_secret.get_secret_value()
    async with ctx.client(operator_configured=True) as client:
        token = await ctx.request_json(client, "POST", doc["token_endpoint"], data=form)
    if not isinstance(token, dict) or "id_token" not in token:
        raise LoginError("the provider sent no ID token")
    claims = await verify_id_token(ctx, provider, doc, token["id_token"], nonce)
    identifier = claims.get(provider.identifier_claim)
    if not isinstance(identifier, str) or not identifier:
        raise LoginError("the ID token does not carry the configured identifier claim")
    name_claim = claims.get("name") or " ".join(str(claims.get(k) or "") for k in ("given_name", "family_name")).strip()
    return Identity(provider=f"oidc:{provider.name}", identifier=identifier, name=str(name_claim or ""),
                    email=str(claims.get("email") or ""), method=f"oidc:{provider.name}",
                    assurance_level=str(claims.get("acr") or ""))


async def ensure_wallet(ctx: WalletContext, session: AsyncSession, identity: Identity) -> Wallet:
    """The wallet of ``identity``, created with a fresh data key on the first login.

    The wallet is found by its subject index, a column anyone writing the database could copy from
    another row; its sealed profile, which only the master key opens, must name the same provider and
    identifier, or :class:`WalletIntegrityError` is raised: the login is refused rather than served
    into someone else's wallet (and the profile is not rewritten to the newcomer)."""
    index = await ctx.vault.subject_index(session, identity.provider, identity.identifier)
    wallet = (await session.execute(select(Wallet).where(Wallet.subject_index == index))).scalar_one_or_none()
    profile = {"identifier": identity.identifier, "name": identity.name, "email": identity.email,
               "provider": identity.provider}
    if wallet is None:
        wallet_id = new_id("wal")
        sealed_key, data_key = ctx.vault.new_data_key(wallet_id)
        wallet = Wallet(id=wallet_id, subject_index=index, data_key=sealed_key,
                        profile=data_key.seal("profile", wallet_id, profile))
        session.add(wallet)
        await session.flush()
    else:
        try:
            data_key = ctx.vault.data_key(wallet)
            stored = data_key.open("profile", wallet.id, wallet.profile)
        except (VaultError, SecretBoxError):
            stored = None
        if not isinstance(stored, dict) or stored.get("provider") != identity.provider \
                or stored.get("identifier") != identity.identifier:
            # Logged without the identifier: the wallet id is enough to investigate.
            log.error("login refused: wallet %s, found by the subject index, belongs to another citizen or its "
                      "profile does not open (database tampered with or corrupted)", wallet.id)
            raise WalletIntegrityError(wallet.id)
        if stored.get(PIN_RECORDED) or _holds_a_pin(data_key, wallet):
            # Kept, or put back when a previous version's login dropped it (rolling upgrade): a NULL
            # pin_hash is then a PIN removed outside the wallet, not "no PIN".
            profile[PIN_RECORDED] = True
        if any(stored.get(name) != value for name, value in profile.items()):
            # Only when the provider's data changed, and only over the profile read: a PIN set at the same
            # moment records itself in the profile (wallet_api.pin.record_pin), which this must not undo
            # (a name change lost this way is made at the next login).
            await session.execute(
                update(Wallet).where(Wallet.id == wallet.id, Wallet.profile == wallet.profile)
                .values(profile=data_key.seal("profile", wallet.id, profile))
                .execution_options(synchronize_session=False))
    return wallet


def _holds_a_pin(key: DataKey, wallet: Wallet) -> bool:
    """Whether the wallet's ``pin_hash`` is a PIN hash sealed under its data key."""
    from .pin import open_pin_hash  # pin imports this module

    return wallet.pin_hash is not None and open_pin_hash(key, wallet.pin_hash) is not None


def _session_end(ctx: WalletContext, sess: Session) -> dt.datetime:
    """When the session ends whatever its refreshes: ``session_max_age`` after the login. Without it a
    refresh token chain, stolen once, would live for as long as it is refreshed."""
    return sess.created_at + dt.timedelta(seconds=ctx.settings.session_max_age)


def _new_tokens(ctx: WalletContext, sess: Session, key: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fresh tokens for a session, neither outliving it: ``(response body, column values to store)``;
    ``key`` is the token key."""
    access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now, end = utcnow(), _session_end(ctx, sess)
    access_expires = min(now + dt.timedelta(seconds=ctx.settings.access_token_ttl), end)
    refresh_expires = min(now + dt.timedelta(seconds=ctx.settings.refresh_token_ttl), end)
    values = {"access_hash": token_mac(key, "access", access), "access_expires_at": access_expires,
              "refresh_hash": token_mac(key, "refresh", refresh), "refresh_expires_at": refresh_expires,
              "last_used_at": now}
    body = {"access_token": access, "token_type": "Bearer",
            "expires_in": max(0, int((access_expires - now).total_seconds())), "refresh_token": refresh,
            "refresh_expires_in": max(0, int((refresh_expires - now).total_seconds())), "session_id": sess.id}
    return body, values


async def exchange_app_code(ctx: WalletContext, code: str, redirect_uri: str, code_verifier: str | None
                            ) -> dict[str, Any]:
    """Trade the one-time app code for tokens: the redirect URI of the login and the PKCE verifier of
    its challenge must come with it (compared in constant time, as one HMAC of both)."""
    key = await ctx.vault.token_key(ctx.db)
    # Consumed in its own transaction, so a failed attempt burns the code too (a missing or wrong
    # verifier included: an intercepted code is not retried with guesses).
    async with ctx.db.session() as session:
        row = await consume_once(session, AppCode, AppCode.expires_at > utcnow(),
                                 code_hash=token_mac(key, "app-code", code))
    challenge = s256(code_verifier) if code_verifier and _VERIFIER.fullmatch(code_verifier) else ""
    if row is None or not challenge or not secrets.compare_digest(
            row.redirect_uri_hash, _app_code_binding(key, redirect_uri, challenge)):
        raise APIError(400, "invalid_grant", "the code is unknown, expired or used, or the redirect_uri or "
                                             "code_verifier is not the login's")
    async with ctx.db.session() as session:
        sess = await session.get(Session, row.session_id)
        if sess is None or sess.revoked:
            raise APIError(400, "invalid_grant", "the session was revoked")
        body, values = _new_tokens(ctx, sess, key)
        for name, value in values.items():
            setattr(sess, name, value)
        return body


async def refresh_tokens(ctx: WalletContext, refresh_token: str) -> dict[str, Any]:
    """Rotate the refresh token; a reused refresh token revokes its session.

    Rotation keeps the old token's hash (``used_refresh_tokens``) until it would have expired, so that
    presenting it again is known for a reuse: a stolen copy, or the citizen's own copy after a thief
    refreshed first. Either way the session is revoked — every token of it stops working — as RFC 9700
    §4.14.2 (and OAuth 2.1) ask, and the citizen logs in again. The rotation is a conditional update:
    of two refreshes with the same token at once, one wins and the other, a reuse, revokes the session
    (so the winner's new tokens stop working too). There is no grace window for an app retrying a
    refresh whose answer it lost: the wallet cannot tell that retry from a thief's replay, and a window
    would hand the replay a live session; the app keeps one refresh in flight and, if that one fails,
    sends the citizen to log in again."""
    key = await ctx.vault.token_key(ctx.db)
    digest = token_mac(key, "refresh", refresh_token)
    refusal: str | None = None
    async with ctx.db.session() as session:
        sess = (await session.execute(select(Session).where(Session.refresh_hash == digest))).scalar_one_or_none()
        if sess is None:
            used = await session.get(UsedRefreshToken, digest)
            if used is None:
                refusal = "the refresh token is unknown"
            else:
                await _revoke(session, used.session_id)
                refusal = "the refresh token was already used: the session is revoked; log in again"
        elif (sess.revoked or sess.refresh_expires_at is None or sess.refresh_expires_at <= utcnow()
              or _session_end(ctx, sess) <= utcnow()):
            refusal = "the session has ended; log in again"
        else:
            tokens, values = _new_tokens(ctx, sess, key)
            result = await session.execute(
                update(Session).where(Session.id == sess.id, Session.refresh_hash == digest,
                                      Session.revoked.is_(False)).values(**values)
                .execution_options(synchronize_session=False))
            if result.rowcount == 1:  # type: ignore[attr-defined]
                session.add(UsedRefreshToken(token_hash=digest, session_id=sess.id,
                                             expires_at=sess.refresh_expires_at))
            else:
                # Another refresh with this token won meanwhile (or the session was revoked): a reuse.
                await _revoke(session, sess.id)
                refusal = "the refresh token was already used: the session is revoked; log in again"
    # Raised once the revocation is committed (an error inside the transaction would roll it back).
    if refusal is not None:
        raise APIError(400, "invalid_grant", refusal)
    return tokens


async def _revoke(session: AsyncSession, session_id: str) -> None:
    """Revoke a session in ``session``'s transaction: every token of it stops working."""
    await session.execute(update(Session).where(Session.id == session_id).values(
        revoked=True, access_hash=None, refresh_hash=None).execution_options(synchronize_session=False))


async def authenticate(ctx: WalletContext, access_token: str) -> Session:
    """The live session of an access token, or 401."""
    digest = token_mac(await ctx.vault.token_key(ctx.db), "access", access_token)
    async with ctx.db.read_session() as session:
        sess = (await session.execute(select(Session).where(Session.access_hash == digest))).scalar_one_or_none()
    if sess is None or sess.revoked or sess.access_expires_at is None or sess.access_expires_at <= utcnow():
        raise APIError(401, "invalid_token", "the access token is unknown, expired or revoked",
                       {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return sess


async def revoke_session(ctx: WalletContext, wallet_id: str, session_id: str) -> bool:
    """Revoke one of the wallet's sessions; False when it is not the wallet's."""
    async with ctx.db.session() as session:
        result = await session.execute(
            update(Session).where(Session.id == session_id, Session.wallet_id == wallet_id).values(
                revoked=True, access_hash=None, refresh_hash=None).execution_options(synchronize_session=False))
        return result.rowcount == 1


def login_redirect_error(redirect_uri: str, description: str) -> str:
    """An app redirect carrying an error (unused codes and refused logins)."""
    return _app_redirect(redirect_uri, {"error": "access_denied", "error_description": description})


__all__ = ["Identity", "LoginError", "WalletIntegrityError", "authenticate", "check_app_redirect", "ensure_wallet", "exchange_app_code",
           "finish_login", "providers", "refresh_tokens", "revoke_session", "start_login", "verify_id_token",
           ]
