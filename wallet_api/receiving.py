"""Receiving credentials: an OpenID4VCI 1.0 client (pre-authorized and authorization code flows,
batch and deferred issuance), with verification of every credential before it is stored.

Nothing from the issuer is stored before it verified: the issuer signature (``x5c`` chaining to a
configured issuer anchor, or JWT VC Issuer Metadata of the very issuer the wallet talked to), its
``iss`` being that issuer, the ``vct`` the issuer's metadata promised for the configuration,
validity times, and that ``cnf`` is the fresh holder key the wallet generated for that copy. Secrets of the exchange (pre-authorized code,
access token, transaction id) are sealed under the wallet's data key.

The OAuth ``state`` of a wallet-initiated issuance, and then the app's one-time completion code, are
stored (``offers.state_hash``) as HMACs under the token key (:func:`wallet_api.vault.token_mac`, kinds
``issuance-state`` and ``issuance-completion``), as the login's secrets are: someone who can write the
database but lacks the master key cannot plant the digest of a ``state`` they chose and drive the
issuer's callback into a wallet's issuance. Earlier versions stored plain SHA-256 hashes; those are not
accepted (accepting them would accept a planted one too), so an issuance in progress during the
upgrade (at most ``login_ttl``) fails at the issuer's callback with ``invalid_request`` and the citizen
asks the issuer again.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import logging
import secrets
import time
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service_kit.errors import APIError
from service_kit.outbound import retry_after_seconds
from ssi import sd_jwt_vc
from ssi.errors import DisplayNameError, SSIError
from ssi.jose import Key, sign_jws
from ssi.names import display_name
from ssi.oid4vci import (
    PRE_AUTHORIZED_CODE_GRANT,
    AuthorizationServerMetadata,
    CredentialIssuerMetadata,
    CredentialOffer,
    CredentialResponse,
    NonceResponse,
    TokenResponse,
    build_proof_jwt,
    parse_credential_offer_uri,
)

from .context import FetchError, WalletContext
from .deps import Principal
from .issuer_keys import issuer_key_resolver
from .models import Credential, Offer, utcnow
from .store import STORED, accept_languages, add_alert, add_credential, add_history, pick_display
from .vault import DataKey, new_id, token_mac

log = logging.getLogger(__name__)

MAX_BATCH = 10
#: How long a credential request is resent after a lost connection or a short 503 (the issuer replays
#: its stored response to an identical request, and takes over a claim its dead process left).
CREDENTIAL_RETRY_SECONDS = 30.0
#: The longest ``Retry-After`` waited for inside a request; longer (a data source outage) is reported.
MAX_RETRY_AFTER = 5.0
#: How long a poll of a deferred issuance holds its offer (state ``polling``). A poll that never ends
#: it (the process stopped, an unexpected error) would otherwise leave the offer there for good and
#: the credential undelivered; once the lease has passed, the next sweep or "check now" polls again.
POLL_LEASE = dt.timedelta(seconds=120)


class IssuanceError(Exception):
    """Issuance failed; ``error`` is a stable code shown to the app, ``detail`` a sentence, ``reason``
    (when known) the precise code of why a credential did not verify (``sd_jwt.bad_signature``,
    ``x509.untrusted_chain``, ``iss_not_credential_issuer``...)."""

    def __init__(self, error: str, detail: str, status: int = 502, *, reason: str | None = None) -> None:
        self.error = error
        self.detail = detail
        self.status = status
        self.reason = reason
        super().__init__(detail)

    def api(self) -> APIError:
        return APIError(self.status, self.error, self.detail)


def well_known(identifier: str, suffix: str) -> str:
    """``https://host/.well-known/<suffix>/<path>`` (RFC 8615 insertion used by OpenID4VCI and RFC 8414)."""
    parts = urlsplit(identifier)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, f"/.well-known/{suffix}{path}", "", ""))


# -- metadata ----------------------------------------------------------------------------------

async def fetch_issuer_metadata(ctx: WalletContext, client: httpx.AsyncClient, credential_issuer: str
                                ) -> tuple[CredentialIssuerMetadata, AuthorizationServerMetadata]:
    """Credential issuer metadata and the metadata of its (first) authorization server."""
    try:
        raw = await ctx.get_json(client, well_known(credential_issuer, "openid-credential-issuer"),
                                 headers={"Accept": "application/json"})
        metadata = CredentialIssuerMetadata.parse(raw, allow_http_loopback=ctx.dev)
        if metadata.credential_issuer != credential_issuer:
            raise IssuanceError("invalid_issuer_metadata", "the issuer metadata names another credential issuer")
        as_id = (metadata.authorization_servers or [credential_issuer])[0]
        raw_as = await ctx.get_json(client, well_known(as_id, "oauth-authorization-server"))
        as_meta = AuthorizationServerMetadata.parse(raw_as, allow_http_loopback=ctx.dev)
        if as_meta.issuer != as_id:
            raise IssuanceError("invalid_issuer_metadata", "the authorization server metadata names another issuer")
    except FetchError as exc:
        raise IssuanceError("issuer_unavailable", f"the issuer's metadata could not be fetched: {exc.detail}") from exc
    except SSIError as exc:
        raise IssuanceError("invalid_issuer_metadata", f"the issuer's metadata is not valid ({exc.code})") from exc
    return metadata, as_meta


# -- display data from issuers ------------------------------------------------------------------
#
# Names, descriptions, colours, logos and claim labels come from the issuer's metadata and the Type
# Metadata at the vct, whatever their JSON types (ssi.oid4vci keeps display entries as any objects: the
# model also reads what the wallet stored before). The wallet keeps and shows only bounded text of them:
# one set of checks for receipt, the credential list and detail, and both ends of a backup (whose
# import refuses the shapes these never produce), so that one issuer's metadata cannot break a
# wallet's list, a backup's import or a presentation's preview.

#: Longest name or claim label kept (characters); a longer one is as if absent.
NAME_LIMIT = 500
#: Longest credential configuration id or type (``vct``) a credential is received under (the ``vct``
#: column holds 500); a stored display's identifiers longer than a backup takes (2000) are dropped.
IDENTIFIER_LIMIT = 500
_STORED_IDENTIFIER_LIMIT = 2000
DESCRIPTION_LIMIT = 1000
COLOUR_LIMIT = 100
LOCALE_LIMIT = 35
URI_LIMIT = 2000
_LOGO_SCHEMES = ("https", "http", "data")


def display_text(value: Any, limit: int = NAME_LIMIT) -> str | None:
    """``value`` as text to show, or ``None``: a string of at most ``limit`` characters that
    :func:`ssi.names.display_name` takes (no control, bidirectional or line-breaking characters,
    something to read), without the spaces around it."""
    if not isinstance(value, str) or len(value) > limit:
        return None
    try:
        return display_name(value)
    except DisplayNameError:
        return None


def claim_path_ok(path: Any) -> bool:
    """Whether ``path`` is a claim path: an array of names, indices and nulls (``wallet_api.backup``
    refuses a stored claim label whose path is not)."""
    return isinstance(path, list) and all(p is None or isinstance(p, str) or type(p) is int for p in path)


def shown_logo(value: Any) -> dict[str, str] | None:
    """A logo as ``{uri, alt_text?}``: an https, http or data URI without spaces or control characters."""
    if not isinstance(value, dict):
        return None
    uri = value.get("uri")
    if not isinstance(uri, str) or not uri or len(uri) > URI_LIMIT or any(ch.isspace() or not ch.isprintable()
                                                                         for ch in uri):
        return None
    try:
        scheme = urlsplit(uri).scheme.lower()
    except ValueError:
        return None
    if scheme not in _LOGO_SCHEMES:
        return None
    alt_text = display_text(value.get("alt_text"))
    return {"uri": uri, **({"alt_text": alt_text} if alt_text else {})}


