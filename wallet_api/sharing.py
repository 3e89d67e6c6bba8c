"""Sharing credentials: an OpenID4VP 1.0 responder with consent.

1. ``receive_request``: fetch the request object (GET, or POST with ``wallet_nonce``), verify its
   signature and Client Identifier Prefix rules (:func:`ssi.oid4vp.verify_request_object`), decide who
   is asking: the certificate's organisation when it chains to a configured relying-party anchor;
   otherwise the request is refused (``untrusted_verifier``), or, with ``allow_untrusted_verifiers``,
   previewed without a name and with a warning; unsigned ``redirect_uri:`` requests only in
   ``dev_mode``, always with a warning. Then evaluate the DCQL query against the citizen's valid credentials
   (only those of a type it accepts are opened: :func:`query_types`) and answer a
   consent preview listing every claim the disclosures to present carry — a disclosure goes whole, so
   the plain members of a disclosed object are shown too, not only the claims asked for. Nothing is
   sent to the verifier at this stage.
2. ``approve``: the citizen's choices (which credential per query, which optional queries) select
   exactly the disclosures of the preview — never more. A chosen credential whose status check is due
   is checked now, and one revoked, suspended or expired since the scan is refused (409), nothing
   sent; each chosen credential is presented with a
   KB-JWT (``aud`` = client id, ``nonce``) from its least-used batch copy; the answer goes by
   ``direct_post`` or ``direct_post.jwt`` (ECDH-ES to the verifier's key).
3. ``decline``: ``error=access_denied`` with ``state`` to the verifier.

Every outcome goes to the history with exactly what was disclosed. An approval that fails before its
answer leaves the wallet gives the request back to the citizen (``pending``); one that fails once the
answer may have reached the verifier is recorded (``failed``, outcome ``unknown``) and never resent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service_kit.errors import APIError
from ssi import x509 as ssi_x509
from ssi.dcql import DCQLQuery, evaluate
from ssi.encoding import json_dumps
from ssi.errors import SSIError
from ssi.jwe import encrypt_jwe
from ssi.oid4vp import (
    REQUEST_OBJECT_MEDIA_TYPE,
    RequestObject,
    parse_authorization_request_uri,
    verify_request_object,
)
from ssi.sd_jwt import SDJWT
from ssi.sd_jwt_vc import NON_DISCLOSABLE_CLAIMS, SD_JWT_VC_TYP
from ssi.urls import UnsafeURL, split_secure_url

from .context import FetchError, WalletContext
from .deps import Principal
from .models import Credential, CredentialCopy, Presentation, utcnow
from .pin import check_pin
from .receiving import shown_details
from .store import STORED, OpenCredential, accept_languages, add_history, load_credentials, pick_display
from .vault import DataKey, new_id

log = logging.getLogger(__name__)

_SUPPORTED_ENC = ("A128GCM", "A256GCM")


def _path_text(path: list[Any] | tuple[Any, ...]) -> str:
    return ".".join("*" if p is None else str(p) for p in path)


def _same_path(pattern: Any, path: tuple[Any, ...]) -> bool:
    """Whether a metadata claim path names ``path`` (its ``null`` standing for any array index)."""
    return isinstance(pattern, list) and len(pattern) == len(path) and all(
        want == have if want is not None else isinstance(have, int) for want, have in zip(pattern, path, strict=True))


#: Plain claims of every SD-JWT VC that say nothing of the citizen (who issued it, when, its type, the
#: holder key, the status reference): the consent screen does not list them.
TECHNICAL_CLAIMS = NON_DISCLOSABLE_CLAIMS | {"iat", "_sd_alg"}


def _shown_claims(sd: SDJWT, paths: list[tuple[Any, ...]]) -> list[tuple[tuple[Any, ...], Any]]:
    """Every claim the presentation of ``paths`` shows: a disclosure goes whole, so an object's plain
    members leave with the one asked for, and the credential's plain claims (a birth date an issuer
    did not make disclosable) leave in every presentation (:meth:`ssi.sd_jwt.SDJWT.revealed_claims`)."""
    return sd.revealed_claims(sd.disclosures_for(paths), paths, plain_except=TECHNICAL_CLAIMS)


def _claim_label(cred: OpenCredential, path: tuple[Any, ...], languages: list[str]) -> str:
    """The claim's display name from the type metadata or issuer metadata, else the path."""
    for source in ((cred.details.get("type_metadata") or {}).get("claims") or [],
                   cred.details.get("display", {}).get("claims") or []):
        for claim in source:
            if isinstance(claim, dict) and _same_path(claim.get("path"), path):
                if claim.get("name"):
                    return str(claim["name"])
                label = pick_display(claim.get("display"), languages)
                if label.get("name") or label.get("label"):
                    return str(label.get("name") or label.get("label"))
    return _path_text(path)


