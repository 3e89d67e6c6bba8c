"""Login, tokens, logout, sessions and "my logins"."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from service_kit.errors import APIError
from service_kit.ratelimit import Limit, client_address, enforce, limiter_of, rate_limit_responses

from ..auth import (
    S256_CHALLENGE,
    exchange_app_code,
    finish_login,
    providers,
    refresh_tokens,
    revoke_session,
    start_login,
)
from ..deps import Citizen, Ctx
from ..models import Session
from ..pin import NO_PIN, pin_status

router = APIRouter(tags=["auth"])


class Provider(BaseModel):
    name: str = Field(description="Value for `provider=` at `/v1/auth/login`.", examples=["valid"])
    label: str = Field(description="Name to show.", examples=["VÀLid"])
    kind: Literal["valid", "oidc"] = Field(description="Protocol of the provider.")


class TokenResponse(BaseModel):
    access_token: str = Field(description="Opaque Bearer token for the API (short-lived).")
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the token type name, not a secret
    expires_in: int = Field(description="Seconds the access token stays valid.", examples=[900])
    refresh_token: str = Field(description="Opaque single-use token for `grant_type=refresh_token`.")
    refresh_expires_in: int = Field(description="Seconds the refresh token stays valid.")
    session_id: str = Field(description="Id of this session (see `/v1/sessions`).")


class TokenRequest(BaseModel):
    grant_type: Literal["authorization_code", "refresh_token"] = Field(description="How the tokens are obtained.")
    code: str | None = Field(default=None, max_length=200, description="The one-time code given to the app redirect.")
    redirect_uri: str | None = Field(default=None, max_length=2000, description="The app redirect URI used at login.")
    code_verifier: str | None = Field(
        default=None, max_length=128,
        description="With `authorization_code`, required: the PKCE verifier (RFC 7636, 43-128 characters) whose "
                    "S256 challenge the app sent to `/v1/auth/login`. Missing or wrong: `invalid_grant`, and the "
                    "code is spent.")
    refresh_token: str | None = Field(default=None, max_length=200, description="The current refresh token.")


class SessionView(BaseModel):
    id: str = Field(description="Session id.")
    created_at: dt.datetime = Field(description="Login time.")
    last_used_at: dt.datetime = Field(description="Last time tokens were issued or refreshed.")
    provider: str = Field(description="Identity provider (`valid` or `oidc:<name>`).")
    method: str = Field(description="Login method the provider reported (idcatmobil, certificat, clave...).")
    assurance_level: str = Field(description="Assurance level reported (low, substantial, high, or the OIDC acr).")
    user_agent: str = Field(description="Device / user agent that started the login.")
    active: bool = Field(description="Whether the session can still be used or refreshed.")
    current: bool = Field(description="Whether this is the session making the request.")


def _view(row: Session, current_id: str) -> SessionView:
    now = dt.datetime.now(dt.UTC)
    active = not row.revoked and row.refresh_expires_at is not None and row.refresh_expires_at > now
    return SessionView(id=row.id, created_at=row.created_at, last_used_at=row.last_used_at, provider=row.provider,
                       method=row.method, assurance_level=row.assurance_level, user_agent=row.user_agent,
                       active=active, current=row.id == current_id)


@router.get("/auth/providers", response_model=list[Provider], summary="Login providers")
async def list_providers(ctx: Ctx) -> list[dict[str, str]]:
    """The identity providers a citizen can log in with."""
    return providers(ctx)


async def limit_login(request: Request) -> None:
    """Rate limit on login starts and token requests per client address (429 ``too_many_requests``
    with ``Retry-After``; the address is stored as an HMAC only)."""
    settings = request.app.state.settings
    await enforce(limiter_of(request), [(Limit.parse("login.client", settings.rate_limit_login_client),
                                         client_address(request, settings.trusted_proxies))])


@router.get("/auth/login", status_code=302, summary="Start a login", response_class=RedirectResponse,
            dependencies=[Depends(limit_login)],
            responses={302: {"description": "Redirect to the identity provider."}, **rate_limit_responses()})
async def login(ctx: Ctx, request: Request,
                redirect_uri: Annotated[str, Query(max_length=2000, description="The app's redirect URI.")],
                code_challenge: Annotated[str, Query(
                    pattern=S256_CHALLENGE,
                    description="Required: the S256 PKCE challenge of a fresh verifier the app keeps, "
                                "BASE64URL(SHA-256(verifier)) without padding (RFC 7636). The one-time code "
                                "this login ends with is exchanged only with that verifier.")],
                code_challenge_method: Annotated[Literal["S256"], Query(
                    description="Required, and only `S256` (`plain` is refused).")],
                provider: Annotated[str, Query(max_length=60, description="`valid` or a configured OIDC provider name.")] = "valid",
                state: Annotated[str | None, Query(max_length=500, description=(
                    "Opaque app state, echoed back: a fresh random value the app checks at its redirect "
                    "(a login it did not start, login CSRF, is refused there)."))] = None,
                login_hint: Annotated[str | None, Query(max_length=100, description="Forwarded to the provider when allowed (tests, demos).")] = None,
                ) -> RedirectResponse:
    """Send the browser to the identity provider (authorization code with PKCE).

    The app sends its own PKCE challenge (`code_challenge`, `code_challenge_method=S256`): another app
    that receives the redirect (the same private-use URI scheme, RFC 8252 §8.1) cannot exchange the
    code without the verifier."""
    url = await start_login(ctx, provider=provider, redirect_uri=redirect_uri, app_state=state,
                            code_challenge=code_challenge, login_hint=login_hint,
                            user_agent=request.headers.get("user-agent", ""))
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})


@router.get("/auth/callback", status_code=302, summary="Identity provider redirect", response_class=RedirectResponse,
            responses={302: {"description": "Redirect to the app with a one-time code or an error."}})
async def callback(ctx: Ctx,
                   state: Annotated[str | None, Query(max_length=500)] = None,
                   code: Annotated[str | None, Query(max_length=2000)] = None,
                   error: Annotated[str | None, Query(max_length=200)] = None) -> RedirectResponse:
    """Finish the login: exchange the provider's code, open (or create) the wallet, redirect to the app."""
    url = await finish_login(ctx, state=state, code=code, error=error)
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})


