"""Checking a ``vp_token`` against one transaction: every presentation, every rule, one code per failure.

For each presentation (``<sd-jwt>~<disclosures>~<kb-jwt>``) under each Credential Query id:

1. SD-JWT VC verification by :func:`ssi.sd_jwt_vc.verify_sd_jwt_vc`: structure, algorithm allow-list,
   ``vct`` among the query's ``vct_values``, issuer key (``x5c`` chained to the trust anchors, or JWT
   VC Issuer Metadata for issuers a template names with ``metadata: true``), issuer trusted for this
   ``vct`` by the template (a rule listing no issuers trusts none outside development mode:
   ``verifier.trust_rule_without_issuers``), signature, disclosures, ``nbf``/``exp``, KB-JWT (``typ``, signature with
   ``cnf``, ``aud`` = full client id, ``nonce`` of the transaction, ``iat`` fresh, ``sd_hash``).
2. Token Status List: fetched over HTTP, signature checked with the same issuer key resolution,
   cached for its ``ttl``; 1 → ``verifier.revoked``, 2 → ``verifier.suspended``.
   A query's ``trusted_authorities`` (type ``aki``) must name an Authority Key Identifier of the
   verified ``x5c`` chain (:func:`ssi.dcql.authority_matches`), else ``dcql.untrusted_authority``.
3. The disclosed claims against the DCQL query (:func:`ssi.dcql.check_presented`), ``values`` and
   ``credential_sets`` included.

Only SD-JWT VCs are verified: a transaction whose query has a Credential Query of another ``format``
(stored before such queries were refused) fails every answer with ``dcql.format_mismatch``.

Error codes are the stable ``ssi`` codes (``sd_jwt.kb_wrong_nonce``, ``jose.alg_not_allowed``...) and
``verifier.*`` for the checks made here. The reported claims are only those the query asked for.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import httpx
from cryptography import x509 as cx509

from service_kit.outbound import CALL_DEADLINE_FACTOR, IDENTITY, ResponseBodyRefused, read_capped
from ssi import x509 as ssi_x509
from ssi.dcql import (
    SD_JWT_VC_FORMAT,
    SUPPORTED_FORMATS,
    ClaimPath,
    CredentialQuery,
    DCQLQuery,
    authority_matches,
    check_presented,
    parse_dcql_query,
    resolve_path,
)
from ssi.encoding import b64url_decode, json_loads
from ssi.errors import EncodingError, SDJWTVCError, SSIError, StatusListError
from ssi.jose import DEFAULT_ALGORITHMS, Key, parse_jws
from ssi.sd_jwt_vc import (
    DEFAULT_X5C_CACHE,
    IssuerMetadataKeyResolver,
    ResolvedIssuerKey,
    VerifiedCredential,
    jwt_vc_issuer_metadata_url,
    verify_sd_jwt_vc,
)
from ssi.status_list import StatusListToken, verify_status_list_token

#: Claims of the issuer-signed JWT that describe the credential rather than the holder.
TECHNICAL_CLAIMS = frozenset({"iss", "vct", "vct#integrity", "iat", "nbf", "exp", "cnf", "status", "_sd_alg"})


@dataclass(frozen=True, slots=True)
class CheckError:
    """One failed check: a stable ``code``, the Credential Query id it concerns, a sentence."""

    code: str
    query_id: str | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "query_id": self.query_id, "detail": self.detail}


@dataclass(slots=True)
class Outcome:
    """The result of checking one ``vp_token``."""

    errors: list[CheckError] = field(default_factory=list)
    #: Per query id: ``[{"issuer", "vct", "claims", "valid_from", "valid_until", "key_source"}]``.
    credentials: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return not self.errors and bool(self.credentials)


# -- trust ---------------------------------------------------------------------------------------

@lru_cache(maxsize=256)
def _load_anchors(pems: tuple[str, ...]) -> tuple[cx509.Certificate, ...]:
    certs: list[cx509.Certificate] = []
    for pem in pems:
        certs.extend(ssi_x509.load_pem_certificates(pem.encode("utf-8")))
    return tuple(certs)


def load_anchor_pems(pems: Sequence[str]) -> tuple[cx509.Certificate, ...]:
    """Parse PEM trust anchors (cached: templates repeat the same few)."""
    return _load_anchors(tuple(pems))


class TrustPolicy:
    """Issuer trust for one transaction, from the template's ``trusted_issuers`` rules.

    A rule ``{"vct": V, "issuers": [...], "metadata": bool}`` accepts credentials of type ``V`` from
    the listed issuers; ``metadata: true`` also lets the listed issuers be found through JWT VC Issuer
    Metadata. A rule with ``issuers`` null accepts any issuer whose ``x5c`` chains to an anchor only
    with ``open_rules`` (development mode), and no issuer otherwise: one issuers CA certifies every
    tenant of an issuer service, so the chain alone does not tell the tax agency from a town council.
    Such rules are refused when templates are written; this is for those stored before.
    """

    def __init__(self, rules: Sequence[Mapping[str, Any]], anchors: Sequence[cx509.Certificate],
                 metadata_resolver: IssuerMetadataKeyResolver | None, *, open_rules: bool = False) -> None:
        self.rules = list(rules)
        self.anchors = list(anchors)
        self.metadata_resolver = metadata_resolver
        self.open_rules = open_rules
        self._anchors_id = tuple(ssi_x509.x509_hash(a).encode() for a in self.anchors)

    def _rule_allows(self, vct: str, iss: str, *, metadata: bool) -> bool:
        for rule in self.rules:
            if rule.get("vct") != vct:
                continue
            issuers = rule.get("issuers")
            if metadata:
                if rule.get("metadata") and issuers and iss in issuers:
                    return True
            elif issuers is None:
                if self.open_rules:
                    return True
            elif iss in issuers:
                return True
        return False

    def _lists_no_issuers(self, vct: str) -> bool:
        """Whether a rule for ``vct`` names no issuers (and so, outside development mode, trusts none)."""
        return not self.open_rules and any(r.get("vct") == vct and r.get("issuers") is None for r in self.rules)

    def metadata_issuer(self, iss: str) -> bool:
        """Whether some rule lets ``iss`` be resolved through its metadata (so fetching it is allowed)."""
        return any(r.get("metadata") and iss in (r.get("issuers") or ()) for r in self.rules)

    def resolve(self, header: dict[str, Any], payload: dict[str, Any], *, now: float) -> ResolvedIssuerKey:
        """The issuer key, once the issuer is known to be trusted for the credential's ``vct``."""
        vct, iss = payload["vct"], payload["iss"]
        if "x5c" in header:
            from datetime import UTC, datetime

            try:
                leaf, key = DEFAULT_X5C_CACHE.validate(header["x5c"], self.anchors, self._anchors_id,
                                                       datetime.fromtimestamp(now, UTC))
            except SSIError as exc:
                if exc.code == "x509.untrusted_chain":
                    raise SDJWTVCError("verifier.untrusted_issuer",
                                       "the issuer certificate does not chain to a trusted anchor") from exc
                raise
            if not ssi_x509.san_matches(leaf, iss):
                raise SDJWTVCError("iss_san_mismatch", "the x5c leaf certificate does not name the issuer")
            if not self._rule_allows(vct, iss, metadata=False):
                if self._lists_no_issuers(vct):
                    raise SDJWTVCError("verifier.trust_rule_without_issuers",
                                       "the template's rule for this credential type lists no issuers, so it trusts "
                                       "none outside development mode; give the rule an explicit issuers list")
                raise SDJWTVCError("verifier.issuer_not_trusted_for_vct",
                                   "the issuer is not trusted for this credential type")
            return ResolvedIssuerKey(key, "x5c", leaf)
        if not self._rule_allows(vct, iss, metadata=True) or self.metadata_resolver is None:
            code = "verifier.issuer_not_trusted_for_vct" if self.metadata_issuer(iss) else "verifier.untrusted_issuer"
            raise SDJWTVCError(code, "the issuer is not trusted for this credential type")
        return self.metadata_resolver.resolve(header, payload, now=now)