def _purpose(request: RequestObject, languages: list[str]) -> str | None:
    value = (request.model_extra or {}).get("purpose")
    if isinstance(value, str):
        return value[:500]
    if isinstance(value, dict):
        for lang in [*languages, "en", "ca", "es"]:
            text = value.get(lang) or value.get(lang.split("-")[0])
            if isinstance(text, str):
                return text[:500]
        for text in value.values():
            if isinstance(text, str):
                return text[:500]
    return None


async def _fetch_request_object(ctx: WalletContext, request_uri: str, method: str | None,
                                wallet_nonce: str | None) -> str:
    headers = {"Accept": f"{REQUEST_OBJECT_MEDIA_TYPE}, application/jwt"}
    try:
        async with ctx.client() as client:
            if method == "post":
                response = await ctx.request(client, "POST", request_uri, headers=headers,
                                             data={"wallet_nonce": wallet_nonce or ""})
            else:
                response = await ctx.request(client, "GET", request_uri, headers=headers)
    except FetchError as exc:
        raise APIError(502, "verifier_unavailable", f"the request could not be fetched: {exc.detail}") from exc
    if response.status_code != 200:
        raise APIError(502, "verifier_unavailable", f"the verifier answered HTTP {response.status_code}")
    return response.text.strip()


def _usable(cred: OpenCredential) -> bool:
    return _usable_row(cred.row)


def _usable_row(row: Credential) -> bool:
    """Whether a credential may answer a request, by what its row holds in clear (so also for one
    whose sealed data does not open)."""
    if row.status in ("revoked", "suspended"):
        return False
    return row.expires_at is None or row.expires_at > utcnow()


def _unreadable_counts(query: DCQLQuery, unreadable: list[Credential]) -> dict[str, int]:
    """Per credential query, how many of the wallet's credentials that do not open are of a type it
    accepts (their clear ``vct`` in its ``vct_values``) and otherwise usable: those it cannot be
    offered. Only a count: nothing of such a credential can be read, and nothing else is said of it."""
    counts: dict[str, int] = {}
    for cq in query.credentials:
        types = cq.vct_values or ()
        counts[cq.id] = sum(1 for row in unreadable if row.vct in types and _usable_row(row))
    return counts


def query_types(query: DCQLQuery) -> frozenset[str] | None:
    """The credential types (``vct``) of the wallet's credentials that can answer a DCQL query: every
    type its SD-JWT VC credential queries list in ``meta.vct_values``; ``None`` (any type) when one of
    them lists none.

    Only credentials of these types are opened (:func:`load_credentials`, by the row's clear ``vct``):
    any other one fails :func:`ssi.dcql.match_credential` on its type whatever it holds, so opening it
    shows nothing the preview uses. A query of another format (an mdoc's, which names a ``doctype_value``
    instead) adds no type: every credential the wallet stores is an SD-JWT VC (``typ`` ``dc+sd-jwt``,
    checked at receipt), so none answers it. The DCQL parser refuses an SD-JWT VC query without
    ``vct_values``; were one let through, every credential would be opened for it."""
    types: set[str] = set()
    for cq in query.credentials:
        if cq.format != SD_JWT_VC_TYP:
            continue
        if cq.vct_values is None:
            return None
        types.update(cq.vct_values)
    return frozenset(types)


async def _wallet_now(ctx: WalletContext, me: Principal, types: frozenset[str] | None
                      ) -> tuple[set[str], list[Credential]]:
    """The ids of the wallet's credentials of ``types`` (:func:`query_types`; ``None``: all) that
    open and may answer a request now (neither revoked, suspended nor expired, as far as the wallet
    knows), and the rows of those that do not open (logged by :func:`load_credentials`, with their id
    and the vault error's code)."""
    unreadable: list[Credential] = []
    async with ctx.db.read_session() as session:
        found = await load_credentials(session, me.key, vcts=types, unreadable=unreadable)
    return {cred.id for cred in found if _usable(cred)}, unreadable


