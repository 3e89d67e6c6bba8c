"""JSON-LD contexts generated from credential types, and W3C VC (data model 1.1) credentials built from them.

ACA-Py expands every credential before signing (URDNA2015) and refuses one with a term its contexts do
not define, so the context of a type must define every claim name that can occur, at any depth. We
derive it from the type's JSON Schema (``properties``, ``items``, ``$defs``/``$ref``, combinators) and
map each term into the type's own vocabulary, ``<vct>#<term>``. Terms are @protected, like the W3C
contexts, so no later context can silently redefine a claim.

The context is served by the issuer at a stable, versioned URL (:func:`context_url`); it changes only
with the type's version, and agents get it pre-cached (``aries/acapy_plugins/cartera_contexts``).

The credential carries a W3C Bitstring Status List entry (``BitstringStatusListEntry``) whose terms
this context defines too, since ACA-Py 0.12 ships only the 2021 status list context.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from credential_schemas import CredentialType

from .errors import AriesError

CREDENTIALS_V1 = "https://www.w3.org/2018/credentials/v1"
BBS_V1 = "https://w3id.org/security/bbs/v1"
ED25519_2020 = "https://w3id.org/security/suites/ed25519-2020/v1"
STATUS_VOCAB = "https://www.w3.org/ns/credentials/status#"

_RESERVED = {"id", "type", "@context"}


def credential_type_name(ctype: CredentialType) -> str:
    """The VC ``type`` of a credential type: ``university-diploma`` → ``UniversityDiplomaCredential``."""
    words = re.split(r"[^A-Za-z0-9]+", ctype.id)
    return "".join(w[:1].upper() + w[1:] for w in words if w) + "Credential"


def context_url(issuer_base_url: str, ctype: CredentialType) -> str:
    """The stable, versioned URL at which the issuer serves the type's context."""
    return type_context_url(issuer_base_url, ctype.id, ctype.version)


def type_context_url(issuer_base_url: str, type_id: str, version: str) -> str:
    """:func:`context_url` from the type's id and version (what a verifier keeps of the type)."""
    return f"{issuer_base_url.rstrip('/')}/v1/aries/contexts/{type_id}/{version}"


def suite_context(proof_type: str) -> str:
    """The context of the signature suite ``proof_type`` (W3C contexts ACA-Py ships, never fetched)."""
    return BBS_V1 if proof_type == "BbsBlsSignature2020" else ED25519_2020


def credential_contexts(type_context: str, proof_type: str) -> list[str]:
    """The ``@context`` of every credential we issue: credentials v1, the type's context, the suite's.

    The single source of truth for the issuer (:func:`build_credential`) and for the verifier, which
    refuses a credential whose ``@context`` is anything else: the signature covers the expanded
    statements, not the JSON names, so a holder's own context could rename the claims.
    """
    return [CREDENTIALS_V1, type_context, suite_context(proof_type)]


def _vocab(ctype: CredentialType) -> str:
    return ctype.vct.split("#")[0] + "#"


def _resolve(node: Any, root: dict[str, Any]) -> Any:
    ref = node.get("$ref") if isinstance(node, dict) else None
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            if not isinstance(target, dict) or part not in target:
                raise AriesError("bad_schema_ref", f"unresolvable $ref {ref}")
            target = target[part]
        return target
    return node


def schema_terms(schema: dict[str, Any]) -> list[str]:
    """Every property name that may occur in claims valid under ``schema``, in first-seen order."""
    seen: dict[str, None] = {}

    def walk(node: Any, depth: int) -> Iterator[str]:
        if depth > 32 or not isinstance(node, dict):
            return
        node = _resolve(node, schema)
        if not isinstance(node, dict):
            return
        for name, sub in (node.get("properties") or {}).items():
            yield name
            yield from walk(sub, depth + 1)
        for key in ("items", "additionalProperties", "unevaluatedProperties"):
            if isinstance(node.get(key), dict):
                yield from walk(node[key], depth + 1)
        for key in ("allOf", "anyOf", "oneOf", "prefixItems"):
            for sub in node.get(key) or []:
                yield from walk(sub, depth + 1)
        for sub in (node.get("patternProperties") or {}).values():
            yield from walk(sub, depth + 1)

    for term in walk(schema, 0):
        seen.setdefault(term, None)
    return [t for t in seen if t not in _RESERVED]