# -- outbound fetches ----------------------------------------------------------------------------

class FetchError(Exception):
    """An outbound fetch failed (network, status, size, content)."""


async def fetch_bytes(client: httpx.AsyncClient, url: str, *, accept: str, max_bytes: int) -> bytes:
    """GET ``url`` and return the body, refusing non-2xx answers, bodies over ``max_bytes`` and answers
    not finished within :data:`CALL_DEADLINE_FACTOR` times the client's read timeout."""
    try:
        async with asyncio.timeout(CALL_DEADLINE_FACTOR * (client.timeout.read or 5.0)), \
                client.stream("GET", url, headers={"Accept": accept, **IDENTITY}) as response:
            if response.status_code != 200:
                raise FetchError(f"HTTP {response.status_code}")
            # Counted as inflated, and never inflated past the cap (httpx inflates a chunk whole).
            return await read_capped(response, max_bytes)
    except ResponseBodyRefused as exc:
        raise FetchError("response too large" if exc.too_large else "response body unreadable") from exc
    except TimeoutError as exc:
        raise FetchError("deadline exceeded") from exc
    except httpx.HTTPError as exc:
        raise FetchError(type(exc).__name__) from exc


class MetadataPrefetcher:
    """JWT VC Issuer Metadata (and ``jwks_uri``) fetched asynchronously, read synchronously.

    :class:`ssi.sd_jwt_vc.IssuerMetadataKeyResolver` takes a synchronous ``fetch_json``; the
    verifier fetches the documents beforehand on the event loop and the resolver reads them here.
    Bounded, entries kept for ``ttl`` seconds; safe to lose.
    """

    def __init__(self, client: httpx.AsyncClient, *, ttl: float, max_bytes: int, maxsize: int = 256) -> None:
        self.client = client
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.maxsize = maxsize
        self._docs: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def lookup(self, url: str) -> Any:
        entry = self._docs.get(url)
        if entry is None:
            raise SDJWTVCError("metadata_unavailable", "the issuer metadata could not be fetched")
        return entry[1]

    async def _get(self, url: str) -> Any:
        entry = self._docs.get(url)
        if entry is not None and time.monotonic() - entry[0] < self.ttl:
            return entry[1]
        try:
            body = await fetch_bytes(self.client, url, accept="application/json", max_bytes=self.max_bytes)
            document = json_loads(body)
        except (FetchError, EncodingError):
            self._docs.pop(url, None)
            return None
        self._docs[url] = (time.monotonic(), document)
        while len(self._docs) > self.maxsize:
            self._docs.popitem(last=False)
        return document

    async def prefetch(self, iss: str) -> None:
        try:
            url = jwt_vc_issuer_metadata_url(iss)
        except SSIError:
            return
        document = await self._get(url)
        if isinstance(document, dict) and isinstance(document.get("jwks_uri"), str):
            await self._get(document["jwks_uri"])