def current_preview(data: dict[str, Any], readable: set[str], unreadable: list[Credential]) -> dict[str, Any]:
    """The kept preview of a pending request as the wallet stands now: an option whose credential no
    longer opens (or was deleted), or was revoked, suspended or expired since the request was scanned
    is not offered, as approving with it could only fail (409 ``credential_unreadable``, ``conflict``,
    ``credential_revoked``...), and each query says how many credentials of a type it accepts do not
    open (``unreadable_count``).

    What the approval sends is still what the kept preview chose: a required query left with no
    option makes the request one the wallet cannot answer (``satisfiable`` false) rather than
    another alternative of a ``credential_sets`` list being sent instead."""
    preview = data["preview"]
    request = RequestObject.model_validate(data["request"], context=STORED)
    counts = _unreadable_counts(request.query, unreadable)
    satisfiable = preview["satisfiable"]
    queries = []
    for query in preview["queries"]:
        options = [o for o in query["options"] if o["credential_id"] in readable]
        now = {**query, "options": options, "unreadable_count": counts.get(query["query_id"], 0)}
        if len(options) != len(query["options"]):
            now["satisfied"] = bool(options)
            if not options:
                now["reason"] = "no_credentials"
                if _shared(query, preview["satisfiable"]) and not query["optional"]:
                    satisfiable = False
        queries.append(now)
    return {**preview, "satisfiable": satisfiable, "queries": queries}


async def preview_now(ctx: WalletContext, me: Principal, row: Presentation, data: dict[str, Any]) -> dict[str, Any]:
    """What ``GET /v1/presentations/{id}`` answers: a pending request's preview as the wallet stands
    now (:func:`current_preview`) and whether it has ``expired``; an answered one's as it was kept."""
    if row.state != "pending":
        return _preview_out(row.id, row.state, data)
    # Only the credentials of a type the request accepts are opened: every option of the kept preview
    # is one, and so is every credential an unreadable_count counts.
    request = RequestObject.model_validate(data["request"], context=STORED)
    readable, unreadable = await _wallet_now(ctx, me, query_types(request.query))
    out = _preview_out(row.id, row.state, {**data, "preview": current_preview(data, readable, unreadable)})
    # Past its expiry it can be neither approved nor declined (both answer 409 conflict); the state
    # stays pending until the request is deleted, a day later.
    out["expired"] = row.expires_at <= utcnow()
    return out


async def receive_request(ctx: WalletContext, me: Principal, uri: str, accept_language: str | None) -> dict[str, Any]:
    """Fetch and verify a presentation request; keep it; answer the consent preview."""
    import secrets

    languages = accept_languages(accept_language)
    try:
        auth = parse_authorization_request_uri(uri, allow_http_loopback=ctx.dev)
    except SSIError as exc:
        raise APIError(400, "invalid_request_uri", f"the presentation request is not valid ({exc.code})") from exc
    wallet_nonce = secrets.token_urlsafe(16) if auth.request_uri_method == "post" else None
    if auth.request is not None:
        token = auth.request
    elif auth.request_uri is not None:
        token = await _fetch_request_object(ctx, auth.request_uri, auth.request_uri_method, wallet_nonce)
    else:
        raise APIError(400, "invalid_request_uri", "the request carries no request object (request or request_uri)")
    try:
        # Trust decision: a certificate chaining to no relying-party anchor is refused unless the
        # operator opted into previews of unknown verifiers; unsigned (redirect_uri:) requests exist
        # for development only.
        request = verify_request_object(token, trust_anchors=ctx.rp_anchors, client_id=auth.client_id,
                                        allow_untrusted=ctx.settings.allow_untrusted_verifiers,
                                        allow_unsigned=ctx.dev, wallet_nonce=wallet_nonce,
                                        allow_http_loopback=ctx.dev)
    except SSIError as exc:
        if exc.code == "message.untrusted_verifier":
            raise APIError(400, "untrusted_verifier",
                           "the verifier's certificate is not issued by an authority this wallet trusts; "
                           "the request was refused and nothing was sent") from exc
        raise APIError(400, "invalid_request_object",
                       f"the request was refused and nothing was sent ({exc.code}): {exc.detail}") from exc
    if request.response_mode == "direct_post.jwt":
        encs = (request.client_metadata.encrypted_response_enc_values_supported if request.client_metadata else None) \
            or ["A128GCM"]
        if not any(e in _SUPPORTED_ENC for e in encs):
            raise APIError(400, "invalid_request_object", "the verifier asks for a response encryption the wallet lacks")
    verifier = _verifier_view(request)
    unreadable: list[Credential] = []
    types = query_types(request.query)
    async with ctx.db.read_session() as session:
        # A credential whose stored data does not open cannot be presented: left out (and logged), so
        # the others can still answer the request; each query counts those of a type it accepts. Only
        # the credentials of a type the request accepts are opened (query_types).
        credentials = [c for c in await load_credentials(session, me.key, vcts=types, unreadable=unreadable)
                       if _usable(c)]
    preview = _evaluate(request, credentials, languages)
    if types is not None:
        await _reasons_of_types_left_out(ctx, me.wallet_id, request.query, types, preview)
    counts = _unreadable_counts(request.query, unreadable)
    for query in preview["queries"]:
        query["unreadable_count"] = counts.get(query["query_id"], 0)
    presentation_id = new_id("pres")
    data = {"request": request.model_dump(mode="json", by_alias=True, exclude_none=True),
            "verifier": verifier, "purpose": _purpose(request, languages), "preview": preview}
    async with ctx.db.session() as session:
        session.add(Presentation(id=presentation_id, wallet_id=me.wallet_id, state="pending",
                                 sealed=me.key.seal("presentation", presentation_id, data),
                                 expires_at=utcnow() + dt.timedelta(seconds=ctx.settings.offer_ttl)))
    return _preview_out(presentation_id, "pending", data)


