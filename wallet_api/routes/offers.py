"""Receiving credentials: scanned offers, acceptance, deferred polls, wallet-initiated issuance."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from ..deps import Citizen, Ctx
from ..receiving import (
    accept_offer,
    catalogue,
    complete_authorization,
    finish_authorization,
    load_offer,
    offer_preview,
    poll_offer,
    receive_offer,
    start_authorization,
)
from ..store import accept_languages

router = APIRouter(tags=["receiving"])


class OfferIn(BaseModel):
    offer_uri: str = Field(max_length=20000, description="The scanned offer: `openid-credential-offer://?...` "
                           "(by value or `credential_offer_uri`).",
                           examples=["openid-credential-offer://?credential_offer_uri=https%3A%2F%2Fissuer.example%2Foffers%2F1"])


class AcceptIn(BaseModel):
    tx_code: str | None = Field(default=None, max_length=100, description="The transaction code, when the preview asks for it.")


class OfferedCredential(BaseModel):
    configuration_id: str = Field(description="The issuer's credential configuration id.")
    format: str = Field(description="Credential format (`dc+sd-jwt`).")
    vct: str | None = Field(description="The credential type.")
    name: str = Field(description="Display name in the citizen's language.")
    description: str | None = None
    logo: dict[str, Any] | None = Field(default=None, description="`{uri, alt_text}` from the issuer metadata.")
    background_color: str | None = None
    text_color: str | None = None
    claims: list[dict[str, Any]] = Field(description="Claims the credential carries: `{path, name, mandatory}`.")


class OfferPreview(BaseModel):
    offer_id: str = Field(description="Id to accept or poll the offer with.")
    state: str = Field(description="offered | accepting | pending | issued | failed | authorizing.")
    issuer: dict[str, Any] = Field(description="`{id, name, logo}` of the credential issuer.")
    credentials: list[OfferedCredential]
    tx_code_required: bool = Field(description="Whether accepting needs the transaction code.")
    tx_code: dict[str, Any] | None = Field(description="`{input_mode, length, description}` of the code.")
    credential_ids: list[str] = Field(description="Ids of the credentials stored from this offer.")
    error: dict[str, Any] | None = Field(default=None, description="The last failure, `{error, error_description}`.")


@router.post("/offers", response_model=OfferPreview, status_code=201, summary="Scan a credential offer")
async def post_offer(ctx: Ctx, me: Citizen, body: OfferIn,
                     accept_language: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """Resolve the offer and preview it: issuer, credentials with display, whether a code is needed."""
    return await receive_offer(ctx, me, body.offer_uri, accept_language)


@router.get("/offers/{offer_id}", response_model=OfferPreview, summary="An offer's state")
async def get_offer(ctx: Ctx, me: Citizen, offer_id: str,
                    accept_language: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """The preview and state of an offer (pending offers: poll until `issued`)."""
    row, data = await load_offer(ctx, me, offer_id)
    return offer_preview(row.id, row.state, data, accept_languages(accept_language))


@router.post("/offers/{offer_id}/accept", response_model=OfferPreview, summary="Accept an offer")
async def post_accept(ctx: Ctx, me: Citizen, offer_id: str, body: AcceptIn,
                      accept_language: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """Redeem the offer: token, nonce, proofs with fresh P-256 keys, credential(s) verified and stored.

    `state` is `issued` with `credential_ids`, or `pending` (deferred issuance: poll the offer)."""
    return await accept_offer(ctx, me, offer_id, body.tx_code, accept_language)


@router.post("/offers/{offer_id}/poll", response_model=OfferPreview, summary="Poll a deferred issuance")
async def post_poll(ctx: Ctx, me: Citizen, offer_id: str,
                    accept_language: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """Ask the issuer's deferred endpoint now (the background sweep also does it)."""
    languages = accept_languages(accept_language)
    await poll_offer(ctx, me.key, offer_id, languages)
    row, data = await load_offer(ctx, me, offer_id)
    return offer_preview(row.id, row.state, data, languages)


