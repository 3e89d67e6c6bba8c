"""DIF presentation definitions for present-proof 2.0, and Cartera's policies on the presentations received.

ACA-Py checks signatures only (the credential's derived BBS+ proof and the presentation's proof), and
the definition's field constraints only for the descriptor_map entries the holder chose to send. What
a verifier needs besides is applied here, the same decisions as on the OpenID4VC channel:

- the challenge is the one we sent, and the domain too when the wallet signs one
  (``aries.challenge_mismatch`` / ``aries.domain_mismatch``; ACA-Py 0.12's BBS+ presentation proof
  carries the challenge but omits the domain);
- the presentation's ``presentation_submission`` answers our definition and maps each of its input
  descriptors to the one credential (``aries.submission_mismatch``);
- the presentation's and the credential's ``@context`` are exactly the contexts we issue with
  (``aries.context_mismatch``): a signature covers the expanded statements, not the JSON names, so a
  context of the holder's own could swap claim values while every signature still verifies;
- the credential is of the requested type and its issuer DID is trusted for it (``aries.wrong_type``,
  ``aries.untrusted_issuer``);
- the presentation is signed by the credential's subject (``aries.holder_mismatch``);
- the disclosed claims are exactly those requested with BBS+ (selective disclosure), and include them
  with Ed25519Signature2020, whose credentials always disclose every claim (``aries.disclosure_mismatch``);
- validity (``aries.expired``, ``aries.not_yet_valid``) and status: a request that asked for the status
  refuses a credential without one (``aries.status_missing``), and a revoked one (``aries.revoked``).

Only the requested claims are returned, whatever else the credential disclosed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from credential_schemas import CredentialType

from .client import BBS, ED25519
from .errors import VerificationFailed
from .jsonld import (
    CREDENTIALS_V1,
    credential_contexts,
    credential_type_name,
    embeds_context,
    suite_context,
    type_context_url,
)

# Members of the credential (not claims) the verifier needs revealed to apply its policies.
_STATUS_PATH = "$.credentialStatus"
_META_PATHS = ("$.expirationDate", _STATUS_PATH)
# Where the one credential of a presentation is, as ACA-Py's descriptor_map names it.
_CREDENTIAL_PATH = "$.verifiableCredential[0]"
# The issuer serves a type's context and its status lists under one base (aries.jsonld, the issuer's
# routes): <base>/v1/aries/contexts/<type>/<version> and <base>/v1/aries/status/<list>/<suite>.
_CONTEXTS_PATH = "/v1/aries/contexts/"
_STATUS_LIST_PATH = "/v1/aries/status/"
LEEWAY = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class ProofRequest:
    """What the verifier asked, kept in its database to judge the answer (never trust the agent's copy)."""

    type_id: str
    type_name: str
    claims: tuple[str, ...]
    proof_type: str
    challenge: str
    domain: str
    presentation_definition: dict[str, Any] = field(repr=False)
    #: The type's version, which names its context URL (``None`` in requests stored before it was kept).
    type_version: str | None = None


def _check_claims(ctype: CredentialType, claims: Iterable[str]) -> tuple[str, ...]:
    known = set(ctype.json_schema.get("properties") or {})
    wanted = tuple(dict.fromkeys(claims))
    if not wanted:
        raise VerificationFailed("no_claims", "a proof request must ask for at least one claim")
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise VerificationFailed("unknown_claim", f"type {ctype.id} has no claim(s) {', '.join(unknown)}")
    return wanted


def build_proof_request(ctype: CredentialType, claims: Sequence[str], *, domain: str,
                        proof_type: str = BBS, purpose: str | None = None,
                        challenge: str | None = None, with_status: bool = True) -> ProofRequest:
    """A DIF presentation definition asking for ``claims`` of ``ctype``, with a fresh challenge.

    With BBS+ the definition says ``limit_disclosure: required``, so the wallet derives a proof that
    reveals those claims (plus expiry and status, which our policies need) and nothing else. The holder
    must prove control of ``credentialSubject.id`` (``is_holder`` on a field whose id is a UUID4, as
    ACA-Py requires). ACA-Py 0.12 ignores DIF ``optional`` fields, so a credential lacking a requested
    member never matches: set ``with_status=False`` for types issued without a status entry.
    """
    if proof_type not in (BBS, ED25519):
        raise VerificationFailed("bad_proof_type", "proof type must be BbsBlsSignature2020 or Ed25519Signature2020")
    wanted = _check_claims(ctype, claims)
    holder_field = str(uuid.uuid4())
    fields: list[dict[str, Any]] = [{"id": holder_field, "path": ["$.credentialSubject.id"]}]
    fields += [{"id": str(uuid.uuid4()), "path": [f"$.credentialSubject.{claim}"]} for claim in wanted]
    meta = _META_PATHS if with_status else _META_PATHS[:1]
    fields += [{"id": str(uuid.uuid4()), "path": [path]} for path in meta]
    constraints: dict[str, Any] = {
        "is_holder": [{"directive": "required", "field_id": [holder_field]}],
        "fields": fields,
    }
    if proof_type == BBS:
        constraints["limit_disclosure"] = "required"
    type_name = credential_type_name(ctype)
    descriptor: dict[str, Any] = {
        "id": ctype.id,
        "name": ctype.name,
        "schema": [{"uri": f"{ctype.vct.split('#')[0]}#{type_name}"}],
        "constraints": constraints,
    }
    if purpose:
        descriptor["purpose"] = purpose
    definition = {
        "id": str(uuid.uuid4()),
        "format": {"ldp_vp": {"proof_type": [proof_type]}},
        "input_descriptors": [descriptor],
    }
    return ProofRequest(type_id=ctype.id, type_name=type_name, claims=wanted, proof_type=proof_type,
                        challenge=challenge or str(uuid.uuid4()), domain=domain,
                        presentation_definition=definition, type_version=ctype.version)


@dataclass(frozen=True)
class VerifiedPresentation:
    """The outcome of :func:`check_presentation`: only the requested claims."""

    issuer: str
    holder: str
    claims: dict[str, Any]
    expires_at: dt.datetime | None


StatusLookup = Callable[[dict[str, Any], str], Awaitable[bool]]
"""``(credentialStatus entry, issuer DID) -> revoked?``; raises a typed error when it cannot tell."""


def _did_of(verification_method: Any) -> str:
    return str(verification_method or "").split("#")[0]


def _asks_status(request: ProofRequest) -> bool:
    """Whether our definition asked for ``credentialStatus`` (then a credential must disclose one)."""
    for descriptor in request.presentation_definition.get("input_descriptors") or []:
        for spec in (descriptor.get("constraints") or {}).get("fields") or []:
            if _STATUS_PATH in (spec.get("path") or []):
                return True
    return False


def _check_submission(pres: dict[str, Any], request: ProofRequest) -> None:
    """The submission answers our definition and maps every input descriptor to the one credential.

    ACA-Py applies a descriptor's constraints (fields, ``limit_disclosure``, ``is_holder``) only to the
    entries the holder put in ``descriptor_map``: an empty or partial map skips them.
    """
    definition = request.presentation_definition
    wanted = {d.get("id") for d in definition.get("input_descriptors") or []}
    submission = pres.get("presentation_submission")
    if not isinstance(submission, dict) or submission.get("definition_id") != definition.get("id"):
        raise VerificationFailed("submission_mismatch", "the presentation answers another presentation definition")
    entries = submission.get("descriptor_map")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise VerificationFailed("submission_mismatch", "the presentation submission has no descriptor map")
    mapped = set()
    for entry in entries:
        if entry.get("id") not in wanted:
            raise VerificationFailed("submission_mismatch", "the descriptor map names an input descriptor not asked")
        if entry.get("path") != _CREDENTIAL_PATH:
            raise VerificationFailed("submission_mismatch", "the descriptor map points elsewhere than the credential")
        mapped.add(entry["id"])
    if mapped != wanted:
        raise VerificationFailed("submission_mismatch", "the descriptor map leaves an input descriptor out")


def _issuer_base(trusted_issuers: Iterable[str] | Mapping[str, str], issuer: str,
                 vc: dict[str, Any]) -> str | None:
    """The base URL under which the credential's issuer serves its contexts (and status lists).

    Given ``{DID: issuer identifier}``, the identifier the trusted DID was published under. Given DIDs
    only, the base of the credential's status list URL: the status lookup only fetches lists under the
    trusted issuers' identifiers (its ``allowed_prefixes``) and signed by the credential's issuer, so
    the context is bound to the issuer that serves the status list.
    """
    if isinstance(trusted_issuers, Mapping):
        base = trusted_issuers.get(issuer)
        if isinstance(base, str) and base.startswith(("https://", "http://")):
            return base.rstrip("/")
    status = vc.get("credentialStatus")
    url = status.get("statusListCredential") if isinstance(status, dict) else None
    if isinstance(url, str) and url.startswith(("https://", "http://")) and _STATUS_LIST_PATH in url:
        return url.split(_STATUS_LIST_PATH, 1)[0]
    return None


def _check_contexts(pres: dict[str, Any], vc: dict[str, Any], request: ProofRequest, base: str | None) -> None:
    """The presentation's and the credential's ``@context`` are exactly those we issue with.

    Strings only (a context is resolved by URL from the agent's pre-cache or the issuer, or from the
    W3C contexts ACA-Py ships): no inline object, no extra, missing or reordered entry.
    """
    if pres.get("@context") not in ([CREDENTIALS_V1], [CREDENTIALS_V1, suite_context(request.proof_type)]):
        raise VerificationFailed("context_mismatch", "the presentation's @context is not the expected one")
    contexts = vc.get("@context")
    if base is None:
        raise VerificationFailed("context_mismatch", "no issuer base to check the credential's context against")
    version = request.type_version
    if version is None:  # a request stored before the version was kept: that issuer's context, any version
        given = contexts[1] if isinstance(contexts, list) and len(contexts) == 3 else None
        prefix = f"{base}{_CONTEXTS_PATH}{request.type_id}/"
        tail = given[len(prefix):] if isinstance(given, str) and given.startswith(prefix) else ""
        version = tail if tail and not any(c in tail for c in "/?#") else "?"
    expected = credential_contexts(type_context_url(base, request.type_id, version), request.proof_type)
    if contexts != expected:
        raise VerificationFailed("context_mismatch", "the credential's @context is not its issuer's")
    inner = [value for key, value in vc.items() if key != "@context"]
    inner += [value for key, value in pres.items() if key not in ("@context", "verifiableCredential")]
    if embeds_context(inner):  # our contexts are @protected, but a context has no business there
        raise VerificationFailed("context_mismatch", "an @context is embedded inside the presentation")


def _parse_time(value: Any, what: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise VerificationFailed("bad_credential", f"{what} is not an ISO 8601 date-time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def precheck_presentation(record: dict[str, Any], request: ProofRequest, *,
                          trusted_issuers: Iterable[str] | Mapping[str, str]) -> None:
    """The checks :func:`check_presentation` makes that need no signature verified, for a record in
    ``presentation-received``: challenge, domain, submission, one credential of the type, a trusted
    issuer, status asked and given, and the exact ``@context`` lists.

    Verifying a JSON-LD signature makes the agent load every context the holder wrote, and ACA-Py's
    loader fetches an unknown URL with no timeout, following redirects, from inside its event loop.
    Asked to verify only what passed this check, the agent loads only the contexts we issue with.
    Raises :class:`~aries.errors.VerificationFailed`.
    """
    _check_shape(record, request, trusted_issuers)


def _check_shape(record: dict[str, Any], request: ProofRequest, trusted_issuers: Iterable[str] | Mapping[str, str]
                 ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]:
    """The presentation's parts once their shape is checked: ``(presentation, credential, proof, issuer)``."""
    pres = ((record.get("by_format") or {}).get("pres") or {}).get("dif")
    if not isinstance(pres, dict):
        raise VerificationFailed("bad_presentation", "no DIF presentation in the record")
    proof = pres.get("proof")
    if isinstance(proof, list):
        proof = proof[0] if len(proof) == 1 else None
    if not isinstance(proof, dict):
        raise VerificationFailed("bad_presentation", "the presentation has no single proof")
    if proof.get("challenge") != request.challenge:
        raise VerificationFailed("challenge_mismatch", "the presentation answers another challenge")
    if "domain" in proof and proof.get("domain") != request.domain:
        raise VerificationFailed("domain_mismatch", "the presentation is bound to another domain")
    _check_submission(pres, request)
    credentials = pres.get("verifiableCredential")
    if isinstance(credentials, dict):
        credentials = [credentials]
    if not isinstance(credentials, list) or len(credentials) != 1 or not isinstance(credentials[0], dict):
        raise VerificationFailed("bad_presentation", "expected exactly one credential")
    vc = credentials[0]
    types = vc.get("type")
    types = [types] if isinstance(types, str) else types  # one type: equal, never a substring
    if not isinstance(types, list) or request.type_name not in types:
        raise VerificationFailed("wrong_type", "the credential is not of the requested type")
    issuer = vc.get("issuer")
    issuer = issuer.get("id") if isinstance(issuer, dict) else issuer
    if not isinstance(issuer, str) or issuer not in set(trusted_issuers):
        raise VerificationFailed("untrusted_issuer", "the credential's issuer is not trusted for this type")
    vc_proof = vc.get("proof") or {}
    if request.proof_type == BBS and vc_proof.get("type") != "BbsBlsSignatureProof2020":
        raise VerificationFailed("not_derived", "a BBS+ request needs a derived (selective disclosure) proof")
    if vc.get("credentialStatus") is None and _asks_status(request):  # JSON-LD drops a null: none
        raise VerificationFailed("status_missing", "the request asked for the credential's status and got none")
    _check_contexts(pres, vc, request, _issuer_base(trusted_issuers, issuer, vc))
    return pres, vc, proof, issuer


def declined(record: Mapping[str, Any]) -> bool:
    """Whether a verifier-side record ended without an answer: ``abandoned`` (the holder's problem
    report, or the request given up) before any presentation arrived. One abandoned *with* a
    presentation is the agent refusing what it received (``aries.signature_invalid``)."""
    by_format = record.get("by_format")
    presented = isinstance(by_format, Mapping) and bool(by_format.get("pres"))
    return record.get("state") == "abandoned" and not presented


async def check_presentation(record: dict[str, Any], request: ProofRequest, *,
                             trusted_issuers: Iterable[str] | Mapping[str, str],
                             status_lookup: StatusLookup | None = None,
                             now: dt.datetime | None = None) -> VerifiedPresentation:
    """Apply Cartera's policies to a verifier-side present-proof 2.0 record in state ``done``.

    ``trusted_issuers``: the issuer DIDs trusted for the type; better ``{DID: issuer identifier}`` (the
    https base the DID was published under, :func:`aries.jsonld.context_url`'s ``issuer_base_url``),
    which pins the credential's context to that issuer. Given DIDs only, the context must be served
    under the same base as the credential's status list (see :func:`_issuer_base`), and a credential
    without a status cannot be checked (``aries.context_mismatch``).

    Raises :class:`~aries.errors.VerificationFailed` with the code of the first policy refused;
    ``aries.declined`` for a record abandoned before any presentation arrived (:func:`declined`).
    """
    now = now or dt.datetime.now(dt.UTC)
    if declined(record):
        raise VerificationFailed("declined", "the holder declined the request: nothing was presented")
    if record.get("state") != "done" or str(record.get("verified")).lower() != "true":
        raise VerificationFailed("signature_invalid", "the agent did not verify the presentation's signatures")
    _, vc, proof, issuer = _check_shape(record, request, trusted_issuers)
    subject = vc.get("credentialSubject")
    if not isinstance(subject, dict):
        raise VerificationFailed("bad_credential", "credentialSubject must be one object")
    holder = str(subject.get("id") or "")
    if not holder or _did_of(proof.get("verificationMethod")) != holder:
        raise VerificationFailed("holder_mismatch", "the presentation is not signed by the credential's subject")
    disclosed = set(subject) - {"id"}
    # Only BBS+ derives a proof that reveals the requested claims alone; an Ed25519Signature2020
    # credential always carries every claim. The claims not requested are never returned.
    full_disclosure = request.proof_type == ED25519
    if not set(request.claims) <= disclosed or (not full_disclosure and disclosed != set(request.claims)):
        raise VerificationFailed("disclosure_mismatch", "the disclosed claims differ from those requested")
    expires_at = None
    if "expirationDate" not in vc:
        raise VerificationFailed("bad_credential", "the credential's expiry was not disclosed")
    expires_at = _parse_time(vc["expirationDate"], "expirationDate")
    if expires_at <= now - LEEWAY:
        raise VerificationFailed("expired", "the credential has expired")
    if "issuanceDate" in vc and _parse_time(vc["issuanceDate"], "issuanceDate") > now + LEEWAY:
        raise VerificationFailed("not_yet_valid", "the credential is not valid yet")
    status = vc.get("credentialStatus")
    if status is not None:
        if status_lookup is None:
            raise VerificationFailed("status_unchecked", "the credential has a status but no lookup is configured")
        if not isinstance(status, dict) or await status_lookup(status, issuer):
            raise VerificationFailed("revoked", "the credential is revoked")
    claims = {name: subject[name] for name in request.claims}  # the requested ones, nothing else
    return VerifiedPresentation(issuer=issuer, holder=holder, claims=claims, expires_at=expires_at)