async def _reasons_of_types_left_out(ctx: WalletContext, wallet_id: str, query: DCQLQuery,
                                     types: frozenset[str], preview: dict[str, Any]) -> None:
    """Give a query nothing answers the reason the credentials left unopened would have given it.

    Only the credentials of ``types`` were evaluated; any other one fails on its type (or, for a query
    of another format, on its format: every stored credential is an SD-JWT VC), the lowest reasons of
    :func:`ssi.dcql.evaluate`. So a query keeps the reason the evaluated ones gave it, unless none did
    (``no_credentials``) while the wallet holds other credentials that could be offered (neither
    revoked, suspended nor expired, by their clear columns)."""
    unanswered = [q for q in preview["queries"] if q["reason"] == "no_credentials"]
    if not unanswered:
        return
    now = utcnow()
    async with ctx.db.read_session() as session:
        others = (await session.execute(select(Credential.id).where(
            Credential.wallet_id == wallet_id, *([Credential.vct.not_in(sorted(types))] if types else []),
            Credential.status.not_in(("revoked", "suspended")),
            or_(Credential.expires_at.is_(None), Credential.expires_at > now)).limit(1))).first()
    if others is None:
        return
    formats = {cq.id: cq.format for cq in query.credentials}
    for q in unanswered:
        q["reason"] = "vct_mismatch" if formats.get(q["query_id"]) == SD_JWT_VC_TYP else "format_mismatch"


def _verifier_view(request: RequestObject) -> dict[str, Any]:
    trust = request.trust
    cert = request.verifier_certificate
    view: dict[str, Any] = {"client_id": request.client_id, "trust": trust, "verified": trust == "trusted",
                            "name": None, "warning": None}
    if trust == "trusted" and cert is not None:
        view["name"] = ssi_x509.certificate_subject_name(cert)
    elif trust == "untrusted":
        view["warning"] = ("Unknown verifier: its certificate is not issued by an authority this wallet trusts. "
                           "Its name cannot be confirmed.")
    else:
        view["warning"] = ("Development request: it is not signed, so the verifier is not authenticated and "
                           "anyone could have made it. Share nothing real.")
    return view


def _evaluate(request: RequestObject, credentials: list[OpenCredential], languages: list[str]) -> dict[str, Any]:
    """The consent preview: per credential query, the candidate credentials and every claim each
    would show — those asked for and the plain members disclosed with them (``requested`` false) —
    and, under ``asked`` (kept with the request, not shown), the paths its disclosures are chosen by."""
    parsed: list[SDJWT] = []
    owners: dict[int, OpenCredential] = {}
    for cred in credentials:
        # Display data as receipt keeps it now, also of a credential an earlier version stored.
        cred.details = shown_details(cred.details)
        sd = cred.least_used().parsed()
        owners[id(sd)] = cred
        parsed.append(sd)
    result = evaluate(request.query, parsed)
    queries = []
    asked: dict[str, dict[str, list[list[Any]]]] = {}
    optional_ids = set(result.optional)
    required_ids = set(result.required)
    for cq in request.query.credentials:
        options = []
        for match in result.matches.get(cq.id, []):
            cred = owners[id(match.credential)]
            asked.setdefault(cq.id, {})[cred.id] = [list(path) for path in match.paths]
            options.append({
                "credential_id": cred.id,
                "credential_name": cred.details.get("display", {}).get("name") or cred.row.vct,
                "issuer": cred.row.issuer,
                "issuer_name": cred.details.get("issuer_display", {}).get("name") or cred.row.issuer,
                "claims": _claims_out(cred, _shown_claims(match.credential, list(match.paths)), match.paths,
                                      languages),
            })
        queries.append({"query_id": cq.id, "required": cq.id in required_ids or (cq.id not in optional_ids
                                                                                 and not request.query.credential_sets),
                        "optional": cq.id in optional_ids, "satisfied": bool(options),
                        "reason": result.unsatisfied.get(cq.id), "options": options})
    return {"satisfiable": result.satisfiable, "queries": queries, "asked": asked}


