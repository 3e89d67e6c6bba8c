"""Digital Credentials Query Language (OpenID4VP 1.0, section 6) and Claims Path Pointers (section 7).

Three jobs:

* :func:`parse_dcql_query` turns JSON into an immutable :class:`DCQLQuery`, enforcing every rule the
  specification states (and ignoring unknown members, as it requires), with ``dcql.*`` error codes.
* :func:`evaluate` is the WALLET side: which of the holder's credentials answer each Credential
  Query, which concrete claim paths to disclose (the first ``claim_sets`` option that can be
  satisfied — the specification orders options by the Verifier's preference), and whether
  ``credential_sets`` can be satisfied as a whole.
* :func:`check_presented` is the VERIFIER side: given the claims actually disclosed per Credential
  Query (after cryptographic verification), list every way the answer fails the question.

Value matching (``values``) is by type and value: ``True`` does not match ``1``.

Only SD-JWT VCs (format ``dc+sd-jwt``, :data:`SUPPORTED_FORMATS`) are evaluated and checked: claims
path pointers are applied to their JSON claims. A Credential Query of another format (``mso_mdoc``,
``jwt_vc_json``...) parses, but :func:`evaluate` matches no credential to it (``format_mismatch``)
and :func:`check_presented` refuses any answer to it (``dcql.format_mismatch``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .errors import DCQLError, SSIError

PathElement = str | int | None
ClaimPath = tuple[PathElement, ...]

_ID = re.compile(r"[A-Za-z0-9_-]+")  # fullmatch: '$' would admit a final "\n"
SD_JWT_VC_FORMAT = "dc+sd-jwt"
MDOC_FORMAT = "mso_mdoc"
#: Credential formats :func:`evaluate` and :func:`check_presented` can decide: SD-JWT VCs only (their
#: claims are JSON; an mdoc's are CBOR in namespaces, a W3C VC's under ``credentialSubject``).
SUPPORTED_FORMATS = frozenset({SD_JWT_VC_FORMAT})
#: ``trusted_authorities`` types that :func:`authority_matches` can decide (OpenID4VP 1.0 §6.1.1).
SUPPORTED_AUTHORITY_TYPES = frozenset({"aki"})


@runtime_checkable
class DCQLCredential(Protocol):
    """What :func:`evaluate` needs from a holder's credential (``ssi.sd_jwt.SDJWT`` provides it). A
    ``header`` attribute (the issuer-signed JWT's header) is read too when a query names
    ``trusted_authorities``."""

    format: str
    vct: str | None
    claims: dict

    def disclosures_for(self, paths: Iterable[ClaimPath]) -> list: ...


# -- the query model ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClaimsQuery:
    path: ClaimPath
    id: str | None = None
    values: tuple[str | int | bool, ...] | None = None


@dataclass(frozen=True, slots=True)
class TrustedAuthoritiesQuery:
    type: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CredentialQuery:
    id: str
    format: str
    meta: dict[str, Any]
    multiple: bool = False
    claims: tuple[ClaimsQuery, ...] | None = None
    claim_sets: tuple[tuple[str, ...], ...] | None = None
    trusted_authorities: tuple[TrustedAuthoritiesQuery, ...] | None = None
    require_cryptographic_holder_binding: bool = True

    @property
    def vct_values(self) -> tuple[str, ...] | None:
        values = self.meta.get("vct_values")
        return tuple(values) if isinstance(values, list) else None

    def claim_by_id(self, claim_id: str) -> ClaimsQuery:
        for claim in self.claims or ():
            if claim.id == claim_id:
                return claim
        raise DCQLError("unknown_claim_id", "no claim with that id")


@dataclass(frozen=True, slots=True)
class CredentialSetQuery:
    options: tuple[tuple[str, ...], ...]
    required: bool = True


@dataclass(frozen=True, slots=True)
class DCQLQuery:
    credentials: tuple[CredentialQuery, ...]
    credential_sets: tuple[CredentialSetQuery, ...] | None = None

    def credential(self, query_id: str) -> CredentialQuery:
        for cq in self.credentials:
            if cq.id == query_id:
                return cq
        raise DCQLError("unknown_credential_id", "no credential query with that id")

    def to_json(self) -> dict[str, Any]:
        """The query as JSON (for a request object)."""
        creds = []
        for cq in self.credentials:
            item: dict[str, Any] = {"id": cq.id, "format": cq.format, "meta": cq.meta}
            if cq.multiple:
                item["multiple"] = True
            if cq.claims is not None:
                item["claims"] = []
                for c in cq.claims:
                    claim: dict[str, Any] = {"path": list(c.path)}
                    if c.id is not None:
                        claim["id"] = c.id
                    if c.values is not None:
                        claim["values"] = list(c.values)
                    item["claims"].append(claim)
            if cq.claim_sets is not None:
                item["claim_sets"] = [list(o) for o in cq.claim_sets]
            if cq.trusted_authorities is not None:
                item["trusted_authorities"] = [{"type": t.type, "values": list(t.values)}
                                               for t in cq.trusted_authorities]
            if not cq.require_cryptographic_holder_binding:
                item["require_cryptographic_holder_binding"] = False
            creds.append(item)
        out: dict[str, Any] = {"credentials": creds}
        if self.credential_sets is not None:
            out["credential_sets"] = [{"options": [list(o) for o in s.options], "required": s.required}
                                      for s in self.credential_sets]
        return out


# -- parsing --------------------------------------------------------------------------------------

def _non_empty_list(value: Any, code: str, what: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise DCQLError(code, f"{what} must be a non-empty array")
    return value


def _identifier(value: Any, code: str, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise DCQLError(code, f"{what} must be a non-empty string of letters, digits, '_' or '-'")
    return value


def _bool(obj: dict[str, Any], name: str, default: bool, code: str) -> bool:
    value = obj.get(name, default)
    if not isinstance(value, bool):
        raise DCQLError(code, f"'{name}' must be a boolean")
    return value


def parse_claims_path(value: Any) -> ClaimPath:
    """A claims path pointer: a non-empty array of strings, nulls and non-negative integers."""
    items = _non_empty_list(value, "bad_path", "a claims path")
    for item in items:
        if item is None or isinstance(item, str):
            continue
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise DCQLError("bad_path", "path elements must be strings, null or non-negative integers")
    return tuple(items)


def _parse_claim(raw: Any, fmt: str) -> ClaimsQuery:
    if not isinstance(raw, dict):
        raise DCQLError("bad_claims", "each claims query must be an object")
    claim_id = None
    if "id" in raw:
        claim_id = _identifier(raw["id"], "bad_claim_id", "a claim id")
    if "path" not in raw:
        raise DCQLError("bad_path", "a claims query needs a path")
    path = parse_claims_path(raw["path"])
    if fmt == MDOC_FORMAT and (len(path) != 2 or not all(isinstance(p, str) for p in path)):
        raise DCQLError("bad_path", "an mdoc claims path is exactly [namespace, element identifier]")
    values = None
    if "values" in raw:
        vals = _non_empty_list(raw["values"], "bad_values", "values")
        for v in vals:
            if not isinstance(v, str | int | bool):  # bool is an int subclass; floats are refused
                raise DCQLError("bad_values", "values must be strings, integers or booleans")
        values = tuple(vals)
    return ClaimsQuery(path=path, id=claim_id, values=values)


def _parse_meta(raw: Any, fmt: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise DCQLError("bad_meta", "meta is required and must be an object")
    if fmt == SD_JWT_VC_FORMAT:
        vct_values = raw.get("vct_values")
        if not isinstance(vct_values, list) or not vct_values or \
                not all(isinstance(v, str) and v for v in vct_values):
            raise DCQLError("bad_vct_values", "meta.vct_values must be a non-empty array of strings")
    if fmt == MDOC_FORMAT and "doctype_value" in raw and not isinstance(raw["doctype_value"], str):
        raise DCQLError("bad_meta", "meta.doctype_value must be a string")
    return dict(raw)


def _parse_credential(raw: Any, strict: bool) -> CredentialQuery:
    if not isinstance(raw, dict):
        raise DCQLError("bad_credential_query", "each credential query must be an object")
    cid = _identifier(raw.get("id"), "bad_credential_id", "a credential query id")
    fmt = raw.get("format")
    if not isinstance(fmt, str) or not fmt:
        raise DCQLError("bad_format", "format must be a non-empty string")
    multiple = _bool(raw, "multiple", False, "bad_multiple")
    binding = _bool(raw, "require_cryptographic_holder_binding", True, "bad_holder_binding")
    meta = _parse_meta(raw.get("meta"), fmt)
    trusted = None
    if "trusted_authorities" in raw:
        trusted_list = []
        for item in _non_empty_list(raw["trusted_authorities"], "bad_trusted_authorities", "trusted_authorities"):
            if not isinstance(item, dict) or not isinstance(item.get("type"), str) or not item["type"]:
                raise DCQLError("bad_trusted_authorities", "each trusted authority needs a string type")
            tvalues = _non_empty_list(item.get("values"), "bad_trusted_authorities", "trusted authority values")
            if not all(isinstance(v, str) for v in tvalues):
                raise DCQLError("bad_trusted_authorities", "trusted authority values must be strings")
            trusted_list.append(TrustedAuthoritiesQuery(type=item["type"], values=tuple(tvalues)))
        trusted = tuple(trusted_list)
    claims = None
    if "claims" in raw:
        parsed: list[ClaimsQuery] = []
        seen_ids: set[str] = set()
        seen_paths: set[ClaimPath] = set()
        for item in _non_empty_list(raw["claims"], "bad_claims", "claims"):
            claim = _parse_claim(item, fmt)
            if claim.id is not None:
                if claim.id in seen_ids:
                    raise DCQLError("duplicate_claim_id", "a claim id appears twice in one credential query")
                seen_ids.add(claim.id)
            if claim.path in seen_paths:
                # Verifiers MUST NOT repeat a claim; Wallets SHOULD ignore the repetition.
                if strict:
                    raise DCQLError("duplicate_claim_path", "the same claim path is queried twice")
                continue
            seen_paths.add(claim.path)
            parsed.append(claim)
        claims = tuple(parsed)
    claim_sets = None
    if "claim_sets" in raw:
        if claims is None:
            raise DCQLError("claim_sets_without_claims", "claim_sets needs claims")
        if any(c.id is None for c in claims):
            raise DCQLError("missing_claim_id", "every claim needs an id when claim_sets is present")
        known = {c.id for c in claims}
        options = []
        for option in _non_empty_list(raw["claim_sets"], "bad_claim_sets", "claim_sets"):
            ids = _non_empty_list(option, "bad_claim_sets", "a claim_sets option")
            for claim_id in ids:
                if not isinstance(claim_id, str):
                    raise DCQLError("bad_claim_sets", "claim_sets options hold claim ids")
                if claim_id not in known:
                    raise DCQLError("unknown_claim_id", "a claim_sets option names an unknown claim id")
            options.append(tuple(ids))
        claim_sets = tuple(options)
    return CredentialQuery(id=cid, format=fmt, meta=meta, multiple=multiple, claims=claims,
                           claim_sets=claim_sets, trusted_authorities=trusted,
                           require_cryptographic_holder_binding=binding)


def parse_dcql_query(data: Any, *, strict: bool = True) -> DCQLQuery:
    """Parse and validate a DCQL query (a JSON object). ``strict=False`` is for wallets: repeated
    claim paths are dropped instead of refused, as the specification asks of Wallets."""
    if not isinstance(data, dict):
        raise DCQLError("bad_query", "a DCQL query must be a JSON object")
    if "credentials" not in data:
        raise DCQLError("missing_credentials", "a DCQL query needs credentials")
    credentials = []
    ids: set[str] = set()
    for raw in _non_empty_list(data["credentials"], "bad_credentials", "credentials"):
        cq = _parse_credential(raw, strict)
        if cq.id in ids:
            raise DCQLError("duplicate_credential_id", "a credential query id appears twice")
        ids.add(cq.id)
        credentials.append(cq)
    credential_sets = None
    if "credential_sets" in data:
        sets = []
        for raw in _non_empty_list(data["credential_sets"], "bad_credential_sets", "credential_sets"):
            if not isinstance(raw, dict):
                raise DCQLError("bad_credential_sets", "each credential set must be an object")
            options = []
            for option in _non_empty_list(raw.get("options"), "bad_credential_sets", "options"):
                option_ids = _non_empty_list(option, "bad_credential_sets", "a credential set option")
                for oid in option_ids:
                    if not isinstance(oid, str):
                        raise DCQLError("bad_credential_sets", "options hold credential query ids")
                    if oid not in ids:
                        raise DCQLError("unknown_credential_id", "an option names an unknown credential query")
                options.append(tuple(option_ids))
            sets.append(CredentialSetQuery(options=tuple(options), required=_bool(raw, "required", True, "bad_required")))
        credential_sets = tuple(sets)
    return DCQLQuery(credentials=tuple(credentials), credential_sets=credential_sets)


# -- claims path pointer processing ---------------------------------------------------------------

class _PathError(Exception):
    """Processing aborted (a component met the wrong kind of element)."""


def resolve_path(claims: Any, path: Sequence[PathElement]) -> list[tuple[ClaimPath, Any]]:
    """Apply a claims path pointer to JSON claims (OpenID4VP 1.0 §7.1.1).

    Returns the selected elements with their concrete paths (nulls replaced by indices); an empty
    list when processing aborts or nothing is selected — for matching, both mean "not there".
    """
    try:
        return _resolve(claims, path)
    except _PathError:
        return []


def _resolve(claims: Any, path: Sequence[PathElement]) -> list[tuple[ClaimPath, Any]]:
    selected: list[tuple[ClaimPath, Any]] = [((), claims)]
    for component in path:
        nxt: list[tuple[ClaimPath, Any]] = []
        if isinstance(component, str):
            for where, element in selected:
                if not isinstance(element, dict):
                    raise _PathError
                if component in element:
                    nxt.append(((*where, component), element[component]))
        elif component is None:
            for where, element in selected:
                if not isinstance(element, list):
                    raise _PathError
                nxt.extend(((*where, i), item) for i, item in enumerate(element))
        elif isinstance(component, int) and not isinstance(component, bool) and component >= 0:
            for where, element in selected:
                if not isinstance(element, list):
                    raise _PathError
                if component < len(element):
                    nxt.append(((*where, component), element[component]))
        else:
            raise _PathError
        selected = nxt
    return selected


def value_matches(value: Any, allowed: Sequence[Any]) -> bool:
    """Whether a claim's ``value`` is one of a claims query's ``values``, by exact type and value:
    the JSON ``true`` does not match the JSON ``1``, nor ``1.0`` the JSON ``1``. The verifier's
    DIDComm channel compares with this too."""
    return any(type(value) is type(a) and value == a for a in allowed)


def _match_claim(claims: Any, query: ClaimsQuery) -> list[tuple[ClaimPath, Any]] | str:
    """The concrete (path, value) pairs answering one claims query, or the reason it fails."""
    found = resolve_path(claims, query.path)
    if not found:
        return "missing_claim"
    if query.values is not None:
        found = [(p, v) for p, v in found if value_matches(v, query.values)]
        if not found:
            return "value_mismatch"
    return found


# -- evaluation (wallet side) ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Match:
    """One credential answering one Credential Query, and the claims to disclose from it.

    ``paths`` are the concrete paths of the claims asked for, then those of the array elements that
    must go with them for an integer index of the query to keep selecting them in the presentation
    (:func:`index_anchors`: ``["nationalities", 1]`` takes ``nationalities[0]`` along).
    ``claims_preview`` holds the claims asked for. A presentation of :meth:`disclosures` may show
    more (a disclosure goes whole, with the plain members of its object): what it shows is
    ``SDJWT.revealed_claims(match.disclosures(), match.paths)``, the thing to put before the holder."""

    credential: Any
    paths: tuple[ClaimPath, ...]
    claims_preview: tuple[tuple[ClaimPath, Any], ...]
    claim_set: tuple[str, ...] | None = None

    def disclosures(self) -> list:
        """The credential's disclosures for :attr:`paths` (via ``disclosures_for``)."""
        return list(self.credential.disclosures_for(self.paths))


@dataclass(frozen=True, slots=True)
class CredentialSetOutcome:
    index: int
    required: bool
    satisfied_options: tuple[tuple[str, ...], ...]

    @property
    def chosen(self) -> tuple[str, ...] | None:
        """The first satisfiable option (the Verifier's preference), or None."""
        return self.satisfied_options[0] if self.satisfied_options else None


@dataclass(slots=True)
class DCQLResult:
    """The outcome of :func:`evaluate`.

    ``matches[query_id]`` lists every matching credential (the holder picks one unless the query
    says ``multiple``); ``unsatisfied[query_id]`` says why a query has none; ``required`` and
    ``optional`` list the query ids to present (from the first satisfiable option of each set).
    """

    satisfiable: bool
    matches: dict[str, list[Match]]
    unsatisfied: dict[str, str]
    required: list[str]
    optional: list[str]
    credential_sets: list[CredentialSetOutcome] = field(default_factory=list)


_REASON_RANK = {"format_mismatch": 0, "vct_mismatch": 1, "untrusted_authority": 2, "missing_claim": 3,
                "value_mismatch": 4, "no_claim_set_satisfied": 5}


def index_anchors(pointer: Sequence[PathElement], path: ClaimPath) -> list[ClaimPath]:
    """The array elements to disclose with ``path`` (a concrete path ``pointer`` selected) so that
    ``pointer``'s array indices still select it in the presentation.

    A verifier applies the pointer to the presented claims, where an element the holder withheld is
    simply absent (RFC 9901 §7.1): ``["nationalities", 1]`` would select the second *disclosed*
    element. So for each integer component ``i`` of the pointer, the elements ``0 .. i-1`` of that
    array go with it (plain elements are present anyway; disclosures_for adds nothing for them).
    ``null`` components need nothing: they select every presented element."""
    anchors: list[ClaimPath] = []
    for position, component in enumerate(pointer):
        if isinstance(component, int) and not isinstance(component, bool) and component > 0:
            anchors.extend((*path[:position], before) for before in range(component))
    return anchors


def _with_anchors(claim: ClaimsQuery, found: list[tuple[ClaimPath, Any]]) -> list[ClaimPath]:
    return [anchor for path, _ in found for anchor in index_anchors(claim.path, path)]


_Selection = tuple[list[tuple[ClaimPath, Any]], list[ClaimPath], tuple[str, ...] | None]


def _select_claims(claims: Any, cq: CredentialQuery) -> _Selection | str:
    if cq.claims is None:
        return [], [], None
    if cq.claim_sets is None:
        selected: list[tuple[ClaimPath, Any]] = []
        anchors: list[ClaimPath] = []
        for claim in cq.claims:
            result = _match_claim(claims, claim)
            if isinstance(result, str):
                return result
            selected.extend(result)
            anchors.extend(_with_anchors(claim, result))
        return selected, anchors, None
    cache: dict[str, list[tuple[ClaimPath, Any]] | str] = {}
    for option in cq.claim_sets:
        picked: list[tuple[ClaimPath, Any]] = []
        picked_anchors: list[ClaimPath] = []
        for claim_id in option:
            if claim_id not in cache:
                cache[claim_id] = _match_claim(claims, cq.claim_by_id(claim_id))
            result = cache[claim_id]
            if isinstance(result, str):
                break
            picked.extend(result)
            picked_anchors.extend(_with_anchors(cq.claim_by_id(claim_id), result))
        else:
            return picked, picked_anchors, option
    return "no_claim_set_satisfied"


def _dedupe(pairs: list[tuple[ClaimPath, Any]]) -> list[tuple[ClaimPath, Any]]:
    seen: set[ClaimPath] = set()
    out = []
    for path, value in pairs:
        if path not in seen:
            seen.add(path)
            out.append((path, value))
    return out


def authority_matches(authorities: Sequence[TrustedAuthoritiesQuery], header: Any) -> bool:
    """Whether a credential whose issuer-signed JWT has ``header`` comes from one of ``authorities``.

    Only type ``aki`` can be decided from the credential itself: one of its values must be the
    Authority Key Identifier of a certificate in the header's ``x5c`` (OpenID4VP 1.0 §6.1.1). The
    other types (``etsi_tl``, ``openid_federation``) need a trust framework this library does not
    consult, so they never match: sharing with a verifier that restricted the issuers in a way we
    cannot check would be a guess. A credential without ``x5c`` matches no ``aki``.
    """
    akis = [value for authority in authorities if authority.type in SUPPORTED_AUTHORITY_TYPES
            for value in authority.values]
    if not akis or not isinstance(header, Mapping) or "x5c" not in header:
        return False
    from .x509 import authority_key_identifiers  # only queries with trusted_authorities pay for X.509

    try:
        present = authority_key_identifiers(header["x5c"])
    except SSIError:
        return False
    return any(value in present for value in akis)


def match_credential(cq: CredentialQuery, credential: Any) -> Match | str:
    """Match one credential against one Credential Query: a :class:`Match` or the reason code. A
    query of a format outside :data:`SUPPORTED_FORMATS` matches nothing (``format_mismatch``),
    whatever the credential says its format is."""
    if cq.format not in SUPPORTED_FORMATS or getattr(credential, "format", None) != cq.format:
        return "format_mismatch"
    vct_values = cq.vct_values
    if vct_values is not None and getattr(credential, "vct", None) not in vct_values:
        return "vct_mismatch"
    if cq.trusted_authorities is not None and not authority_matches(cq.trusted_authorities,
                                                                    getattr(credential, "header", None)):
        return "untrusted_authority"
    result = _select_claims(getattr(credential, "claims", None), cq)
    if isinstance(result, str):
        return result
    pairs, anchors, option = result
    pairs = _dedupe(pairs)
    paths = [p for p, _ in pairs]
    asked = set(paths)
    for anchor in anchors:
        if anchor not in asked:
            asked.add(anchor)
            paths.append(anchor)
    return Match(credential=credential, paths=tuple(paths), claims_preview=tuple(pairs), claim_set=option)


def evaluate(query: DCQLQuery, credentials: Sequence[Any]) -> DCQLResult:
    """Evaluate ``query`` against the holder's ``credentials`` (objects with the
    :class:`DCQLCredential` members). ``trusted_authorities`` is evaluated from each credential's
    ``header`` (see :func:`authority_matches`); holder binding is not: every credential a Cartera
    wallet holds is key-bound."""
    matches: dict[str, list[Match]] = {}
    unsatisfied: dict[str, str] = {}
    for cq in query.credentials:
        found: list[Match] = []
        best_reason = "no_credentials"
        for credential in credentials:
            outcome = match_credential(cq, credential)
            if isinstance(outcome, Match):
                found.append(outcome)
            elif _REASON_RANK[outcome] > _REASON_RANK.get(best_reason, -1):
                best_reason = outcome
        matches[cq.id] = found
        if not found:
            unsatisfied[cq.id] = best_reason
    have = {qid for qid, found in matches.items() if found}
    if query.credential_sets is None:
        required = [cq.id for cq in query.credentials]
        return DCQLResult(satisfiable=all(qid in have for qid in required), matches=matches,
                          unsatisfied=unsatisfied, required=required, optional=[])
    outcomes: list[CredentialSetOutcome] = []
    required_ids: list[str] = []
    optional_ids: list[str] = []
    satisfiable = True
    for index, cs in enumerate(query.credential_sets):
        ok = tuple(option for option in cs.options if all(qid in have for qid in option))
        outcome = CredentialSetOutcome(index=index, required=cs.required, satisfied_options=ok)
        outcomes.append(outcome)
        if cs.required and not ok:
            satisfiable = False
        chosen = outcome.chosen or ()
        target = required_ids if cs.required else optional_ids
        target.extend(qid for qid in chosen if qid not in target)
    optional_ids = [qid for qid in optional_ids if qid not in required_ids]
    return DCQLResult(satisfiable=satisfiable, matches=matches, unsatisfied=unsatisfied,
                      required=required_ids, optional=optional_ids, credential_sets=outcomes)


# -- checking an answer (verifier side) -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PresentationProblem:
    """One way a presentation fails to answer the query. ``code`` is stable (``dcql.*``)."""

    query_id: str | None
    code: str
    detail: str


def _claims_problem(cq: CredentialQuery, claims: Any) -> tuple[str, str] | None:
    if cq.format not in SUPPORTED_FORMATS:
        return "dcql.format_mismatch", "the query asks for a credential format that is not checked here (only dc+sd-jwt)"
    if cq.vct_values is not None and (not isinstance(claims, dict) or claims.get("vct") not in cq.vct_values):
        return "dcql.vct_mismatch", "the credential type is not one the query asked for"
    if cq.claims is None:
        return None
    if cq.claim_sets is None:
        for claim in cq.claims:
            result = _match_claim(claims, claim)
            if isinstance(result, str):
                return f"dcql.{result}", f"claim {list(claim.path)!r} is not answered"
        return None
    for option in cq.claim_sets:
        if all(not isinstance(_match_claim(claims, cq.claim_by_id(cid)), str) for cid in option):
            return None
    return "dcql.no_claim_set_satisfied", "no claim_sets option is answered"


def check_presented(query: DCQLQuery, presented: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[PresentationProblem]:
    """Check verified, disclosed claims (per Credential Query id) against ``query``.

    ``presented`` holds the claims of SD-JWT VCs: an answer to a Credential Query of a format outside
    :data:`SUPPORTED_FORMATS` is ``dcql.format_mismatch``.

    Returns an empty list when the answer satisfies the query: known ids only, one presentation
    unless ``multiple``, format, vct, claims and their ``values``, ``claim_sets``, and ``credential_sets``
    (or every query when there are none). ``trusted_authorities`` and
    ``require_cryptographic_holder_binding`` are not checked here, since they concern the verified
    credential rather than its claims: the caller applies :func:`authority_matches` to the verified
    header and ``require_kb``. An integer index in a path applies to the presented
    array, from which withheld elements are absent (see :func:`index_anchors`).
    """
    if not isinstance(presented, Mapping):
        return [PresentationProblem(None, "dcql.bad_vp_token", "the presentations must be a JSON object")]
    problems: list[PresentationProblem] = []
    known = {cq.id: cq for cq in query.credentials}
    answered: set[str] = set()
    for qid, items in presented.items():
        cq = known.get(qid) if isinstance(qid, str) else None
        if cq is None:
            problems.append(PresentationProblem(str(qid), "dcql.unknown_query_id", "no credential query has this id"))
            continue
        if not isinstance(items, Sequence) or isinstance(items, str | bytes) or not items:
            problems.append(PresentationProblem(qid, "dcql.empty_presentation", "an entry needs at least one presentation"))
            continue
        if len(items) > 1 and not cq.multiple:
            problems.append(PresentationProblem(qid, "dcql.too_many_presentations", "the query allows one presentation"))
        entry_ok = True
        for claims in items:
            issue = _claims_problem(cq, claims)
            if issue is not None:
                entry_ok = False
                problems.append(PresentationProblem(qid, issue[0], issue[1]))
        if entry_ok:
            answered.add(qid)
    if query.credential_sets is None:
        for cq in query.credentials:
            if cq.id not in presented:
                problems.append(PresentationProblem(cq.id, "dcql.missing_credential", "a requested credential is missing"))
        return problems
    referenced = {qid for cs in query.credential_sets for option in cs.options for qid in option}
    for qid in presented:
        if qid in known and qid not in referenced:
            problems.append(PresentationProblem(qid, "dcql.unrequested_credential",
                                                "this credential query is in no credential set"))
    for index, cs in enumerate(query.credential_sets):
        if cs.required and not any(all(qid in answered for qid in option) for option in cs.options):
            problems.append(PresentationProblem(None, "dcql.credential_set_unsatisfied",
                                                f"required credential set {index} is not answered"))
    return problems