def _identifier(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= _STORED_IDENTIFIER_LIMIT else None


def shown_display(display: Any) -> dict[str, Any]:
    """A credential's display (the shape :func:`describe_configuration` gives) with only what the wallet
    shows: bounded texts (a name, description or colour that is not is ``None``), a checked logo, and the
    claim labels whose path is a claim path and whose name is a text."""
    display = display if isinstance(display, dict) else {}
    claims = []
    for claim in display.get("claims") if isinstance(display.get("claims"), list) else []:
        if not isinstance(claim, dict) or not claim_path_ok(claim.get("path")):
            continue
        name = display_text(claim.get("name"))
        if name is not None:
            claims.append({"path": claim["path"], "name": name, "mandatory": claim.get("mandatory") is True})
    return {"configuration_id": _identifier(display.get("configuration_id")),
            "format": _identifier(display.get("format")), "vct": _identifier(display.get("vct")),
            "name": display_text(display.get("name")),
            "description": display_text(display.get("description"), DESCRIPTION_LIMIT),
            "logo": shown_logo(display.get("logo")),
            "background_color": display_text(display.get("background_color"), COLOUR_LIMIT),
            "text_color": display_text(display.get("text_color"), COLOUR_LIMIT), "claims": claims}


def shown_issuer(issuer: Any) -> dict[str, Any]:
    """An issuer's display (``{id, name, logo}``, :func:`describe_issuer`) with only what the wallet shows."""
    issuer = issuer if isinstance(issuer, dict) else {}
    return {"id": _identifier(issuer.get("id")), "name": display_text(issuer.get("name")),
            "logo": shown_logo(issuer.get("logo"))}


def _type_metadata_label(entry: Any) -> dict[str, str] | None:
    if not isinstance(entry, dict):
        return None
    kept = {key: text for key, limit in (("lang", LOCALE_LIMIT), ("locale", LOCALE_LIMIT), ("label", NAME_LIMIT),
                                         ("name", NAME_LIMIT), ("description", DESCRIPTION_LIMIT))
            if (text := display_text(entry.get(key), limit)) is not None}
    return kept if "label" in kept or "name" in kept else None


def _type_metadata_claim(entry: Any) -> dict[str, Any] | None:
    if not isinstance(entry, dict) or not claim_path_ok(entry.get("path")):
        return None
    claim = dict(entry)
    name = display_text(entry.get("name"))
    claim.pop("name", None)
    if name is not None:
        claim["name"] = name
    if "display" in entry:
        labels = entry["display"] if isinstance(entry["display"], list) else []
        claim["display"] = [label for label in map(_type_metadata_label, labels) if label is not None]
    return claim


def checked_type_metadata(document: Any, vct: str | None = None) -> dict[str, Any] | None:
    """SD-JWT VC Type Metadata as the wallet keeps it: an object (of type ``vct`` when given) whose
    ``claims`` hold only the entries whose ``path`` is a claim path, each with only bounded text as its
    ``name`` and in its ``display`` entries (``lang``/``locale``, ``label``, ``name``, ``description``);
    ``claims`` that is not an array keeps none. The document's other members are kept as they are
    (the app's to read; the wallet reads only the claim labels)."""
    if not isinstance(document, dict) or (vct is not None and document.get("vct") != vct):
        return None
    checked = dict(document)
    if "claims" in document:
        claims = document["claims"] if isinstance(document["claims"], list) else []
        checked["claims"] = [claim for claim in map(_type_metadata_claim, claims) if claim is not None]
    return checked


def shown_details(details: dict[str, Any]) -> dict[str, Any]:
    """A credential's stored details with their display data as receipt keeps it now
    (:func:`shown_display`, :func:`shown_issuer`, :func:`checked_type_metadata`): what the credential
    routes show and a backup exports, also of a credential stored before these checks."""
    shown = dict(details)
    if "display" in details:
        shown["display"] = shown_display(details["display"])
    if "issuer_display" in details:
        shown["issuer_display"] = shown_issuer(details["issuer_display"])
    if "type_metadata" in details:
        shown["type_metadata"] = checked_type_metadata(details["type_metadata"])
    return shown


def _named_entries(entries: Any) -> list[dict[str, Any]]:
    """The display entries that have a name to show (the best language is picked among those)."""
    return [e for e in entries if isinstance(e, dict) and display_text(e.get("name"))] \
        if isinstance(entries, list) else []


def describe_configuration(metadata: CredentialIssuerMetadata, configuration_id: str,
                           languages: list[str]) -> dict[str, Any]:
    """What the app shows about one offered credential, in the citizen's language."""
    config = metadata.credential_configurations_supported[configuration_id]
    cm = config.credential_metadata
    display = pick_display(_named_entries(cm.display if cm else None), languages)
    claims = []
    for claim in (cm.claims if cm and cm.claims else []):
        label = pick_display(_named_entries(claim.display), languages).get("name")
        claims.append({"path": list(claim.path), "name": label or ".".join(str(p) for p in claim.path),
                       "mandatory": bool(claim.mandatory)})
    described = shown_display({
        "configuration_id": configuration_id, "format": config.format, "vct": config.vct,
        "name": display.get("name"), "description": display.get("description"), "logo": display.get("logo"),
        "background_color": display.get("background_color"), "text_color": display.get("text_color"),
        "claims": claims})
    # Named by its type when the issuer gives no name to show (or its configuration id, or nothing).
    described["name"] = described["name"] or display_text(config.vct) or display_text(configuration_id) or ""
    return described


def describe_issuer(metadata: CredentialIssuerMetadata, languages: list[str], fallback: str = "") -> dict[str, Any]:
    display = pick_display(_named_entries(metadata.display), languages)
    return {"id": metadata.credential_issuer,
            "name": display_text(display.get("name")) or fallback or urlsplit(metadata.credential_issuer).hostname,
            "logo": shown_logo(display.get("logo"))}


# -- offers ------------------------------------------------------------------------------------

async def receive_offer(ctx: WalletContext, me: Principal, offer_uri: str, accept_language: str | None
                        ) -> dict[str, Any]:
    """Resolve a scanned offer, fetch the issuer's metadata, keep the offer and answer a preview."""
    languages = accept_languages(accept_language)
    try:
        offer, offer_url = parse_credential_offer_uri(offer_uri, allow_http_loopback=ctx.dev)
    except SSIError as exc:
        raise APIError(400, "invalid_offer", f"the credential offer is not valid ({exc.code})") from exc
    async with ctx.client() as client:
        if offer is None:
            assert offer_url is not None
            try:
                offer = CredentialOffer.parse(await ctx.get_json(client, offer_url), allow_http_loopback=ctx.dev)
            except FetchError as exc:
                raise APIError(502, "issuer_unavailable", f"the offer could not be fetched: {exc.detail}") from exc
            except SSIError as exc:
                raise APIError(400, "invalid_offer", f"the fetched credential offer is not valid ({exc.code})") from exc
        try:
            metadata, as_meta = await fetch_issuer_metadata(ctx, client, offer.credential_issuer)
        except IssuanceError as exc:
            raise exc.api() from exc
    for configuration_id in offer.credential_configuration_ids:
        if configuration_id not in metadata.credential_configurations_supported:
            raise APIError(400, "invalid_offer", "the offer names a credential the issuer does not describe")
        if metadata.credential_configurations_supported[configuration_id].format != "dc+sd-jwt":
            raise APIError(400, "unsupported_credential_format", "this wallet holds dc+sd-jwt credentials only")
        _check_identifiers(metadata, configuration_id)
    grants = offer.grants
    pre = grants.pre_authorized_code if grants else None
    if pre is None:
        raise APIError(400, "unsupported_grant", "only offers with a pre-authorized code can be accepted from a scan; "
                                                 "use the issuer catalogue for the authorization code flow")
    offer_id = new_id("offer")
    data = {"offer": offer.to_json(), "metadata": metadata.to_json(), "as_metadata": as_meta.to_json()}
    # The preview first: nothing is kept (no offer, no alert) of an offer the wallet cannot show.
    preview = offer_preview(offer_id, "offered", data, languages)
    async with ctx.db.session() as session:
        session.add(Offer(id=offer_id, wallet_id=me.wallet_id, issuer=offer.credential_issuer, kind="offer",
                          sealed=me.key.seal("offer", offer_id, data),
                          expires_at=utcnow() + dt.timedelta(seconds=ctx.settings.offer_ttl)))
        await add_alert(session, me.wallet_id, "offer_received",
                        f"New credential offer from {preview['issuer']['name']}", webhook=ctx.webhook)
    return preview


def _check_identifiers(metadata: CredentialIssuerMetadata, configuration_id: str, error: str = "invalid_offer"
                       ) -> None:
    """400 ``error`` for a credential whose configuration id or type is longer than the wallet stores
    (:data:`IDENTIFIER_LIMIT`)."""
    vct = metadata.credential_configurations_supported[configuration_id].vct or ""
    if len(configuration_id) > IDENTIFIER_LIMIT or len(vct) > IDENTIFIER_LIMIT:
        raise APIError(400, error, f"the issuer names a credential by an id or type (vct) longer than "
                                             f"{IDENTIFIER_LIMIT} characters")


def offer_preview(offer_id: str, state: str, data: dict[str, Any], languages: list[str]) -> dict[str, Any]:
    """The preview of a kept offer."""
    metadata = CredentialIssuerMetadata.model_validate(data["metadata"], context=STORED)
    offer = CredentialOffer.model_validate(data["offer"], context=STORED)
    pre = offer.grants.pre_authorized_code if offer.grants else None
    tx = pre.tx_code if pre else None
    return {
        "offer_id": offer_id, "state": state,
        "issuer": describe_issuer(metadata, languages),
        "credentials": [describe_configuration(metadata, cid, languages) for cid in offer.credential_configuration_ids],
        "tx_code_required": tx is not None,
        "tx_code": None if tx is None else {"input_mode": tx.input_mode or "numeric", "length": tx.length,
                                            "description": tx.description},
        "credential_ids": data.get("credential_ids", []),
        "error": data.get("error"),
    }


async def load_offer(ctx: WalletContext, me: Principal, offer_id: str) -> tuple[Offer, dict[str, Any]]:
    async with ctx.db.read_session() as session:
        row = (await session.execute(select(Offer).where(Offer.id == offer_id, Offer.wallet_id == me.wallet_id))
               ).scalar_one_or_none()
    if row is None:
        raise APIError(404, "not_found", "no such offer")
    return row, me.key.open("offer", row.id, row.sealed)


async def _transition(ctx: WalletContext, offer_id: str, wallet_id: str, from_states: tuple[str, ...], to: str) -> bool:
    async with ctx.db.session() as session:
        result = await session.execute(
            update(Offer).where(Offer.id == offer_id, Offer.wallet_id == wallet_id, Offer.state.in_(from_states))
            .values(state=to).execution_options(synchronize_session=False))
        return result.rowcount == 1


async def _save_offer(ctx: WalletContext, key: DataKey, offer_id: str, data: dict[str, Any], state: str,
                      next_poll_at: dt.datetime | None = None) -> None:
    async with ctx.db.session() as session:
        await session.execute(update(Offer).where(Offer.id == offer_id, Offer.wallet_id == key.wallet_id).values(
            state=state, sealed=key.seal("offer", offer_id, data), next_poll_at=next_poll_at)
            .execution_options(synchronize_session=False))


async def resolve_stranded_offer(session: AsyncSession, key: DataKey, row: Offer) -> bool:
    """Fail an offer that a stopped worker (a crash, a restart, a database gone at its last write) left
    ``accepting``: nobody is receiving it any more, and the citizen is told to check their credentials
    (what was stored before the stop is there) and to ask again otherwise. ``False`` when a worker
    finished it meanwhile. Called by the background sweep once no acceptance can still be running."""
    data = key.open("offer", row.id, row.sealed)
    data["error"] = {"error": "server_error", "error_description": (
        "the wallet stopped while receiving this credential: if it is not among your credentials, scan "
        "the offer again or ask the issuer for a new one")}
    result = await session.execute(update(Offer).where(Offer.id == row.id, Offer.state == "accepting")
                                   .values(state="failed", sealed=key.seal("offer", row.id, data), next_poll_at=None)
                                   .execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


async def accept_offer(ctx: WalletContext, me: Principal, offer_id: str, tx_code: str | None,
                       accept_language: str | None) -> dict[str, Any]:
    """Redeem the pre-authorized code (with the transaction code) and receive the credentials."""
    languages = accept_languages(accept_language)
    row, data = await load_offer(ctx, me, offer_id)
    if row.state != "offered":
        raise APIError(409, "conflict", f"the offer is {row.state}")
    if row.expires_at <= utcnow():
        raise APIError(410, "expired", "the offer expired; scan it again")
    offer = CredentialOffer.model_validate(data["offer"], context=STORED)
    pre = offer.grants.pre_authorized_code if offer.grants else None
    assert pre is not None  # receive_offer kept only pre-authorized offers
    if pre.tx_code is not None and not tx_code:
        raise APIError(400, "tx_code_required", "this offer needs the transaction code the issuer gave you")
    metadata = CredentialIssuerMetadata.model_validate(data["metadata"], context=STORED)
    as_meta = AuthorizationServerMetadata.model_validate(data["as_metadata"], context=STORED)
    form = {"grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": pre.pre_authorized_code}
    if pre.tx_code is not None and tx_code:
        form["tx_code"] = tx_code
    if not await _transition(ctx, offer_id, me.wallet_id, ("offered",), "accepting"):
        raise APIError(409, "conflict", "the offer is being accepted already")
    try:
        async with ctx.client() as client:
            session = IssuerSession(ctx, client, metadata, as_meta)
            token = await session.token(form)
            data["token"] = session.sealable()
            outcome = await session.receive_all(me.key, offer.credential_configuration_ids, token, languages, offer_id)
    except IssuanceError as exc:
        retry = exc.error in ("invalid_tx_code",)
        data["error"] = {"error": exc.error, "error_description": exc.detail}
        await _save_offer(ctx, me.key, offer_id, data, "offered" if retry else "failed")
        raise exc.api() from exc
    except (Exception, asyncio.CancelledError):
        # Anything else (a database error, a cancelled request, a bug) must not leave the offer
        # 'accepting' for good. Not retried: the pre-authorized code may be spent; the citizen scans
        # the offer again. Shielded so that a cancelled request still records it.
        data["error"] = {"error": "server_error", "error_description": (
            "the wallet failed while receiving this credential; scan the offer again, or ask the issuer "
            "for a new one")}
        await asyncio.shield(_save_offer(ctx, me.key, offer_id, data, "failed"))
        raise
    data.update(outcome.data)
    data.pop("error", None)
    await _save_offer(ctx, me.key, offer_id, data, outcome.state, outcome.next_poll_at)
    return offer_preview(offer_id, outcome.state, data, languages)


# -- why the issuer queried the registry -----------------------------------------------------------

#: The credential response member in which a Cartera issuer says why it queried the registry behind a
#: credential (an extension member, which OpenID4VCI 1.0 §8.3 lets a response carry; docs/issuer.md).
QUERY_EVIDENCE = "query_evidence"
#: ``legal_basis`` codes: the citizen consented, a law allows the query, the citizen did not object.
LEGAL_BASES = ("consent", "law", "no_objection")
#: Longest text kept per member (characters): generous for an SCSP ``Finalidad`` (250), far from
#: anything that would bloat a credential's sealed details or a history entry.
_EVIDENCE_TEXT = {"purpose": 500, "procedure": 200, "queried_at": 64, "request_id": 128}
_EVIDENCE_OBJECTS = {"official": {"name": 200}, "source": {"name": 100, "product": 200}}


class _Malformed(Exception):
    pass


def _evidence_text(value: Any, limit: int) -> str | None:
    """A member's text: ``None`` when absent or blank; :class:`_Malformed` when it is not a string, is
    too long or holds a control character or a lone surrogate (nothing the app could show as text)."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise _Malformed
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise _Malformed
    return value.strip() or None


def checked_evidence(value: Any) -> dict[str, Any] | None:
    """The :data:`QUERY_EVIDENCE` member as the wallet keeps it, or ``None`` when absent or malformed.

    Defensive, because it comes from the issuer and ends in the citizen's screens: only the known
    members are copied (an issuer's extra ones, a ``nif`` inside ``official`` for instance, are not
    kept), each a string of bounded length; ``purpose`` is required; a ``legal_basis`` code this wallet
    does not know is left out. A member of the wrong type or size drops the whole evidence: the
    credential is stored all the same, since the evidence only explains it."""
    if value is None:
        return None
    try:
        if not isinstance(value, dict):
            raise _Malformed
        out: dict[str, Any] = {}
        for name, limit in _EVIDENCE_TEXT.items():
            text = _evidence_text(value.get(name), limit)
            if text is not None:
                out[name] = text
        basis = _evidence_text(value.get("legal_basis"), 40)
        if basis in LEGAL_BASES:
            out["legal_basis"] = basis
        for name, members in _EVIDENCE_OBJECTS.items():
            inner = value.get(name)
            if inner is None:
                continue
            if not isinstance(inner, dict):
                raise _Malformed
            kept = {key: text for key, limit in members.items()
                    if (text := _evidence_text(inner.get(key), limit)) is not None}
            if kept:
                out[name] = kept
        if "purpose" not in out:
            raise _Malformed
    except _Malformed:
        return None
    return out


# -- the exchange with one issuer ----------------------------------------------------------------

@dataclass
class Outcome:
    state: str  # issued | pending
    data: dict[str, Any]
    next_poll_at: dt.datetime | None = None


def _ath(access_token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(access_token.encode()).digest()).rstrip(b"=").decode()


class IssuerSession:
    """One conversation with a credential issuer (token, nonces, credential requests, DPoP)."""

    def __init__(self, ctx: WalletContext, client: httpx.AsyncClient, metadata: CredentialIssuerMetadata,
                 as_meta: AuthorizationServerMetadata, saved: dict[str, Any] | None = None) -> None:
        self.ctx = ctx
        self.client = client
        self.metadata = metadata
        self.as_meta = as_meta
        saved = saved or {}
        self.access_token: str | None = saved.get("access_token")
        self.token_type: str = saved.get("token_type", "Bearer")
        self.authorization_details: list[dict[str, Any]] = saved.get("authorization_details") or []
        self.dpop_key = Key.from_jwk(saved["dpop_jwk"]) if saved.get("dpop_jwk") else None
        self.dpop_nonce: str | None = None
        if self.dpop_key is None and as_meta.dpop_signing_alg_values_supported:
            self.dpop_key = Key.generate("ES256")

    def sealable(self) -> dict[str, Any]:
        """What to keep (sealed) to continue later: deferred polls, notifications."""
        return {"access_token": self.access_token, "token_type": self.token_type,
                "authorization_details": self.authorization_details,
                "dpop_jwk": self.dpop_key.private_jwk() if self.dpop_key else None}

    def _dpop(self, method: str, url: str, access_token: str | None = None) -> dict[str, str]:
        if self.dpop_key is None:
            return {}
        payload: dict[str, Any] = {"jti": secrets.token_urlsafe(16), "htm": method, "htu": url.split("?")[0],
                                   "iat": int(time.time())}
        if access_token is not None:
            payload["ath"] = _ath(access_token)
        if self.dpop_nonce:
            payload["nonce"] = self.dpop_nonce
        header = {"typ": "dpop+jwt", "jwk": self.dpop_key.public_jwk(include_kid=False)}
        return {"DPoP": sign_jws(header, payload, self.dpop_key)}

    def _auth_headers(self, method: str, url: str) -> dict[str, str]:
        assert self.access_token is not None
        scheme = "DPoP" if self.token_type.lower() == "dpop" else "Bearer"
        headers = {"Authorization": f"{scheme} {self.access_token}"}
        if scheme == "DPoP":
            headers.update(self._dpop(method, url, self.access_token))
        return headers

    async def _send(self, method: str, url: str, *, auth: bool, **kwargs: Any) -> httpx.Response:
        for _attempt in range(2):
            headers = dict(kwargs.pop("headers", {}) or {})
            headers.update(self._auth_headers(method, url) if auth else self._dpop(method, url))
            try:
                response = await self.ctx.request(self.client, method, url, headers=headers, **kwargs)
            except FetchError as exc:
                raise IssuanceError("issuer_unavailable", exc.detail) from exc
            nonce = response.headers.get("DPoP-Nonce")
            if nonce and self.dpop_key is not None and response.status_code in (400, 401) and nonce != self.dpop_nonce:
                self.dpop_nonce = nonce  # RFC 9449 §8: retry once with the server's nonce
                kwargs["headers"] = {k: v for k, v in headers.items() if k not in ("DPoP", "Authorization")}
                continue
            if nonce:
                self.dpop_nonce = nonce
            return response
        return response

    async def token(self, form: dict[str, str]) -> TokenResponse:
        response = await self._send("POST", self.as_meta.token_endpoint, auth=False, data=form,
                                    headers={"Accept": "application/json"})
        body = _json(response)
        if response.status_code != 200:
            error = body.get("error") if isinstance(body, dict) else None
            if error == "invalid_grant" and "tx_code" in form:
                raise IssuanceError("invalid_tx_code", "the issuer refused the code: a wrong transaction code, "
                                    "or the offer was already used or expired", 400)
            raise IssuanceError(error if isinstance(error, str) and error.isidentifier() else "token_refused",
                                "the issuer refused the token request", 400 if response.status_code < 500 else 502)
        try:
            token = TokenResponse.parse(body)
        except SSIError as exc:
            raise IssuanceError("invalid_issuer_response", f"the token response is not valid ({exc.code})") from exc
        self.access_token = token.access_token
        self.token_type = token.token_type
        self.authorization_details = [d.to_json() for d in token.authorization_details or []]
        return token

    async def nonce(self) -> str | None:
        if not self.metadata.nonce_endpoint:
            return None
        # A nonce request changes nothing but the issuer's nonce table: resending it is always safe.
        response = await self._post_retrying(self.metadata.nonce_endpoint, auth=False)
        try:
            return NonceResponse.parse(_json(response)).c_nonce
        except SSIError as exc:
            raise IssuanceError("invalid_issuer_response", f"the nonce response is not valid ({exc.code})") from exc

    def batch_size(self) -> int:
        batch = self.metadata.batch_credential_issuance
        return min(batch.batch_size, MAX_BATCH) if batch else 1

    def _identifier_for(self, configuration_id: str) -> dict[str, str]:
        for detail in self.authorization_details:
            if detail.get("credential_configuration_id") == configuration_id and detail.get("credential_identifiers"):
                return {"credential_identifier": detail["credential_identifiers"][0]}
        return {"credential_configuration_id": configuration_id}

    async def _post_credential_request(self, body: dict[str, Any]) -> httpx.Response:
        """POST one credential request; resend the very same body while the issuer is unreachable or
        answers 503 with a short ``Retry-After``, for up to :data:`CREDENTIAL_RETRY_SECONDS`.

        Safe because the issuer answers an identical request (same token, same proofs) with the response
        it stored for it, never a second credential; a new proof instead would be refused once the first
        was spent. So a connection lost mid-request (an issuer restarted, a proxy timeout) does not lose
        a credential the issuer did issue.
        """
        return await self._post_retrying(self.metadata.credential_endpoint, auth=True, json=body)

    async def _post_retrying(self, url: str, *, auth: bool, **kwargs: Any) -> httpx.Response:
        """POST ``url``, resending it after a lost connection or a 503 with a short ``Retry-After``."""
        deadline = time.monotonic() + CREDENTIAL_RETRY_SECONDS
        delay = 0.25
        while True:
            try:
                response = await self._send("POST", url, auth=auth, **kwargs)
            except IssuanceError as exc:
                if exc.error != "issuer_unavailable" or time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            wait = _retry_after(response) if response.status_code == 503 else None
            if wait is None or wait > MAX_RETRY_AFTER or time.monotonic() + wait > deadline:
                return response
            await asyncio.sleep(max(wait, 0.2))

    async def request_credential(self, configuration_id: str) -> tuple[CredentialResponse, list[Key]]:
        """Send a credential request with fresh holder keys (one per copy); retry once on ``invalid_nonce``."""
        for _attempt in range(2):
            nonce = await self.nonce()
            keys = [Key.generate("ES256") for _ in range(self.batch_size())]
            proofs = [build_proof_jwt(k, audience=self.metadata.credential_issuer, nonce=nonce) for k in keys]
            body = {**self._identifier_for(configuration_id), "proofs": {"jwt": proofs}}
            response = await self._post_credential_request(body)
            payload = _json(response)
            if response.status_code in (200, 202):
                try:
                    return CredentialResponse.parse(payload), keys
                except SSIError as exc:
                    raise IssuanceError("invalid_issuer_response",
                                        f"the credential response is not valid ({exc.code})") from exc
            error = payload.get("error") if isinstance(payload, dict) else None
            if error == "invalid_nonce":
                continue
            raise _refusal(response.status_code, error)
        raise IssuanceError("invalid_nonce", "the issuer kept refusing the wallet's nonce")

    async def deferred(self, transaction_id: str) -> CredentialResponse | None:
        """Poll the deferred endpoint: the credentials, or None while still pending."""
        endpoint = self.metadata.deferred_credential_endpoint
        if not endpoint:
            raise IssuanceError("invalid_issuer_metadata", "the issuer has no deferred credential endpoint")
        response = await self._send("POST", endpoint, auth=True, json={"transaction_id": transaction_id})
        payload = _json(response)
        error = payload.get("error") if isinstance(payload, dict) else None
        if response.status_code == 202 or error == "issuance_pending":
            return None
        if response.status_code != 200:
            raise _refusal(response.status_code, error)
        try:
            parsed = CredentialResponse.parse(payload)
        except SSIError as exc:
            raise IssuanceError("invalid_issuer_response", f"the deferred response is not valid ({exc.code})") from exc
        if parsed.credentials is None:
            # A 200 delivers the credentials (OpenID4VCI 1.0 §9.2); one still pending is a 202. A
            # transaction id here is neither: the issuance ends rather than being polled for ever.
            raise IssuanceError("invalid_issuer_response", "the deferred response (200) carries no credentials")
        return parsed

    async def notify(self, notification_id: str | None, event: str) -> bool:
        """Tell the issuer what became of a credential; return whether it took the news (best effort:
        a failure is not the citizen's problem, so it is reported, never raised)."""
        endpoint = self.metadata.notification_endpoint
        if not endpoint or not notification_id or not self.access_token:
            return False
        try:
            response = await self._send("POST", endpoint, auth=True,
                                        json={"notification_id": notification_id, "event": event})
        except IssuanceError:
            return False
        return response.status_code in (200, 204)

    async def receive_all(self, key: DataKey, configuration_ids: list[str], token: TokenResponse,
                          languages: list[str], offer_id: str) -> Outcome:
        """Request every configuration; store what verifies; keep what is deferred."""
        issued: list[str] = []
        pending: list[dict[str, Any]] = []
        interval = 5
        for configuration_id in configuration_ids:
            response, keys = await self.request_credential(configuration_id)
            if response.transaction_id is not None:
                interval = min(interval, response.interval or 5) if pending else (response.interval or 5)
                pending.append({"configuration_id": configuration_id, "transaction_id": response.transaction_id,
                                "holder_jwks": [k.private_jwk() for k in keys]})
                continue
            issued.append(await self.store(key, configuration_id, response, keys, languages))
        data: dict[str, Any] = {"credential_ids": issued, "token": self.sealable(), "pending": pending}
        if pending:
            async with self.ctx.db.session() as session:
                await add_alert(session, key.wallet_id, "issuance_pending",
                                "The issuer is preparing your credential; it will arrive here when ready",
                                webhook=self.ctx.webhook)
            return Outcome("pending", data, utcnow() + dt.timedelta(seconds=interval))
        return Outcome("issued", data)

    async def store(self, key: DataKey, configuration_id: str, response: CredentialResponse, keys: list[Key],
                    languages: list[str], *, credential_id: str | None = None) -> str:
        """Verify each copy against its holder key, then store them as one credential.

        ``credential_id`` (a deferred delivery's, derived from its transaction): when a credential of
        that id is in the wallet already, an earlier poll stored this very delivery and stopped before
        it saved the offer; the issuer sent it again, and it is not stored twice."""
        config = self.metadata.credential_configurations_supported[configuration_id]
        if response.credentials is None:
            raise IssuanceError("invalid_issuer_response", "the credential response carries no credentials")
        if len(response.credentials) > len(keys):
            await self.notify(response.notification_id, "credential_failure")
            raise IssuanceError("invalid_credential", "the issuer sent more credentials than keys were proven")
        copies: list[tuple[str, dict[str, Any]]] = []
        verified_first: sd_jwt_vc.VerifiedCredential | None = None
        statuses: list[dict[str, Any]] = []
        for issued, holder_key in zip(response.credentials, keys, strict=False):
            token = issued.credential
            try:
                if not isinstance(token, str):
                    raise IssuanceError("invalid_credential", "the credential is not an SD-JWT string")
                verified = await verify_received(self.ctx, token, credential_issuer=self.metadata.credential_issuer,
                                                 expected_vct=config.vct or "", holder_key=holder_key)
            except IssuanceError:
                await self.notify(response.notification_id, "credential_failure")
                raise
            verified_first = verified_first or verified
            copies.append((token, holder_key.private_jwk()))
            if verified.status is not None:
                statuses.append({"uri": verified.status.uri, "idx": verified.status.idx})
        assert verified_first is not None
        described = describe_configuration(self.metadata, configuration_id, languages)
        type_metadata = await fetch_type_metadata(self.ctx, self.client, verified_first,
                                                  credential_issuer=self.metadata.credential_issuer,
                                                  configuration_id=configuration_id)
        claim_names = sorted(k for k in verified_first.claims if k not in _TECHNICAL_CLAIMS)
        sent = (response.model_extra or {}).get(QUERY_EVIDENCE)
        evidence = checked_evidence(sent)
        if sent is not None and evidence is None:
            # Never the member itself: whatever it holds is the issuer's, and may be anything.
            log.warning("an issuer's query evidence is malformed; the credential is stored without it",
                        extra={"issuer": self.metadata.credential_issuer})
        details = {"configuration_id": configuration_id, "display": described,
                   "issuer_display": describe_issuer(self.metadata, languages),
                   "type_metadata": type_metadata, "statuses": statuses,
                   "notification": {"notification_id": response.notification_id, "token": self.sealable(),
                                    "metadata": self.metadata.to_json(), "as_metadata": self.as_meta.to_json()},
                   "key_source": verified_first.key_source}
        receipt = {"issuer": verified_first.issuer,
                   "issuer_name": details["issuer_display"]["name"], "vct": verified_first.vct,
                   "credential_name": described["name"], "copies": len(copies), "claims": claim_names,
                   "outcome": "stored"}
        if evidence is not None:
            details[QUERY_EVIDENCE] = evidence
            receipt[QUERY_EVIDENCE] = evidence
        if credential_id is not None and await _stored_already(self.ctx, key, credential_id):
            return credential_id
        async with self.ctx.db.session() as session:
            credential_id = await add_credential(session, key, vct=verified_first.vct,
                                                 issuer=verified_first.issuer, details=details, copies=copies,
                                                 iat=verified_first.iat, exp=verified_first.exp,
                                                 credential_id=credential_id)
            await add_history(session, key, "receipt", {"credential_id": credential_id, **receipt})
            await add_alert(session, key.wallet_id, "credential_received",
                            f"{described['name']} was added to your wallet", credential_id, webhook=self.ctx.webhook)
        await self.notify(response.notification_id, "credential_accepted")
        return credential_id


async def _stored_already(ctx: WalletContext, key: DataKey, credential_id: str) -> bool:
    async with ctx.db.read_session() as session:
        found = await session.scalar(select(Credential.id).where(Credential.id == credential_id,
                                                                 Credential.wallet_id == key.wallet_id))
    return found is not None


def deferred_credential_id(wallet_id: str, offer_id: str, transaction_id: str) -> str:
    """The id a deferred delivery is stored under: the same for every poll of one transaction, so a
    delivery the issuer sends again is recognised (a wallet-local name; the transaction id stays secret)."""
    digest = hashlib.sha256(f"{wallet_id}\x00{offer_id}\x00{transaction_id}".encode()).digest()
    return "cred_" + base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


_TECHNICAL_CLAIMS = frozenset({"iss", "iat", "nbf", "exp", "cnf", "vct", "vct#integrity", "status", "sub"})


def _json(response: httpx.Response) -> Any:
    from ssi.encoding import json_loads
    from ssi.errors import EncodingError

    try:
        return json_loads(response.content) if response.content else None
    except EncodingError:
        return None


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds, or ``None`` (the caller does not wait longer than MAX_RETRY_AFTER)."""
    return retry_after_seconds(response.headers)


def _refusal(status: int, error: Any) -> IssuanceError:
    code = error if isinstance(error, str) and error.replace("_", "").isalnum() else "credential_refused"
    return IssuanceError(code, f"the issuer refused the credential request ({code})", 400 if status < 500 else 502)


async def verify_received(ctx: WalletContext, token: str, *, credential_issuer: str, expected_vct: str,
                          holder_key: Key, now: float | None = None) -> sd_jwt_vc.VerifiedCredential:
    """Verify a credential before storing it; raise :class:`IssuanceError` saying why not.

    ``now``: the moment the credential and its issuer's chain are checked at (the current time unless
    given; a backup import checks an expired credential at its issuance, :mod:`wallet_api.backup`)."""
    resolver = issuer_key_resolver(ctx, credential_issuer)

    def run() -> sd_jwt_vc.VerifiedCredential:
        return sd_jwt_vc.verify_sd_jwt_vc(token, key_resolver=resolver, expected_vcts=[expected_vct],
                                          allow_http_loopback=ctx.dev, now=now)

    try:
        verified = await asyncio.to_thread(run)
    except SSIError as exc:
        raise IssuanceError("invalid_credential", f"the credential did not verify ({exc.code})", 502,
                            reason=exc.code) from exc
    if verified.issuer != credential_issuer:
        # A credential another issuer signed (its x5c chaining to a trusted anchor all the same), handed
        # on by this one: the wallet would show and record it as this issuer's.
        raise IssuanceError("invalid_credential", "the credential's iss is not the credential issuer the wallet asked",
                            502, reason="iss_not_credential_issuer")
    if verified.holder_key is None or verified.holder_key.thumbprint() != holder_key.public().thumbprint():
        raise IssuanceError("invalid_credential", "the credential is not bound to the key the wallet proved", 502,
                            reason="holder_key_mismatch")
    return verified


async def fetch_type_metadata(ctx: WalletContext, client: httpx.AsyncClient,
                              verified: sd_jwt_vc.VerifiedCredential, *, credential_issuer: str | None = None,
                              configuration_id: str | None = None) -> dict[str, Any] | None:
    """The SD-JWT VC Type Metadata at the ``vct`` URL, checked against ``vct#integrity`` when given.

    A ``vct`` is a type's name, and many name no server (a shared type used by several issuers): the
    issuer then serves the document itself, at ``<credential issuer>/types/<configuration id>`` as
    Cartera issuers do. That copy is taken only when ``vct#integrity`` (which the issuer signed into
    the credential) matches it, so it is exactly the document the issuer meant.

    Display only: a type whose metadata cannot be fetched is still stored (the issuer metadata has
    display data too), but metadata failing its integrity check is dropped.
    """
    vct = verified.vct
    found = await _type_metadata_at(ctx, client, vct, verified)
    if found is None and verified.vct_integrity and credential_issuer and configuration_id:
        found = await _type_metadata_at(
            ctx, client, f"{credential_issuer.rstrip('/')}/types/{quote(configuration_id, safe='')}", verified)
    return found


#: Top-level domains that never resolve (RFC 2606): a vct under them names a type, not a server.
_NEVER_RESOLVED = frozenset({"example", "invalid"})


async def _type_metadata_at(ctx: WalletContext, client: httpx.AsyncClient, url: str,
                            verified: sd_jwt_vc.VerifiedCredential) -> dict[str, Any] | None:
    parts = urlsplit(url)
    if parts.scheme != "https" and not (ctx.dev and parts.scheme == "http"):
        return None
    host = (parts.hostname or "").rstrip(".")
    if host.rpartition(".")[2] in _NEVER_RESOLVED:
        return None  # a name only (RFC 2606): no lookup leaves the machine for it
    try:
        response = await ctx.request(client, "GET", url, headers={"Accept": "application/json"})
    except FetchError:
        return None
    if response.status_code != 200:
        return None
    if verified.vct_integrity:
        algorithm, _, expected = verified.vct_integrity.partition("-")
        if algorithm not in ("sha256", "sha384", "sha512"):
            return None
        digest = base64.b64encode(hashlib.new(algorithm, response.content).digest()).decode()
        if not secrets.compare_digest(digest.rstrip("="), expected.rstrip("=")):
            return None
    return checked_type_metadata(_json(response), verified.vct)


# -- deferred ------------------------------------------------------------------------------------

async def _lease_poll(ctx: WalletContext, offer_id: str, wallet_id: str) -> bool:
    """Take a pending offer, or one whose earlier poll's lease has run out, for one poll."""
    now = utcnow()
    async with ctx.db.session() as session:
        result = await session.execute(update(Offer).where(
            Offer.id == offer_id, Offer.wallet_id == wallet_id,
            or_(Offer.state == "pending", and_(Offer.state == "polling", Offer.next_poll_at <= now)))
            .values(state="polling", next_poll_at=now + POLL_LEASE).execution_options(synchronize_session=False))
        return result.rowcount == 1


async def poll_offer(ctx: WalletContext, key: DataKey, offer_id: str, languages: list[str] | None = None
                     ) -> str:
    """Poll the deferred endpoint for a pending offer; return its new state."""
    async with ctx.db.read_session() as session:
        row = (await session.execute(select(Offer).where(Offer.id == offer_id, Offer.wallet_id == key.wallet_id))
               ).scalar_one_or_none()
    if row is None:
        raise APIError(404, "not_found", "no such offer")
    if row.state not in ("pending", "polling"):
        return row.state
    if not await _lease_poll(ctx, offer_id, key.wallet_id):
        return "polling"
    data = key.open("offer", row.id, row.sealed)
    metadata = CredentialIssuerMetadata.model_validate(data["metadata"], context=STORED)
    as_meta = AuthorizationServerMetadata.model_validate(data["as_metadata"], context=STORED)
    still: list[dict[str, Any]] = []
    try:
        async with ctx.client() as client:
            session_ = IssuerSession(ctx, client, metadata, as_meta, data.get("token"))
            for item in data.get("pending", []):
                response = await session_.deferred(item["transaction_id"])
                if response is None:
                    still.append(item)
                    continue
                keys = [Key.from_jwk(j) for j in item["holder_jwks"]]
                credential_id = await session_.store(
                    key, item["configuration_id"], response, keys, languages or [],
                    credential_id=deferred_credential_id(key.wallet_id, offer_id, item["transaction_id"]))
                data.setdefault("credential_ids", []).append(credential_id)
    except IssuanceError as exc:
        data["error"] = {"error": exc.error, "error_description": exc.detail}
        await _save_offer(ctx, key, offer_id, data, "failed")
        return "failed"
    data["pending"] = still
    state = "pending" if still else "issued"
    await _save_offer(ctx, key, offer_id, data, state,
                      utcnow() + dt.timedelta(seconds=5) if still else None)
    return state


# -- wallet-initiated issuance (authorization code flow) ------------------------------------------

async def catalogue(ctx: WalletContext, accept_language: str | None) -> list[dict[str, Any]]:
    """The configured issuers and what each offers, in the citizen's language."""
    languages = accept_languages(accept_language)
    out = []
    async with ctx.client() as client:
        for entry in ctx.settings.issuer_catalogue:
            try:
                metadata, _ = await fetch_issuer_metadata(ctx, client, entry.credential_issuer)
            except IssuanceError:
                out.append({"issuer": {"id": entry.credential_issuer, "name": entry.name or entry.credential_issuer,
                                       "logo": None}, "available": False, "credentials": []})
                continue
            ids = entry.credential_configuration_ids or list(metadata.credential_configurations_supported)
            out.append({"issuer": describe_issuer(metadata, languages, entry.name), "available": True,
                        "credentials": [describe_configuration(metadata, cid, languages) for cid in ids
                                        if cid in metadata.credential_configurations_supported]})
    return out


def issuance_callback_url(ctx: WalletContext) -> str:
    return f"{ctx.settings.public_url}/v1/issuance/callback"


async def start_authorization(ctx: WalletContext, me: Principal, *, credential_issuer: str,
                              configuration_id: str, redirect_uri: str, issuer_state: str | None = None,
                              login_hint: str | None = None) -> dict[str, Any]:
    """Begin wallet-initiated issuance: answer the issuer's authorization URL for the app to open.

    ``login_hint`` (OpenID Connect's hint of who is about to log in) is passed to the issuer, which may
    forward it to its identity provider; development providers use it for a non-interactive login."""
    from .auth import check_app_redirect, pkce_pair

    check_app_redirect(ctx, redirect_uri)
    if credential_issuer not in {e.credential_issuer for e in ctx.settings.issuer_catalogue} and issuer_state is None:
        raise APIError(400, "invalid_request", "that issuer is not in the wallet's catalogue")
    async with ctx.client() as client:
        try:
            metadata, as_meta = await fetch_issuer_metadata(ctx, client, credential_issuer)
        except IssuanceError as exc:
            raise exc.api() from exc
        config = metadata.credential_configurations_supported.get(configuration_id)
        if config is None or config.format != "dc+sd-jwt":
            raise APIError(400, "invalid_request", "the issuer offers no such dc+sd-jwt credential")
        _check_identifiers(metadata, configuration_id, "invalid_request")
        if not as_meta.authorization_endpoint:
            raise APIError(400, "unsupported_grant", "the issuer has no authorization endpoint")
        state = secrets.token_urlsafe(32)
        verifier, challenge = pkce_pair()
        params: dict[str, str] = {
            "response_type": "code", "client_id": ctx.settings.issuance_client_id,
            "redirect_uri": issuance_callback_url(ctx), "state": state, "code_challenge": challenge,
            "code_challenge_method": "S256",
            "authorization_details": _dumps([{"type": "openid_credential",
                                              "credential_configuration_id": configuration_id}]),
        }
        if config.scope:
            params["scope"] = config.scope
        if issuer_state:
            params["issuer_state"] = issuer_state
        if login_hint:
            params["login_hint"] = login_hint
        if as_meta.pushed_authorization_request_endpoint:
            try:
                par = await ctx.request_json(client, "POST", as_meta.pushed_authorization_request_endpoint,
                                             data=params, ok=(200, 201))
            except FetchError as exc:
                raise APIError(502, "issuer_unavailable", f"the issuer refused the authorization request: {exc.detail}") from exc
            if not isinstance(par, dict) or not isinstance(par.get("request_uri"), str):
                raise APIError(502, "invalid_issuer_response", "the issuer's PAR answer has no request_uri")
            query = {"client_id": ctx.settings.issuance_client_id, "request_uri": par["request_uri"]}
        else:
            query = params
    endpoint = as_meta.authorization_endpoint
    url = endpoint + ("&" if urlsplit(endpoint).query else "?") + urlencode(query)
    offer_id = new_id("offer")
    data = {"offer": {"credential_issuer": credential_issuer, "credential_configuration_ids": [configuration_id]},
            "metadata": metadata.to_json(), "as_metadata": as_meta.to_json(), "verifier": verifier,
            "app_redirect_uri": redirect_uri}
    async with ctx.db.session() as session:
        session.add(Offer(id=offer_id, wallet_id=me.wallet_id, issuer=credential_issuer, kind="authorization",
                          state="authorizing", state_hash=await state_digest(ctx, state),
                          sealed=me.key.seal("offer", offer_id, data),
                          expires_at=utcnow() + dt.timedelta(seconds=ctx.settings.login_ttl)))
    return {"offer_id": offer_id, "authorization_url": url}


def _dumps(value: Any) -> str:
    from ssi.encoding import json_dumps

    return json_dumps(value)


#: How long the app has to complete an issuance once the issuer sent the browser back (it does so at
#: once; the issuer's authorization code itself lives about a minute).
COMPLETION_TTL = dt.timedelta(seconds=120)


#: The :func:`wallet_api.vault.token_mac` kinds of what ``offers.state_hash`` holds.
STATE_KIND, COMPLETION_KIND = "issuance-state", "issuance-completion"


async def state_digest(ctx: WalletContext, state: str) -> str:
    """What the offer row keeps of the OAuth ``state`` of a wallet-initiated issuance (in
    ``state_hash``): its HMAC under the token key, like the login's secrets, so whoever writes the
    database without the master key cannot plant the digest of a ``state`` of their own."""
    return token_mac(await ctx.vault.token_key(ctx.db), STATE_KIND, state)


async def completion_hash(ctx: WalletContext, completion: str) -> str:
    """What the offer row keeps of the completion code (in ``state_hash``): an HMAC under the token key
    too, domain-separated from the ``state``'s, which that column holds until the callback: the
    ``state`` travels in the authorization URL (whoever started the issuance knows it), the completion
    code never does."""
    return token_mac(await ctx.vault.token_key(ctx.db), COMPLETION_KIND, completion)


def _app_redirect(data: dict[str, Any], params: dict[str, str]) -> str:
    redirect: str = data["app_redirect_uri"]
    return redirect + ("&" if urlsplit(redirect).query else "?") + urlencode(params)


async def finish_authorization(ctx: WalletContext, *, state: str | None, code: str | None,
                               error: str | None) -> str:
    """The issuer sent the browser back: keep its code (sealed) and send the browser to the app.

    Nothing is redeemed here: this request is not authenticated, and the browser that brings it may be
    anyone's (an issuance started in one wallet, its authorization URL followed by another citizen who
    logs in at the issuer). The app completes the issuance (:func:`complete_authorization`) as the
    wallet's owner, with the one-time completion code that only this redirect carries."""
    from .models import Wallet

    if not state:
        raise APIError(400, "invalid_request", "state is missing")
    digest = await state_digest(ctx, state)
    async with ctx.db.read_session() as session:
        row = (await session.execute(select(Offer).where(Offer.state_hash == digest,
                                                         Offer.state == "authorizing"))).scalar_one_or_none()
        wallet = None if row is None else await session.get(Wallet, row.wallet_id)
    now = utcnow()
    if row is None or wallet is None or row.expires_at <= now:
        raise APIError(400, "invalid_request", "unknown or expired issuance (start again)")
    key = ctx.vault.data_key(wallet)
    data = key.open("offer", row.id, row.sealed)
    if "code" in data:  # the issuer came back already (the row now holds a completion hash)
        raise APIError(400, "invalid_request", "unknown or expired issuance (start again)")
    if error or not code:
        data["error"] = {"error": "access_denied", "error_description": "the issuer's login was cancelled or refused"}
        values: dict[str, Any] = {"state": "failed", "state_hash": None, "sealed": key.seal("offer", row.id, data)}
        params = {"offer_id": row.id, "error": "access_denied"}
    else:
        completion = secrets.token_urlsafe(32)
        data["code"] = code
        values = {"state_hash": await completion_hash(ctx, completion), "sealed": key.seal("offer", row.id, data),
                  "expires_at": now + COMPLETION_TTL}
        params = {"offer_id": row.id, "completion": completion}
    # Conditional, so that of two callbacks that both read the offer (a reload) only one goes on.
    async with ctx.db.session() as session:
        claimed = await session.execute(
            update(Offer).where(Offer.id == row.id, Offer.state == "authorizing",
                                Offer.state_hash == digest)
            .values(**values).execution_options(synchronize_session=False))
        if claimed.rowcount != 1:
            raise APIError(400, "invalid_request", "unknown or expired issuance (start again)")
    return _app_redirect(data, params)


_NOT_COMPLETABLE = "no issuance of this wallet awaits that completion code (ask the issuer again)"


async def complete_authorization(ctx: WalletContext, me: Principal, offer_id: str, completion: str,
                                 accept_language: str | None) -> dict[str, Any]:
    """The app, as the wallet's owner, completes a wallet-initiated issuance the issuer sent back:
    redeem the code (PKCE) and receive the credential into this wallet.

    Refused unless the issuance is this wallet's (404, as for an offer that does not exist) and the
    completion code is the one the callback gave the browser (single use, ``COMPLETION_TTL``). A wrong
    code ends the issuance: the issuer's code is dropped unredeemed."""
    languages = accept_languages(accept_language)
    row, data = await load_offer(ctx, me, offer_id)
    if row.kind != "authorization":
        raise APIError(400, "invalid_request", "this offer is not a wallet-initiated issuance")
    if row.state != "authorizing" or "code" not in data or row.expires_at <= utcnow():
        raise APIError(400, "invalid_grant", _NOT_COMPLETABLE)
    digest = await completion_hash(ctx, completion)
    async with ctx.db.session() as session:
        claimed = await session.execute(
            update(Offer).where(Offer.id == row.id, Offer.wallet_id == me.wallet_id, Offer.state == "authorizing",
                                Offer.state_hash == digest, Offer.expires_at > utcnow())
            .values(state="accepting", state_hash=None).execution_options(synchronize_session=False))
        if claimed.rowcount != 1:
            # Not the code the browser was given: whoever asks is not the one the issuer sent back.
            ended = dict(data)
            ended.pop("code", None)
            ended.pop("verifier", None)
            ended["error"] = {"error": "invalid_grant", "error_description": "the issuance was completed with a "
                              "wrong completion code; ask the issuer again"}
            await session.execute(
                update(Offer).where(Offer.id == row.id, Offer.wallet_id == me.wallet_id,
                                    Offer.state == "authorizing", Offer.state_hash == row.state_hash)
                .values(state="failed", state_hash=None, sealed=me.key.seal("offer", row.id, ended))
                .execution_options(synchronize_session=False))
            claimed_failed = True
        else:
            claimed_failed = False
    if claimed_failed:
        raise APIError(400, "invalid_grant", _NOT_COMPLETABLE)
    code = data.pop("code")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": issuance_callback_url(ctx),
            "code_verifier": data.pop("verifier"), "client_id": ctx.settings.issuance_client_id}
    try:
        metadata = CredentialIssuerMetadata.model_validate(data["metadata"], context=STORED)
        as_meta = AuthorizationServerMetadata.model_validate(data["as_metadata"], context=STORED)
        async with ctx.client() as client:
            session_ = IssuerSession(ctx, client, metadata, as_meta)
            token = await session_.token(form)
            data["token"] = session_.sealable()
            outcome = await session_.receive_all(me.key, data["offer"]["credential_configuration_ids"],
                                                 token, languages, row.id)
    except IssuanceError as exc:
        data["error"] = {"error": exc.error, "error_description": exc.detail}
        await _save_offer(ctx, me.key, row.id, data, "failed")
        raise exc.api() from exc
    except (Exception, asyncio.CancelledError):
        # As in accept_offer: never leave the offer 'accepting'; the code is spent (or may be), so the
        # citizen asks the issuer again.
        data["error"] = {"error": "server_error", "error_description": (
            "the wallet failed while receiving this credential; request it from the issuer again")}
        await asyncio.shield(_save_offer(ctx, me.key, row.id, data, "failed"))
        raise
    data.update(outcome.data)
    data.pop("error", None)
    await _save_offer(ctx, me.key, row.id, data, outcome.state, outcome.next_poll_at)
    return offer_preview(row.id, outcome.state, data, languages)