def _claim_keys(claims: Iterable[tuple[list[Any], Any]]) -> list[str]:
    """Claims as comparable text, in no particular order: the members of one ``_sd`` array come in
    digest order, which differs between the batch copies of a credential."""
    return sorted(json.dumps([path, value], sort_keys=True) for path, value in claims)


def _claims_out(cred: OpenCredential, shown: list[tuple[tuple[Any, ...], Any]], asked: tuple[tuple[Any, ...], ...],
                languages: list[str]) -> list[dict[str, Any]]:
    return [{"path": list(path), "name": _claim_label(cred, path, languages), "value": value,
             "requested": path in asked} for path, value in shown]


def _shared(query: dict[str, Any], satisfiable: bool) -> bool:
    """Whether approving sends an answer to ``query``: one that a credential answers and that is
    required, or optional (then only when the citizen ticks it), of a request the wallet can answer.
    An alternative of a ``credential_sets`` option list that another option answers is neither
    required nor optional: it is not sent. :func:`approve` sends exactly these, and the preview says
    so per query (``shared``), so that the consent screen lists nothing that is not sent."""
    return satisfiable and bool(query["options"]) and bool(query["required"] or query["optional"])


def _preview_out(presentation_id: str, state: str, data: dict[str, Any]) -> dict[str, Any]:
    satisfiable = data["preview"]["satisfiable"]
    return {"presentation_id": presentation_id, "state": state, "verifier": data["verifier"],
            "purpose": data.get("purpose"), "satisfiable": satisfiable,
            "queries": [{**query, "shared": _shared(query, satisfiable)} for query in data["preview"]["queries"]],
            "redirect_uri": data.get("redirect_uri"), "error": data.get("error")}


async def load_presentation(ctx: WalletContext, me: Principal, presentation_id: str
                            ) -> tuple[Presentation, dict[str, Any]]:
    async with ctx.db.read_session() as session:
        row = (await session.execute(select(Presentation).where(
            Presentation.id == presentation_id, Presentation.wallet_id == me.wallet_id))).scalar_one_or_none()
    if row is None:
        raise APIError(404, "not_found", "no such presentation request")
    return row, me.key.open("presentation", row.id, row.sealed)