class StatusListCache:
    """Verified Status List Tokens per (URI, issuer key), kept for their ``ttl`` (bounded by a maximum).

    One fetch at a time per URI; a failed fetch is not cached. Safe to lose.
    """

    def __init__(self, client: httpx.AsyncClient, *, default_ttl: int, max_bytes: int, leeway: int,
                 maxsize: int = 1024) -> None:
        self.client = client
        self.default_ttl = default_ttl
        self.max_bytes = max_bytes
        self.leeway = leeway
        self.maxsize = maxsize
        self._entries: OrderedDict[tuple[str, str], tuple[float, StatusListToken]] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self.fetches = 0

    async def get(self, uri: str, key_id: str, key_for: Any) -> StatusListToken:
        cache_key = (uri, key_id)
        entry = self._entries.get(cache_key)
        now = time.time()
        if entry is not None and now < entry[0]:
            return entry[1]
        lock = self._locks.setdefault(uri, asyncio.Lock())
        async with lock:
            entry = self._entries.get(cache_key)
            now = time.time()
            if entry is not None and now < entry[0]:
                return entry[1]
            self.fetches += 1
            try:
                body = await fetch_bytes(self.client, uri, accept="application/statuslist+jwt",
                                         max_bytes=self.max_bytes)
                token_text = body.decode("ascii").strip()
            except (FetchError, UnicodeDecodeError) as exc:
                raise StatusListError("verifier.status_unavailable", "the status list could not be fetched") from exc
            token = verify_status_list_token(token_text, key=key_for, expected_uri=uri, now=now, leeway=self.leeway)
            ttl = min(token.ttl or self.default_ttl, self.default_ttl)
            until = now + ttl
            if token.exp is not None:
                until = min(until, float(token.exp))
            self._entries[cache_key] = (until, token)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
            if len(self._locks) > self.maxsize:
                self._locks = {uri: lock}
            return token