@router.get("/catalogue", summary="Issuers to ask for a credential")
async def get_catalogue(ctx: Ctx, me: Citizen,
                        accept_language: Annotated[str | None, Header()] = None) -> list[dict[str, Any]]:
    """The configured issuers and the credentials each offers (for wallet-initiated issuance)."""
    return await catalogue(ctx, accept_language)


class AuthorizeIn(BaseModel):
    credential_issuer: str = Field(max_length=500, description="Issuer from the catalogue.")
    credential_configuration_id: str = Field(max_length=200, description="The credential to ask for.")
    redirect_uri: str = Field(max_length=2000, description="Registered app URI the browser returns to from the "
                              "issuer, with `offer_id` and `completion` (or `error`).")
    issuer_state: str | None = Field(default=None, max_length=2000,
                                     description="`issuer_state` from an offer with an authorization code grant.")
    login_hint: str | None = Field(default=None, max_length=100,
                                   description="Passed to the issuer's authorization request (who is logging in); "
                                   "development identity providers use it to skip the login page.")


class AuthorizeOut(BaseModel):
    offer_id: str = Field(description="Id of the issuance (read it at `/v1/offers/{id}`; complete it with "
                          "`/v1/issuance/complete`).")
    authorization_url: str = Field(description="Open this in the browser: the issuer logs the citizen in.")


@router.post("/issuance/authorize", response_model=AuthorizeOut, summary="Ask an issuer for a credential")
async def post_authorize(ctx: Ctx, me: Citizen, body: AuthorizeIn) -> dict[str, Any]:
    """Start the authorization code flow (PKCE, PAR when the issuer has it)."""
    return await start_authorization(ctx, me, credential_issuer=body.credential_issuer,
                                     configuration_id=body.credential_configuration_id,
                                     redirect_uri=body.redirect_uri, issuer_state=body.issuer_state,
                                     login_hint=body.login_hint)


@router.get("/issuance/callback", status_code=302, response_class=RedirectResponse, summary="Issuer redirect")
async def get_issuance_callback(ctx: Ctx,
                                state: Annotated[str | None, Query(max_length=500)] = None,
                                code: Annotated[str | None, Query(max_length=2000)] = None,
                                error: Annotated[str | None, Query(max_length=200)] = None) -> RedirectResponse:
    """The issuer returns the browser here. Nothing is received yet: the wallet keeps the issuer's code
    and sends the browser to the app's `redirect_uri` with `offer_id` and a one-time `completion` code
    (or `offer_id` and `error=access_denied` when the login was cancelled or refused); the app then
    completes the issuance with `POST /v1/issuance/complete`, logged in as the wallet's owner."""
    url = await finish_authorization(ctx, state=state, code=code, error=error)
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})


class CompleteIn(BaseModel):
    offer_id: str = Field(max_length=100, pattern=r"^[A-Za-z0-9_-]+$", description="`offer_id` of the redirect from the issuer (and of "
                          "`/v1/issuance/authorize`).")
    completion: str = Field(max_length=200, pattern=r"^[A-Za-z0-9_-]+$", description="The one-time `completion` code of that redirect.")


@router.post("/issuance/complete", response_model=OfferPreview, summary="Complete an issuance the issuer sent back",
             responses={400: {"description": "`invalid_grant`: no issuance of this wallet awaits that completion "
                                             "code (wrong, used, expired — a wrong code ends the issuance); "
                                             "`invalid_request`; or the issuer's error (`issuer_unavailable`, "
                                             "`invalid_credential`, ...)."},
                        404: {"description": "`not_found`: the issuance is not this wallet's."}})
async def post_complete(ctx: Ctx, me: Citizen, body: CompleteIn,
                        accept_language: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """Redeem the issuer's authorization code (PKCE) and receive the credential into this wallet —
    only for an issuance this wallet started, with the completion code the browser brought back.

    `state` is `issued` with `credential_ids`, or `pending` (deferred issuance: poll the offer)."""
    return await complete_authorization(ctx, me, body.offer_id, body.completion, accept_language)