async def _claim_state(ctx: WalletContext, me: Principal, presentation_id: str, to: str,
                       data: dict[str, Any]) -> None:
    """Take a pending, unexpired request for answering (``to``: ``sending`` or ``declining``), sealing
    ``data`` with it: what it holds then (the share about to leave) is what the sweep records should
    this worker stop before :func:`_finish` (:func:`resolve_stranded`)."""
    async with ctx.db.session() as session:
        result = await session.execute(update(Presentation).where(
            Presentation.id == presentation_id, Presentation.wallet_id == me.wallet_id,
            Presentation.state == "pending", Presentation.expires_at > utcnow())
            .values(state=to, sealed=me.key.seal("presentation", presentation_id, data))
            .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise APIError(409, "conflict", "the request was already answered or expired")


async def _finish(session: AsyncSession, key: DataKey, presentation_id: str, claimed: str, state: str,
                  data: dict[str, Any], history_kind: str, history: dict[str, Any]) -> bool:
    """Move a request from ``claimed`` to its final ``state`` and record it in the history, in
    ``session``'s transaction; ``False`` (nothing written) when it had left ``claimed`` already — the
    sweep resolved it, or another worker finished it."""
    result = await session.execute(update(Presentation).where(
        Presentation.id == presentation_id, Presentation.wallet_id == key.wallet_id, Presentation.state == claimed)
        .values(state=state, sealed=key.seal("presentation", presentation_id, data))
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        log.warning("presentation already resolved", extra={"presentation_id": presentation_id, "state": state})
        return False
    await add_history(session, key, history_kind, history)
    return True


async def _finish_claimed(ctx: WalletContext, me: Principal, presentation_id: str, claimed: str, state: str,
                          data: dict[str, Any], history_kind: str, history: dict[str, Any]) -> bool:
    async with ctx.db.session() as session:
        return await _finish(session, me.key, presentation_id, claimed, state, data, history_kind, history)


def _response_form(request: RequestObject, payload: dict[str, Any]) -> dict[str, Any]:
    """The form of the Authorization Response (encrypted for ``direct_post.jwt``); nothing is sent."""
    if request.response_mode == "direct_post.jwt":
        assert request.client_metadata is not None
        jwk = request.client_metadata.encryption_key()
        encs = request.client_metadata.encrypted_response_enc_values_supported or ["A128GCM"]
        enc = next(e for e in encs if e in _SUPPORTED_ENC)
        return {"response": encrypt_jwe(payload, jwk, enc=enc)}
    return {k: (json_dumps(v) if isinstance(v, dict) else v) for k, v in payload.items()}


async def _post_response(ctx: WalletContext, request: RequestObject, payload: dict[str, Any]) -> dict[str, Any]:
    """Send the Authorization Response; return the verifier's JSON answer (``redirect_uri``...)."""
    return await _deliver(ctx, request, _response_form(request, payload))


async def _deliver(ctx: WalletContext, request: RequestObject, form: dict[str, Any]) -> dict[str, Any]:
    """POST a response form to the verifier; an :class:`APIError` when it is unreachable or refuses."""
    try:
        async with ctx.client() as client:
            response = await ctx.request(client, "POST", request.response_uri, data=form,
                                         headers={"Accept": "application/json"})
    except FetchError as exc:
        if exc.maybe_delivered:
            # Sent, the verifier's answer lost: it may hold the presentation. Never "not delivered".
            raise APIError(502, "delivery_unknown", f"the verifier's answer was lost ({exc.detail}): it may or "
                                                    "may not have received the presentation") from exc
        raise APIError(502, "verifier_unavailable", f"the answer could not be delivered: {exc.detail}") from exc
    from .receiving import _json

    body = _json(response)
    if response.status_code != 200:
        error = body.get("error") if isinstance(body, dict) else None
        raise APIError(502, "verifier_refused",
                       f"the verifier refused the answer (HTTP {response.status_code}{', ' + str(error) if error else ''})")
    return body if isinstance(body, dict) else {}


async def approve(ctx: WalletContext, me: Principal, presentation_id: str, *, selection: dict[str, str],
                  include_optional: list[str], pin: str | None) -> dict[str, Any]:
    """Present exactly what the preview showed for the chosen credentials; record it."""
    row, data = await load_presentation(ctx, me, presentation_id)
    if row.state != "pending" or row.expires_at <= utcnow():
        raise APIError(409, "conflict", "the request was already answered or expired")
    await check_pin(ctx, me, pin)
    preview = data["preview"]
    if not preview["satisfiable"]:
        raise APIError(400, "unsatisfiable", "the wallet cannot answer this request; decline it instead")
    request = RequestObject.model_validate(data["request"], context=STORED)
    chosen: list[tuple[dict[str, Any], dict[str, Any]]] = []
    known = {q["query_id"] for q in preview["queries"]}
    for query_id in [*selection, *include_optional]:
        if query_id not in known:
            raise APIError(400, "invalid_request", "the selection names a query the request does not have")
    offered: dict[str, list[dict[str, Any]]] | None = None
    for query in preview["queries"]:
        if not _shared(query, preview["satisfiable"]):
            continue  # nothing answers it, or another option of its credential set is the one sent
        if query["optional"] and query["query_id"] not in include_optional:
            continue  # optional parts are shared only when the citizen ticked them
        wanted = selection.get(query["query_id"])
        if not wanted:
            # The default is the first option the preview offers now (GET): not one that stopped
            # opening or was deleted since the scan. With none left, the kept first one, which then
            # answers 409 as before.
            if offered is None:
                readable, unreadable = await _wallet_now(ctx, me, query_types(request.query))
                offered = {q["query_id"]: q["options"] for q in current_preview(data, readable, unreadable)["queries"]}
            wanted = (offered.get(query["query_id"]) or query["options"])[0]["credential_id"]
        option = next((o for o in query["options"] if o["credential_id"] == wanted), None)
        if option is None:
            raise APIError(400, "invalid_request", "the chosen credential does not answer that query")
        chosen.append((query, option))
    # Whether each chosen credential may still be presented: a status check that is due runs now.
    await _check_due_statuses(ctx, me, [option["credential_id"] for _, option in chosen])
    # The answer is built before the request is taken: a failure here (a chosen credential deleted,
    # revoked or suspended since the preview) leaves it pending, and nothing is recorded.
    vp_token: dict[str, list[str]] = {}
    disclosed: list[dict[str, Any]] = []
    used_copies: list[str] = []
    async with ctx.db.read_session() as session:
        for query, option in chosen:
            unreadable: list[Credential] = []  # load_credentials logs it (its id and the vault error's code)
            creds = await load_credentials(session, me.key, credential_id=option["credential_id"],
                                           unreadable=unreadable)
            if unreadable:
                # Damaged (or re-pointed) since the preview: nothing can be presented from it, and the
                # citizen can still choose another credential, or decline. Nothing has been sent.
                raise APIError(409, "credential_unreadable", "a chosen credential's stored data no longer "
                                                             "opens; choose another credential or decline")
            if not creds:
                raise APIError(409, "conflict", "a chosen credential was deleted; choose another or decline")
            refused = _not_presentable(creds[0].row)
            if refused is not None:
                raise refused
            copy = creds[0].least_used()
            sd = copy.parsed()
            # The paths the disclosures are chosen by (a request previewed before they were kept:
            # those of its claims); what they show must be what the citizen was shown, never more.
            asked = (preview.get("asked") or {}).get(query["query_id"], {}).get(option["credential_id"])
            paths = [tuple(p) for p in (asked if asked is not None else [c["path"] for c in option["claims"]])]
            shown = _claim_keys((list(path), value) for path, value in _shown_claims(sd, paths))
            if shown != _claim_keys((c["path"], c["value"]) for c in option["claims"]):
                raise APIError(409, "conflict", "the credential would disclose other claims than the preview "
                                                "showed; decline, and ask the verifier for a new request")
            presentation = sd.present(paths, holder_key=copy.holder_key, aud=request.client_id,
                                      nonce=request.nonce)
            vp_token.setdefault(query["query_id"], []).append(presentation)
            used_copies.append(copy.id)
            disclosed.append({"query_id": query["query_id"], "credential_id": option["credential_id"],
                              "credential_name": option["credential_name"], "issuer": option["issuer"],
                              "issuer_name": option["issuer_name"],
                              "claims": [{"path": c["path"], "name": c["name"], "value": c["value"],
                                          "requested": c.get("requested", True)} for c in option["claims"]]})
    payload: dict[str, Any] = {"vp_token": vp_token}
    if request.state is not None:
        payload["state"] = request.state
    form = _response_form(request, payload)
    # Taken with the share it is about to send: if this worker stops before recording the outcome,
    # the sweep records that share (outcome unknown) from the row.
    data["disclosed"] = disclosed
    await _claim_state(ctx, me, presentation_id, "sending", data)
    history = share_history(data, request.response_mode)
    try:
        answer = await _deliver(ctx, request, form)
    except APIError as exc:
        unknown = exc.error == "delivery_unknown"
        data["error"] = DELIVERY_UNKNOWN if unknown else {"error": exc.error, "error_description": exc.error_description}
        await asyncio.shield(_finish_claimed(ctx, me, presentation_id, "sending", "failed", data, "share", {
            **history, "outcome": "unknown" if unknown else "failed", "error": exc.error}))
        raise
    except (Exception, asyncio.CancelledError):
        # The answer may have reached the verifier: whether it did is unknown. It is never sent again
        # (that could share twice); it is recorded as failed, and in the history with what it carried.
        data["error"] = DELIVERY_UNKNOWN
        await asyncio.shield(_finish_claimed(ctx, me, presentation_id, "sending", "failed", data, "share",
                                             {**history, "outcome": "unknown", "error": "delivery_unknown"}))
        raise
    data["redirect_uri"] = verifier_redirect(ctx, answer)
    # The share is recorded first: a failure counting the copies' uses cannot keep it out of the history.
    await _finish_claimed(ctx, me, presentation_id, "sending", "sent", data, "share", {**history, "outcome": "sent"})
    async with ctx.db.session() as session:
        for copy_id in used_copies:
            await session.execute(update(CredentialCopy).where(CredentialCopy.id == copy_id,
                                                               CredentialCopy.wallet_id == me.wallet_id)
                                  .values(uses=CredentialCopy.uses + 1).execution_options(synchronize_session=False))
    return {**_preview_out(presentation_id, "sent", data), "disclosed": disclosed}


#: Room for a verifier's own redirect URI (at most 2,000 characters) and the ``#response_code=...``
#: it appends for the same-device flow (OpenID4VP 1.0 §8.2), with margin; a 2 MB answer is not kept.
MAX_REDIRECT_URI = 4096


def verifier_redirect(ctx: WalletContext, answer: dict[str, Any]) -> str | None:
    """The ``redirect_uri`` of the verifier's answer (OpenID4VP 1.0 §8.2) if the app may follow it:
    an https URL (http to loopback in ``dev_mode``) of at most :data:`MAX_REDIRECT_URI` characters,
    its fragment kept (the same-device flow's ``response_code`` travels there). Anything else
    (``javascript:``, another scheme, a 2 MB string) is dropped: the app would otherwise be handed a
    script or an open redirect to follow in the citizen's name."""
    value = answer.get("redirect_uri")
    if not isinstance(value, str) or len(value) > MAX_REDIRECT_URI:
        return None
    try:
        split_secure_url(value, allow_http_loopback=ctx.dev, allow_fragment=True)
    except UnsafeURL:
        return None
    return value


async def _check_due_statuses(ctx: WalletContext, me: Principal, credential_ids: list[str]) -> None:
    """Check now the status of each of these credentials whose status check is due — the last one is
    older than its status list's ``ttl`` (or ``status_check_interval``), the time its issuer says a list
    may be relied on — as the background sweep would (same rules, same alerts), before anything is sent.

    The request may have been scanned long before, and the sweep may lag behind or not run: a
    credential revoked or suspended meanwhile would only be refused by the verifier, which fetches the
    list itself, with its claims in hand. A check not yet due is not run (the list fetched then stands,
    as it does for a verifier caching it), and one whose list cannot be fetched leaves the last known
    status (the verifier decides)."""
    if not credential_ids:
        return
    async with ctx.db.read_session() as session:
        due = list((await session.execute(select(Credential).where(
            Credential.wallet_id == me.wallet_id, Credential.id.in_(sorted(set(credential_ids))),
            Credential.next_status_check <= utcnow()))).scalars().all())
    if due:
        from .background import check_statuses_now  # the sweep imports this module

        await check_statuses_now(ctx, me.wallet, due)


#: Why a chosen credential cannot be presented, by what its row holds now: ``(error, description)``.
_NOT_PRESENTABLE = {
    "revoked": ("credential_revoked", "a chosen credential was revoked by its issuer"),
    "suspended": ("credential_suspended", "a chosen credential is suspended by its issuer"),
    "expired": ("credential_expired", "a chosen credential has expired"),
}


def _not_presentable(row: Credential) -> APIError | None:
    """409 for a chosen credential that is revoked, suspended or expired now (the verifier would refuse
    it, with its claims in hand): nothing is sent, and the request stays pending."""
    if _usable_row(row):
        return None
    error, description = _NOT_PRESENTABLE[row.status if row.status in ("revoked", "suspended") else "expired"]
    return APIError(409, error, f"{description} since the request was scanned; nothing was sent: choose "
                                "another credential or decline")


async def decline(ctx: WalletContext, me: Principal, presentation_id: str) -> dict[str, Any]:
    """Tell the verifier ``access_denied``; nothing is disclosed."""
    _row, data = await load_presentation(ctx, me, presentation_id)
    request = RequestObject.model_validate(data["request"], context=STORED)
    await _claim_state(ctx, me, presentation_id, "declining", data)
    payload: dict[str, Any] = {"error": "access_denied", "error_description": "the holder declined"}
    if request.state is not None:
        payload["state"] = request.state
    outcome = "declined"
    try:
        answer = await _post_response(ctx, request, payload)
        data["redirect_uri"] = verifier_redirect(ctx, answer)
    except Exception as exc:  # noqa: BLE001 - nothing was disclosed: whatever went wrong, the refusal stands
        # An APIError: the verifier is gone or refused. Anything else must not leave the request
        # "declining" for good, where the citizen can neither decline again nor answer.
        if not isinstance(exc, APIError):
            log.warning("decline not delivered", extra={"presentation_id": presentation_id,
                                                         "error": type(exc).__name__})
        outcome = "declined_unreported"
    await _finish_claimed(ctx, me, presentation_id, "declining", "declined", data, "decline",
                          decline_history(data, outcome))
    return _preview_out(presentation_id, "declined", data)


def share_history(data: dict[str, Any], response_mode: str | None) -> dict[str, Any]:
    """The history entry of a share (without its outcome): who asked, why, and each claim disclosed."""
    return {"verifier": data["verifier"], "purpose": data.get("purpose"), "disclosed": data.get("disclosed", []),
            "response_mode": response_mode}


def decline_history(data: dict[str, Any], outcome: str) -> dict[str, Any]:
    return {"verifier": data["verifier"], "purpose": data.get("purpose"), "disclosed": [], "outcome": outcome}


#: Recorded on a request whose answer may have left the wallet, or not: it is never sent again.
DELIVERY_UNKNOWN = {"error": "delivery_unknown", "error_description": (
    "the wallet failed while sending the answer: the verifier may or may not have received it")}


async def resolve_stranded(session: AsyncSession, key: DataKey, row: Presentation) -> bool:
    """End a request that a stopped worker (a crash, a restart, a database gone at its last write)
    left ``sending`` or ``declining``: the share it carried, sealed with the claim, goes into the
    history with outcome ``unknown`` and the request is ``failed`` (``delivery_unknown``); a decline
    is recorded ``declined``, outcome ``unknown``. ``False`` when a worker finished it meanwhile.

    Called by the background sweep only once no worker can still be answering it (long past its
    expiry, before which every answer starts)."""
    data = key.open("presentation", row.id, row.sealed)
    if row.state == "sending":
        data["error"] = DELIVERY_UNKNOWN
        history = share_history(data, data["request"].get("response_mode"))
        return await _finish(session, key, row.id, "sending", "failed", data, "share",
                             {**history, "outcome": "unknown", "error": "delivery_unknown"})
    return await _finish(session, key, row.id, "declining", "declined", data, "decline",
                         decline_history(data, "unknown"))