def generate_context(ctype: CredentialType) -> dict[str, Any]:
    """The JSON-LD context document of ``ctype`` (every claim term defined)."""
    vocab = _vocab(ctype)
    if not vocab.startswith(("https://", "http://")):
        raise AriesError("bad_vct", "the type's vct must be an http(s) URL to derive its vocabulary")
    terms: dict[str, Any] = {"@version": 1.1, "@protected": True, "id": "@id", "type": "@type"}
    terms[credential_type_name(ctype)] = {"@id": f"{vocab}{credential_type_name(ctype)}"}
    for term in schema_terms(ctype.json_schema):
        terms[term] = {"@id": f"{vocab}{term}"}
    terms["BitstringStatusListEntry"] = {
        "@id": f"{STATUS_VOCAB}BitstringStatusListEntry",
        "@context": {
            "@protected": True,
            "id": "@id",
            "type": "@type",
            "statusPurpose": f"{STATUS_VOCAB}statusPurpose",
            "statusListIndex": f"{STATUS_VOCAB}statusListIndex",
            "statusListCredential": {"@id": f"{STATUS_VOCAB}statusListCredential", "@type": "@id"},
        },
    }
    return {"@context": terms}


def status_context_url(issuer_base_url: str) -> str:
    """Where the issuer serves the context of its status list credentials."""
    return f"{issuer_base_url.rstrip('/')}/v1/aries/contexts/status/1"


def status_list_contexts(issuer_base_url: str) -> list[list[str]]:
    """The ``@context`` lists a status list credential of that issuer may have (one per suite):
    credentials v1, the issuer's status context, the suite's context."""
    return [[CREDENTIALS_V1, status_context_url(issuer_base_url), suite] for suite in (BBS_V1, ED25519_2020)]


def embeds_context(value: Any, depth: int = 0) -> bool:
    """Whether an ``@context`` appears anywhere inside ``value`` (or it nests too deep to tell)."""
    if depth > 64:
        return True
    if isinstance(value, dict):
        return "@context" in value or any(embeds_context(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(embeds_context(v, depth + 1) for v in value)
    return False


def contexts_document(types: Iterable[CredentialType], issuer_base_url: str) -> dict[str, Any]:
    """``{context URL: context document}`` for the agents' pre-cache file (types and status list)."""
    from .status import status_context

    documents = {context_url(issuer_base_url, t): generate_context(t) for t in types}
    documents[status_context_url(issuer_base_url)] = status_context()
    return documents


def status_entry(list_url: str, index: int, purpose: str = "revocation") -> dict[str, Any]:
    """A W3C Bitstring Status List entry pointing at bit ``index`` of the list credential ``list_url``."""
    if index < 0:
        raise AriesError("bad_status_index", "status list index must be non-negative")
    return {
        "id": f"{list_url}#{index}",
        "type": "BitstringStatusListEntry",
        "statusPurpose": purpose,
        "statusListIndex": str(index),
        "statusListCredential": list_url,
    }


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_credential(ctype: CredentialType, claims: dict[str, Any], *, issuer_did: str, issuer_base_url: str,
                     proof_type: str, issued_at: dt.datetime | None = None,
                     status: dict[str, Any] | None = None, credential_id: str | None = None) -> dict[str, Any]:
    """A W3C VC JSON-LD credential of ``ctype`` with ``claims`` as its ``credentialSubject``.

    ``claims`` are validated against the type's schema first (the same check as the OpenID4VC
    channel). ACA-Py sets ``credentialSubject.id`` to the holder DID the wallet sends in its request.
    """
    problems = ctype.validate_claims(claims)
    if problems:
        raise AriesError("claims_invalid", "; ".join(f"{p.path}: {p.message}" for p in problems[:5]))
    issued_at = issued_at or dt.datetime.now(dt.UTC)
    credential: dict[str, Any] = {
        "@context": credential_contexts(context_url(issuer_base_url, ctype), proof_type),
        "id": credential_id or f"urn:uuid:{uuid.uuid4()}",
        "type": ["VerifiableCredential", credential_type_name(ctype)],
        "issuer": issuer_did,
        "issuanceDate": _iso(issued_at),
        "expirationDate": _iso(ctype.expires_at(issued_at)),
        "credentialSubject": dict(claims),
    }
    if status is not None:
        credential["credentialStatus"] = status
    return credential
