"""Sharing: scanned presentation requests, consent preview, approve, decline; the wallet PIN."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import BaseModel, Field

from ..deps import Citizen, Ctx
from ..pin import reset_pin, set_pin
from ..sharing import approve, decline, load_presentation, preview_now, receive_request

router = APIRouter(tags=["sharing"])


class RequestIn(BaseModel):
    request_uri: str = Field(max_length=20000, description="The scanned request: `openid4vp://?client_id=...&request_uri=...` "
                             "(or `haip-vp://`).")


class ClaimView(BaseModel):
    path: list[Any] = Field(description="Claims path pointer.")
    name: str = Field(description="Display name of the claim.")
    value: Any = Field(description="The value that would be disclosed.")
    requested: bool = Field(default=True, description="False for a claim the verifier did not ask for that leaves "
                            "with one it did: a disclosure goes whole, with the plain members of its object.")


class OptionView(BaseModel):
    credential_id: str
    credential_name: str
    issuer: str
    issuer_name: str
    claims: list[ClaimView] = Field(description="Exactly the claims disclosed if this credential is chosen: those "
                                    "asked for, then those that leave with them.")


class QueryView(BaseModel):
    query_id: str = Field(description="DCQL credential query id.")
    required: bool = Field(description="Must be answered for the request to be satisfied (of a "
                           "`credential_sets` option list, only the queries of the first option the wallet "
                           "can answer: the one that is sent).")
    optional: bool = Field(description="Shared only if listed in `include_optional` at approval.")
    satisfied: bool = Field(description="Whether some credential answers it.")
    shared: bool = Field(description="Whether approving sends it: true for a required query a credential "
                         "answers, and for an optional one (sent only if listed in `include_optional`); false "
                         "for an alternative of a `credential_sets` option list that another option answers, "
                         "for a query nothing answers, and for every query of a request that is not "
                         "`satisfiable`. The approval sends exactly the queries with `shared` true; a "
                         "`selection` for another query is ignored.")
    reason: str | None = Field(description="Why nothing answers it (`no_credentials`, `vct_mismatch`, "
                                          "`untrusted_authority`, `missing_claim`...).")
    options: list[OptionView] = Field(description="Matching credentials (choose one at approval). For a pending "
                                      "request, only those whose stored data still opens and that may still "
                                      "be presented: one that stopped opening, was deleted, or is now "
                                      "revoked, suspended or expired (as far as the wallet knows) is no "
                                      "longer offered.")
    unreadable_count: int = Field(default=0, ge=0, description=(
        "How many of the wallet's credentials of a type this query accepts (their `vct` among its "
        "`vct_values`, neither revoked, suspended nor expired) could not be read: their stored data does "
        "not open, so they are not among `options` and cannot be shared. Nothing else of them is said; "
        "`GET /v1/credentials` lists them with `unreadable: true`. For a pending request it is counted "
        "at each read; for an answered one it is as at the scan."))


class PresentationView(BaseModel):
    presentation_id: str
    state: str = Field(description="pending | sending | sent | declined | failed.")
    verifier: dict[str, Any] = Field(description="`{client_id, trust, verified, name, warning}`: `name` only when "
                                     "the verifier's certificate chains to a trusted relying-party anchor.")
    purpose: str | None = Field(description="Why the verifier asks, in the citizen's language when given.")
    satisfiable: bool = Field(description="Whether the wallet can answer.")
    queries: list[QueryView]
    redirect_uri: str | None = Field(default=None, description="Where to send the browser after sending (same-device).")
    error: dict[str, Any] | None = None
    disclosed: list[dict[str, Any]] | None = Field(default=None, description="What was sent, after approval.")
    expired: bool = Field(default=False, description="A pending request past its expiry: it can no longer be "
                          "approved or declined (both answer 409 `conflict`); scan a new one. It stays "
                          "`pending` until it is deleted, a day after its expiry.")


class ApproveIn(BaseModel):
    selection: dict[str, str] = Field(default_factory=dict, description="Query id → chosen credential id "
                                      "(default: the first option `GET` offers now).")
    include_optional: list[str] = Field(default_factory=list, description="Optional query ids to answer too.")
    pin: str | None = Field(default=None, max_length=12, description="The wallet PIN, when one is set (missing "
                            "or empty: 403 `pin_required`, which costs no attempt).")


@router.post("/presentations", response_model=PresentationView, status_code=201, summary="Scan a presentation request")
async def post_request(ctx: Ctx, me: Citizen, body: RequestIn,
                       accept_language: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """Fetch and verify the request; answer who asks, why, and exactly which claims. Nothing is sent."""
    return await receive_request(ctx, me, body.request_uri, accept_language)


@router.get("/presentations/{presentation_id}", response_model=PresentationView, summary="A request's state")
async def get_request(ctx: Ctx, me: Citizen, presentation_id: str) -> dict[str, Any]:
    """The consent preview and state of a received request. While it is pending, the preview is the
    one kept at the scan as the wallet stands now: a credential that stopped opening or was deleted
    since is no longer among a query's `options` (a required query left with none makes it not
    `satisfiable`), and each query's `unreadable_count` says how many credentials of a type it
    accepts cannot be read."""
    row, data = await load_presentation(ctx, me, presentation_id)
    out = await preview_now(ctx, me, row, data)
    out["disclosed"] = data.get("disclosed")
    return out


@router.post("/presentations/{presentation_id}/approve", response_model=PresentationView, summary="Approve and send")
async def post_approve(ctx: Ctx, me: Citizen, presentation_id: str, body: ApproveIn) -> dict[str, Any]:
    """Send the presentation: only the previewed claims of the chosen credentials (of the queries whose
    `shared` is true), with a KB-JWT. With a wallet PIN set: 403 `pin_required` when `pin` is missing
    (no attempt counted), 403 `invalid_pin` with `attempts_left` when it is wrong, 423 `pin_locked`.
    A chosen credential deleted since the preview answers 409 `conflict`, one whose stored data no
    longer opens 409 `credential_unreadable`: nothing is sent and the request stays pending, to
    approve with another `selection` (`GET` no longer offers it) or decline. So does one that is now
    revoked, suspended or expired: 409 `credential_revoked`, `credential_suspended`,
    `credential_expired`; when its status check is due (its last one is older than the status list's
    `ttl`), the list is fetched first, as the background check would (an alert says what changed). A chosen credential that
    would now disclose other claims than the preview showed also answers 409 `conflict`, nothing
    sent (decline, and ask the verifier for a new request), and so does a request already answered
    (from another session) or past its expiry (`GET` says `expired`)."""
    return await approve(ctx, me, presentation_id, selection=body.selection,
                         include_optional=body.include_optional, pin=body.pin)


@router.post("/presentations/{presentation_id}/decline", response_model=PresentationView, summary="Decline")
async def post_decline(ctx: Ctx, me: Citizen, presentation_id: str) -> dict[str, Any]:
    """Refuse: the verifier receives `access_denied` and nothing else. A request already answered (from
    another session) or past its expiry answers 409 `conflict`, and nothing is sent."""
    return await decline(ctx, me, presentation_id)


class PinIn(BaseModel):
    pin: str | None = Field(default=None, max_length=12, description="New PIN (4-12 digits); null removes it.")
    current_pin: str | None = Field(default=None, max_length=12, description="The current PIN, when one is set.")


@router.put("/pin", status_code=204, summary="Set, change or remove the wallet PIN")
async def put_pin(ctx: Ctx, me: Citizen, body: PinIn) -> None:
    """When a PIN is set, approving a presentation needs it; wrong attempts are limited. Changing or
    removing a PIN needs `current_pin`: missing, 403 `pin_required` (no attempt counted); wrong, 403
    `invalid_pin`; unusable (altered in the database), 403 `pin_reset_required`. Each change raises an
    alert (`pin_set`, `pin_changed`, `pin_removed`); a PIN set or changed meanwhile by another session
    answers 409 `conflict`. A forgotten PIN: `POST /v1/pin/reset`."""
    await set_pin(ctx, me, body.pin, body.current_pin)


class PinResetIn(BaseModel):
    pin: str | None = Field(default=None, max_length=12, description="New PIN (4-12 digits); null removes it.")


@router.post("/pin/reset", status_code=204, summary="Reset a forgotten PIN after a fresh login")
async def post_pin_reset(ctx: Ctx, me: Citizen, body: PinResetIn) -> None:
    """Set (or remove) the PIN without the current one, even while it is locked — only from a session
    whose login at the identity provider is at most `pin_reset_login_seconds` (300) old: otherwise 403
    `recent_login_required` (log in again, then reset). The wallet's other sessions are ended and an
    alert (`pin_reset`) tells the citizen."""
    await reset_pin(ctx, me, body.pin)
