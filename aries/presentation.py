"""DIF presentation definitions for present-proof 2.0, and Cartera's policies on the presentations received.

ACA-Py checks signatures only (the credential's derived BBS+ proof and the presentation's proof). What
a verifier needs besides is applied here, the same decisions as on the OpenID4VC channel:

- the issuer DID is trusted for this credential type (``aries.untrusted_issuer``);
- the challenge is the one we sent, and the domain too when the wallet signs one
  (``aries.challenge_mismatch`` / ``aries.domain_mismatch``; ACA-Py 0.12's BBS+ presentation proof
  carries the challenge but omits the domain);
- the presentation is signed by the credential's subject (``aries.holder_mismatch``);
- the disclosed claims are exactly those requested (``aries.disclosure_mismatch``);
- validity (``aries.expired``, ``aries.not_yet_valid``) and status (``aries.revoked``).

Only the requested claims are returned.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from credential_schemas import CredentialType

from .client import BBS, ED25519
from .errors import VerificationFailed
from .jsonld import credential_type_name

# Members of the credential (not claims) the verifier needs revealed to apply its policies.
_META_PATHS = ("$.expirationDate", "$.credentialStatus")
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
                        presentation_definition=definition)


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


def _parse_time(value: Any, what: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise VerificationFailed("bad_credential", f"{what} is not an ISO 8601 date-time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


async def check_presentation(record: dict[str, Any], request: ProofRequest, *, trusted_issuers: Iterable[str],
                             status_lookup: StatusLookup | None = None,
                             now: dt.datetime | None = None) -> VerifiedPresentation:
    """Apply Cartera's policies to a verifier-side present-proof 2.0 record in state ``done``.

    Raises :class:`~aries.errors.VerificationFailed` with the code of the first policy refused.
    """
    now = now or dt.datetime.now(dt.UTC)
    if record.get("state") != "done" or str(record.get("verified")).lower() != "true":
        raise VerificationFailed("signature_invalid", "the agent did not verify the presentation's signatures")
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
    credentials = pres.get("verifiableCredential")
    if isinstance(credentials, dict):
        credentials = [credentials]
    if not isinstance(credentials, list) or len(credentials) != 1 or not isinstance(credentials[0], dict):
        raise VerificationFailed("bad_presentation", "expected exactly one credential")
    vc = credentials[0]
    if request.type_name not in (vc.get("type") or []):
        raise VerificationFailed("wrong_type", "the credential is not of the requested type")
    issuer = vc.get("issuer")
    issuer = issuer.get("id") if isinstance(issuer, dict) else issuer
    if not isinstance(issuer, str) or issuer not in set(trusted_issuers):
        raise VerificationFailed("untrusted_issuer", "the credential's issuer is not trusted for this type")
    vc_proof = vc.get("proof") or {}
    if request.proof_type == BBS and vc_proof.get("type") != "BbsBlsSignatureProof2020":
        raise VerificationFailed("not_derived", "a BBS+ request needs a derived (selective disclosure) proof")
    subject = vc.get("credentialSubject")
    if not isinstance(subject, dict):
        raise VerificationFailed("bad_credential", "credentialSubject must be one object")
    holder = str(subject.get("id") or "")
    if not holder or _did_of(proof.get("verificationMethod")) != holder:
        raise VerificationFailed("holder_mismatch", "the presentation is not signed by the credential's subject")
    disclosed = set(subject) - {"id"}
    if disclosed != set(request.claims):
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
    claims = {name: subject[name] for name in request.claims}
    return VerifiedPresentation(issuer=issuer, holder=holder, claims=claims, expires_at=expires_at)