# -- claims reported -----------------------------------------------------------------------------
#
# A claims path pointer selects elements as OpenID4VP 1.0 (§7.1.1) says, by ssi.dcql.resolve_path: a
# key missing from an element drops that element from the selection, a null takes every element of
# an array, an index the one element at that position. What is reported for a Credential Query is
# the union of its claims' selections, each value at its own place in the credential's structure:
# objects keep only the selected members, arrays keep their positions (those of the presented
# array: undisclosed SD-JWT elements are not in it), with ``null`` for elements no path selected and
# without the elements after the last selected one. So ``["members", 1, "name"]`` reports
# ``{"members": [null, {"name": ...}]}``, and ``["members", null, "name"]`` over members of which
# only the second has a name ``{"members": [null, {"name": ...}]}`` too.

class _Unselected:
    """An array position no path selected (reported as ``null``)."""


_UNSELECTED = _Unselected()


def _place(node: dict[str, Any] | list[Any], where: ClaimPath, value: Any) -> None:
    """Put a copy of ``value`` at the concrete path ``where`` below ``node`` (a container of the
    report), creating the objects and arrays on the way, and descending into those already there."""
    step, rest = where[0], where[1:]
    if isinstance(node, list):
        assert isinstance(step, int)
        node.extend(_UNSELECTED for _ in range(step + 1 - len(node)))
        current = node[step]
    else:
        assert isinstance(step, str)
        current = node.get(step, _UNSELECTED)
    if not rest:
        # Everything under this point is reported (it may hold what another path placed: a subset).
        child: Any = copy.deepcopy(value)
    elif isinstance(current, dict | list):
        child = current
    else:
        child = {} if isinstance(rest[0], str) else []
    node[step] = child  # type: ignore[index]
    if rest:
        _place(child, rest, value)