@router.post("/auth/token", response_model=TokenResponse, summary="Get or refresh tokens",
             dependencies=[Depends(limit_login)], responses=rate_limit_responses())
async def token(ctx: Ctx, request: Request) -> dict[str, object]:
    """Exchange the app's one-time code (with `redirect_uri` and the PKCE `code_verifier`), or a refresh
    token, for an access and refresh token.

    Accepts a form (`application/x-www-form-urlencoded`) or a JSON body with the same fields.
    """
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            raw = await request.json()
        except ValueError as exc:
            raise APIError(400, "invalid_request", "request body is not valid JSON") from exc
    else:
        raw = {k: str(v) for k, v in (await request.form()).items()}
    if not isinstance(raw, dict):
        raise APIError(400, "invalid_request", "the body must be an object")
    try:
        body = TokenRequest.model_validate(raw)
    except ValueError as exc:
        raise APIError(400, "invalid_request", "grant_type must be authorization_code or refresh_token, "
                                               "with code/redirect_uri or refresh_token") from exc
    if body.grant_type == "authorization_code":
        if not body.code or not body.redirect_uri:
            raise APIError(400, "invalid_request", "code and redirect_uri are required")
        tokens = await exchange_app_code(ctx, body.code, body.redirect_uri, body.code_verifier)
    else:
        if not body.refresh_token:
            raise APIError(400, "invalid_request", "refresh_token is required")
        tokens = await refresh_tokens(ctx, body.refresh_token)
    return tokens


@router.post("/auth/logout", status_code=204, summary="Log out")
async def logout(ctx: Ctx, me: Citizen) -> None:
    """End the current session (its access and refresh tokens stop working)."""
    await revoke_session(ctx, me.wallet_id, me.session.id)


@router.get("/sessions", response_model=list[SessionView], summary="My active sessions")
async def list_sessions(ctx: Ctx, me: Citizen) -> list[SessionView]:
    """The citizen's sessions that can still be used."""
    return [s for s in await _sessions(ctx, me) if s.active]


@router.get("/me/logins", response_model=list[SessionView], summary="My logins")
async def my_logins(ctx: Ctx, me: Citizen,
                    limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[SessionView]:
    """Every login to this wallet, newest first: time, provider, method, assurance level, device."""
    return (await _sessions(ctx, me))[:limit]


async def _sessions(ctx: Ctx, me: Citizen) -> list[SessionView]:
    async with ctx.db.read_session() as session:
        rows = (await session.execute(select(Session).where(Session.wallet_id == me.wallet_id)
                                      .order_by(Session.created_at.desc()).limit(500))).scalars().all()
    return [_view(r, me.session.id) for r in rows]


@router.delete("/sessions/{session_id}", status_code=204, summary="Revoke a session")
async def delete_session(ctx: Ctx, me: Citizen, session_id: str) -> None:
    """Revoke one of my sessions (e.g. a lost phone)."""
    if not await revoke_session(ctx, me.wallet_id, session_id):
        raise APIError(404, "not_found", "no such session")


class Me(BaseModel):
    wallet_id: str = Field(description="The wallet id.")
    identifier: str = Field(description="Identifier the provider asserted (the wallet belongs to it).")
    name: str = Field(description="Name reported by the provider.")
    email: str = Field(description="E-mail reported by the provider.")
    provider: str = Field(description="Provider of the identity.")
    pin_set: bool = Field(description="Whether a wallet PIN protects presentations.")


@router.get("/me", response_model=Me, summary="Who I am")
async def me_view(me: Citizen) -> Me:
    """The citizen's identity as the login provider asserted it."""
    profile = me.key.open("profile", me.wallet_id, me.wallet.profile)
    return Me(wallet_id=me.wallet_id, identifier=profile["identifier"], name=profile["name"],
              email=profile["email"], provider=profile["provider"], pin_set=pin_status(me.key, me.wallet) != NO_PIN)