def _unselected_to_null(node: Any) -> Any:
    if isinstance(node, _Unselected):
        return None
    if isinstance(node, dict):
        return {k: _unselected_to_null(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unselected_to_null(v) for v in node]
    return node


def requested_claims(claims: dict[str, Any], query: DCQLQuery, query_id: str) -> dict[str, Any]:
    """The disclosed claims the Credential Query asked for (all holder claims when it names none),
    each at its place in the credential's structure (see above)."""
    cq = query.credential(query_id)
    if cq.claims is None:
        return {k: v for k, v in claims.items() if k not in TECHNICAL_CLAIMS}
    report: dict[str, Any] = {}
    for claim in cq.claims:
        for where, value in resolve_path(claims, claim.path):
            if where:
                _place(report, where, value)
    return _unselected_to_null(report)


# -- the check -----------------------------------------------------------------------------------

def _unverified_parts(presentation: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    try:
        jws = parse_jws(presentation.split("~", 1)[0])
        return jws.header, jws.json_payload()
    except SSIError:
        return None


@dataclass(frozen=True, slots=True)
class TransactionContext:
    """What a check needs to know about the transaction."""

    client_id: str
    nonce: str
    dcql_query: dict[str, Any]
    trusted_issuers: list[dict[str, Any]]
    anchors_pem: list[str]


class PresentationVerifier:
    """Checks ``vp_token`` objects; one per app (it owns the HTTP client and the caches)."""

    def __init__(self, *, client: httpx.AsyncClient, anchors: Sequence[cx509.Certificate], kb_max_age: int,
                 leeway: int, status_default_ttl: int, metadata_ttl: int, max_fetch_bytes: int,
                 allow_http_loopback: bool, algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
                 open_trust_rules: bool = False) -> None:
        self.anchors = list(anchors)
        #: Whether a trust rule listing no issuers trusts every issuer chaining to the anchors
        #: (development mode only: see :class:`TrustPolicy`).
        self.open_trust_rules = open_trust_rules
        self.kb_max_age = kb_max_age
        self.leeway = leeway
        self.allow_http_loopback = allow_http_loopback
        self.algorithms = tuple(algorithms)
        self.status = StatusListCache(client, default_ttl=status_default_ttl, max_bytes=max_fetch_bytes,
                                      leeway=leeway)
        self.metadata = MetadataPrefetcher(client, ttl=metadata_ttl, max_bytes=max_fetch_bytes)
        self.metadata_resolver = IssuerMetadataKeyResolver(self.metadata.lookup, ttl=metadata_ttl,
                                                           allow_http_loopback=allow_http_loopback)

    def policy(self, ctx: TransactionContext) -> TrustPolicy:
        anchors = self.anchors + list(load_anchor_pems(ctx.anchors_pem)) if ctx.anchors_pem else self.anchors
        return TrustPolicy(ctx.trusted_issuers, anchors, self.metadata_resolver, open_rules=self.open_trust_rules)

    async def check(self, ctx: TransactionContext, vp_token: Mapping[str, Any]) -> Outcome:
        """Check every presentation of ``vp_token`` for the transaction described by ``ctx``."""
        outcome = Outcome()
        query = parse_dcql_query(ctx.dcql_query, strict=False)
        # Queries of another format are refused when templates and requests are made; one stored
        # before that makes every answer fail rather than pass an SD-JWT VC off as, say, an mdoc.
        for cq in query.credentials:
            if cq.format not in SUPPORTED_FORMATS:
                outcome.errors.append(CheckError("dcql.format_mismatch", cq.id,
                                                 f"the query asks for a format other than {SD_JWT_VC_FORMAT!r}, "
                                                 "the only one this verifier checks"))
        if outcome.errors:
            return outcome
        policy = self.policy(ctx)
        known = {cq.id for cq in query.credentials}
        presented: dict[str, list[dict[str, Any]]] = {}
        verified_items: dict[str, list[VerifiedCredential]] = {}
        for qid, items in vp_token.items():
            if qid not in known:
                outcome.errors.append(CheckError("dcql.unknown_query_id", qid, "no credential query has this id"))
                continue
            cq = query.credential(qid)
            for item in items:
                if not isinstance(item, str):
                    outcome.errors.append(CheckError("verifier.bad_presentation", qid,
                                                     "an SD-JWT VC presentation must be a string"))
                    continue
                credential = await self._check_one(item, cq, ctx, policy, outcome)
                if credential is not None:
                    presented.setdefault(qid, []).append(credential.claims)
                    verified_items.setdefault(qid, []).append(credential)
        if outcome.errors:
            return outcome
        for problem in check_presented(query, presented):
            outcome.errors.append(CheckError(problem.code, problem.query_id, problem.detail))
        if outcome.errors:
            return outcome
        for qid, credentials in verified_items.items():
            outcome.credentials[qid] = [{
                "issuer": vc.issuer,
                "vct": vc.vct,
                "claims": requested_claims(vc.claims, query, qid),
                "valid_from": vc.nbf if vc.nbf is not None else vc.iat,
                "valid_until": vc.exp,
                "key_source": vc.key_source,
                "issuer_name": (ssi_x509.certificate_subject_name(vc.issuer_certificate)
                                if vc.issuer_certificate is not None else None),
            } for vc in credentials]
        return outcome

    async def _check_one(self, presentation: str, cq: CredentialQuery, ctx: TransactionContext,
                         policy: TrustPolicy, outcome: Outcome) -> VerifiedCredential | None:
        qid, vct_values = cq.id, cq.vct_values
        parts = _unverified_parts(presentation)
        if parts is not None and "x5c" not in parts[0]:
            iss = parts[1].get("iss")
            if isinstance(iss, str) and policy.metadata_issuer(iss):
                await self.metadata.prefetch(iss)
        try:
            vc = verify_sd_jwt_vc(presentation, key_resolver=policy, expected_vcts=vct_values, require_kb=True,
                                  expected_aud=ctx.client_id, expected_nonce=ctx.nonce, leeway=self.leeway,
                                  kb_max_age=self.kb_max_age, algorithms=self.algorithms,
                                  allow_http_loopback=self.allow_http_loopback)
        except SSIError as exc:
            outcome.errors.append(CheckError(exc.code, qid, exc.detail))
            return None
        if cq.trusted_authorities is not None and not authority_matches(cq.trusted_authorities, vc.header):
            outcome.errors.append(CheckError("dcql.untrusted_authority", qid,
                                             "the credential's certificate chain names none of the trusted authorities"))
            return None
        if vc.status is not None:
            try:
                token = await self.status.get(vc.status.uri, vc.issuer_key.thumbprint(),
                                              self._status_key(vc, policy))
                value = token.status(vc.status.idx)
            except SSIError as exc:
                code = exc.code if exc.code.startswith("verifier.") else "verifier.status_unverifiable"
                outcome.errors.append(CheckError(code, qid, f"the status list could not be used ({exc.code})"))
                return None
            if value == 1:
                outcome.errors.append(CheckError("verifier.revoked", qid, "the credential is revoked"))
                return None
            if value == 2:
                outcome.errors.append(CheckError("verifier.suspended", qid, "the credential is suspended"))
                return None
            if value != 0:
                outcome.errors.append(CheckError("verifier.status_invalid", qid, "the credential status is not valid"))
                return None
        return vc

    def _status_key(self, vc: VerifiedCredential, policy: TrustPolicy) -> Any:
        """Key resolution for the status list token: the same rules as for the credential's issuer."""

        def key_for(header: dict[str, Any], _payload: dict[str, Any]) -> Key:
            if "x5c" in header:
                resolved = policy.resolve(header, {"vct": vc.vct, "iss": vc.issuer}, now=time.time())
                return resolved.key
            kid = header.get("kid")
            if kid is not None and vc.issuer_key.kid not in (None, kid) and vc.key_source == "metadata":
                return policy.resolve(header, {"vct": vc.vct, "iss": vc.issuer}, now=time.time()).key
            return vc.issuer_key

        return key_for


def decode_form_vp_token(raw: str) -> Any:
    """``vp_token`` from a form field (a JSON object in a string)."""
    try:
        return json_loads(raw)
    except EncodingError:
        return None


__all__ = [
    "CheckError", "Outcome", "PresentationVerifier", "StatusListCache", "TransactionContext", "TrustPolicy",
    "b64url_decode", "decode_form_vp_token", "fetch_bytes", "load_anchor_pems", "requested_claims",
]
