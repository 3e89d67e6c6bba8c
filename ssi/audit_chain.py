"""Tamper-evident audit chains: hash-linked entries, signed checkpoints, inclusion proofs, offline checks.

Format (version 1; docs/security.md, "Audit chain format"):

* **Canonical bytes** of a JSON value: UTF-8 JSON with keys sorted, no whitespace, non-ASCII kept,
  NaN/Infinity refused (:func:`canonical`). For the values used here (strings, integers, booleans,
  null, lists and objects with ASCII member names) this is the RFC 8785 (JCS) serialisation. JSON
  was chosen over length-prefixed fields because an entry's content is itself a JSON document (a
  history entry's details, an issuance record) and an export must be checkable by any JSON tool.
* **Content digest** ``digest = SHA-256("cartera-audit/v1/content" 0x00 || salt || canonical(content))``
  with a random 16-byte ``salt`` (base64url in exports): the digest may sit in clear beside a
  sealed content (the wallet's history) without letting anyone test guesses of low-entropy values
  such as a birth date.
* **Entry** ``{"v": 1, "chain", "seq", "id", "kind", "at", "digest"}``; ``seq`` counts from 1 with
  no gap; ``at`` is the event time in ISO 8601 UTC.
* **Entry hash** ``hash = SHA-256("cartera-audit/v1/entry" 0x00 || prev || canonical(entry))`` where
  ``prev`` is the previous entry's hash as 32 raw bytes (32 zero bytes before the first). ``prev``
  has a fixed length, so the concatenation is unambiguous; the labels separate the two hash uses
  (and any later version) from each other. Hashes are written as lowercase hex.
* **Checkpoint**: a compact JWS, ``typ: cartera-audit-checkpoint+jwt``, over
  ``{"v": 1, "chain", "seq", "head", "iat"}`` (``head`` = the hash of entry ``seq``), signed by the
  service's key (the wallet service key, the issuer tenant's signing key).
* **Inclusion proof** of entry ``s``: its ``prev`` hash, the entry itself, every later entry up to
  the first checkpoint at or after ``s`` (their public fields: digests, never contents) and that
  checkpoint. Recomputing the hashes from ``prev`` must give the checkpoint's ``head``. A linear
  proof keeps the format obvious; checkpoints are frequent, so proofs stay short.

This module is framework-free; storage lives in :mod:`service_kit.audit`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .encoding import b64url_decode, b64url_encode
from .errors import EncodingError, JOSEError, SSIError
from .jose import DEFAULT_ALGORITHMS, Key, parse_jws, sign_jws, verify_parsed

VERSION = 1
CHECKPOINT_TYP = "cartera-audit-checkpoint+jwt"
GENESIS = "0" * 64
_CONTENT_LABEL = b"cartera-audit/v1/content\x00"
_ENTRY_LABEL = b"cartera-audit/v1/entry\x00"
_HEX = frozenset("0123456789abcdef")
ENTRY_FIELDS = ("chain", "seq", "id", "kind", "at", "digest")


class AuditError(SSIError):
    """A malformed or inconsistent audit chain, proof or checkpoint (codes ``audit.*``)."""

    area = "audit"


def canonical(value: Any) -> bytes:
    """The canonical bytes of a JSON value (sorted keys, compact, UTF-8); floats must be finite."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise AuditError("not_json", f"the value has no canonical JSON form: {type(exc).__name__}") from exc


def new_salt() -> str:
    """A fresh random content salt (16 bytes, base64url)."""
    return b64url_encode(secrets.token_bytes(16))


def _salt_bytes(salt: str) -> bytes:
    try:
        raw = b64url_decode(salt)
    except (EncodingError, TypeError) as exc:
        raise AuditError("bad_salt", "the salt is not base64url") from exc
    if len(raw) != 16:
        raise AuditError("bad_salt", "the salt is not 16 bytes")
    return raw


def content_digest(content: Any, salt: str) -> str:
    """The salted digest committing to an entry's content (hex)."""
    return hashlib.sha256(_CONTENT_LABEL + _salt_bytes(salt) + canonical(content)).hexdigest()


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def entry_body(chain: str, seq: int, entry_id: str, kind: str, at: str, digest: str) -> dict[str, Any]:
    """The hashed public fields of one entry."""
    return {"v": VERSION, "chain": chain, "seq": seq, "id": entry_id, "kind": kind, "at": at, "digest": digest}


def entry_hash(prev: str, body: Mapping[str, Any]) -> str:
    """``SHA-256(label || prev (32 bytes) || canonical(body))`` as hex."""
    if not _is_hash(prev):
        raise AuditError("bad_hash", "a previous hash is 64 lowercase hex characters")
    return hashlib.sha256(_ENTRY_LABEL + bytes.fromhex(prev) + canonical(dict(body))).hexdigest()


def entry_hash_parts(chain: str, entry_id: str, kind: str, at: str, digest: str) -> tuple[bytes, bytes, bytes]:
    """The bytes an entry's hash covers, split where ``prev`` and ``seq`` go, for a store that assigns
    both inside one SQL statement: ``SHA-256(label || prev (32 bytes) || before || str(seq) || after)``
    equals :func:`entry_hash` of :func:`entry_body` with that ``seq``. Returns ``(label, before,
    after)``."""
    sentinel = 987654321
    encoded = canonical(entry_body(chain, sentinel, entry_id, kind, at, digest))
    # Inside a JSON string a quote is escaped, so the bare ',"seq":N,' only occurs as the member itself.
    marker = b',"seq":%d,' % sentinel
    if encoded.count(marker) != 1:
        raise AuditError("bad_entry", "the entry's canonical form has no single seq member")
    before, after = encoded.split(marker)
    return _ENTRY_LABEL, before + b',"seq":', b"," + after


def entry_body_of(item: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed fields of an exported entry, checked for type (``bad_entry`` otherwise): the check
    :func:`verify_chain` makes of each entry, for callers that walk a chain page by page."""
    try:
        chain, seq, entry_id, kind, at, digest = (item[name] for name in ENTRY_FIELDS)
    except (KeyError, TypeError) as exc:
        raise AuditError("bad_entry", f"an entry lacks one of {', '.join(ENTRY_FIELDS)}") from exc
    if not (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1):
        raise AuditError("bad_entry", "seq is a positive integer")
    if not all(isinstance(v, str) for v in (chain, entry_id, kind, at)) or not _is_hash(digest):
        raise AuditError("bad_entry", "chain, id, kind, at are strings and digest a hex hash")
    return entry_body(chain, seq, entry_id, kind, at, digest)


# -- checkpoints -----------------------------------------------------------------------------------

def sign_checkpoint(key: Key, *, chain: str, seq: int, head: str, iat: int, issuer: str | None = None) -> str:
    """A signed checkpoint (compact JWS) stating that entry ``seq`` of ``chain`` has hash ``head``."""
    payload: dict[str, Any] = {"v": VERSION, "chain": chain, "seq": seq, "head": head, "iat": iat}
    if issuer:
        payload["iss"] = issuer
    header: dict[str, Any] = {"alg": key.alg, "typ": CHECKPOINT_TYP}
    if key.kid:
        header["kid"] = key.kid
    return sign_jws(header, payload, key)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint whose signature checked out."""

    chain: str
    seq: int
    head: str
    iat: int
    kid: str | None
    token: str


def read_checkpoint(token: str) -> dict[str, Any]:
    """The payload of a checkpoint, unverified (for display and for picking the key); typed errors."""
    try:
        payload = parse_jws(token).json_payload()
    except SSIError as exc:
        raise AuditError("bad_checkpoint", f"not a checkpoint JWS ({exc.code})") from exc
    if not isinstance(payload, dict):
        raise AuditError("bad_checkpoint", "the checkpoint payload is not an object")
    return payload


def verify_checkpoint(token: Any, keys: Sequence[Key], *,
                      algorithms: Sequence[str] = DEFAULT_ALGORITHMS) -> Checkpoint:
    """Check a checkpoint's type and signature against ``keys`` (by ``kid`` when present)."""
    if not isinstance(token, str):
        raise AuditError("bad_checkpoint", "a checkpoint is a compact JWS string")
    try:
        jws = parse_jws(token)
        payload = jws.json_payload()
    except SSIError as exc:
        raise AuditError("bad_checkpoint", f"not a checkpoint JWS ({exc.code})") from exc
    if jws.header.get("typ") != CHECKPOINT_TYP:
        raise AuditError("bad_checkpoint", f"typ is not {CHECKPOINT_TYP}")
    kid = jws.header.get("kid")
    candidates = [k for k in keys if kid is None or k.kid is None or k.kid == kid]
    for key in candidates:
        try:
            verify_parsed(jws, key, algorithms)
        except JOSEError:
            continue
        break
    else:
        raise AuditError("bad_signature", "no given key verifies the checkpoint signature")
    if not isinstance(payload, dict) or payload.get("v") != VERSION:
        raise AuditError("bad_checkpoint", "unknown checkpoint version")
    chain, seq, head, iat = payload.get("chain"), payload.get("seq"), payload.get("head"), payload.get("iat")
    if not (isinstance(chain, str) and isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1
            and _is_hash(head) and isinstance(iat, int) and not isinstance(iat, bool)):
        raise AuditError("bad_checkpoint", "chain, seq, head and iat are required and well-typed")
    return Checkpoint(chain=chain, seq=seq, head=head, iat=iat, kid=kid if isinstance(kid, str) else None, token=token)


def keys_from_jwks(document: Any) -> list[Key]:
    """The public keys of a JWKS, or of a document holding one under ``jwks`` (JWT VC issuer metadata)."""
    if isinstance(document, dict) and isinstance(document.get("jwks"), dict):
        document = document["jwks"]
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise AuditError("bad_jwks", "a JWKS is an object with a keys array")
    keys = []
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            raise AuditError("bad_jwks", "a JWKS key is an object")
        public = {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
        try:
            keys.append(Key.from_jwk(public))
        except SSIError as exc:
            raise AuditError("bad_jwks", f"unusable key in the JWKS ({exc.code})") from exc
    if not keys:
        raise AuditError("bad_jwks", "the JWKS holds no key")
    return keys


# -- inclusion proofs ------------------------------------------------------------------------------

def inclusion_proof(entries: Sequence[Mapping[str, Any]], seq: int, checkpoint: str) -> dict[str, Any]:
    """The proof that entry ``seq`` is in the chain: ``entries`` are the stored entries (public fields
    plus ``prev_hash``) from ``seq`` up to the checkpoint's ``seq``, in order."""
    if not entries or entries[0].get("seq") != seq:
        raise AuditError("bad_proof", "the entries must start at the proven entry")
    return {"v": VERSION, "prev_hash": entries[0]["prev_hash"],
            "entry": {name: entries[0][name] for name in ENTRY_FIELDS},
            "following": [{name: e[name] for name in ENTRY_FIELDS} for e in entries[1:]],
            "checkpoint": checkpoint}


def verify_inclusion(proof: Any, keys: Sequence[Key], *, content: Any = None, salt: str | None = None) -> Checkpoint:
    """Check an inclusion proof; with ``content`` and ``salt`` also that the entry commits to them.

    Returns the verified checkpoint the proof ends at."""
    if not isinstance(proof, dict) or not isinstance(proof.get("following"), list):
        raise AuditError("bad_proof", "a proof has prev_hash, entry, following and checkpoint")
    checkpoint = verify_checkpoint(proof.get("checkpoint"), keys)
    first = entry_body_of(proof.get("entry") if isinstance(proof.get("entry"), dict) else {})
    if first["chain"] != checkpoint.chain:
        raise AuditError("bad_proof", "the entry belongs to another chain than the checkpoint")
    if content is not None and salt is not None and content_digest(content, salt) != first["digest"]:
        raise AuditError("content_mismatch", "the content does not match the entry's digest")
    head = entry_hash(proof.get("prev_hash"), first) if _is_hash(proof.get("prev_hash")) else None
    if head is None:
        raise AuditError("bad_proof", "prev_hash is not a hash")
    seq = first["seq"]
    for item in proof["following"]:
        body = entry_body_of(item if isinstance(item, dict) else {})
        if body["seq"] != seq + 1 or body["chain"] != first["chain"]:
            raise AuditError("bad_proof", "the following entries are not consecutive")
        head, seq = entry_hash(head, body), body["seq"]
    if seq != checkpoint.seq or head != checkpoint.head:
        raise AuditError("bad_proof", "the recomputed head does not match the checkpoint")
    return checkpoint


# -- whole-chain verification ----------------------------------------------------------------------

@dataclass
class ChainReport:
    """The outcome of checking a chain: ``ok``, or the first problem found (``code``, ``seq``, ``detail``)."""

    chain: str
    entries: int = 0
    head: str = GENESIS
    checkpoints: int = 0
    last_checkpoint_seq: int = 0
    ok: bool = True
    code: str | None = None
    seq: int | None = None
    entry_id: str | None = None
    detail: str | None = None
    kinds: dict[str, int] = field(default_factory=dict)

    def fail(self, code: str, detail: str, seq: int | None = None, entry_id: str | None = None) -> ChainReport:
        self.ok, self.code, self.detail, self.seq, self.entry_id = False, f"audit.{code}", detail, seq, entry_id
        return self

    def as_dict(self) -> dict[str, Any]:
        """JSON form (API answers, ``cartera audit verify --json``)."""
        return {"ok": self.ok, "chain": self.chain, "entries": self.entries, "head": self.head,
                "checkpoints": self.checkpoints, "last_checkpoint_seq": self.last_checkpoint_seq,
                "kinds": self.kinds, "error": None if self.ok else
                {"code": self.code, "seq": self.seq, "entry_id": self.entry_id, "detail": self.detail}}


def verify_chain(chain: str, entries: Iterable[Any], checkpoints: Iterable[Any], keys: Sequence[Key] | None,
                 *, require_checkpoint: bool = False, require_content: bool = False) -> ChainReport:
    """Recompute every hash of an exported chain and check every checkpoint; stop at the first problem.

    Each entry is a dict with the public fields, ``hash``, and optionally ``prev_hash``, ``content`` and
    ``salt`` (then the digest is recomputed too). ``keys=None`` skips signature checks (the report then
    says nothing about who signed) but still checks that each checkpoint's head matches the chain.
    A checkpoint past the end of the chain means entries were removed (a truncated tail).
    ``require_content``: an entry without its content (the event row was deleted) is a failure."""
    report = ChainReport(chain=chain)
    heads: dict[int, str] = {}
    prev = GENESIS
    for index, item in enumerate(entries, start=1):
        entry_id = item.get("id") if isinstance(item, dict) else None
        try:
            body = entry_body_of(item if isinstance(item, dict) else {})
        except AuditError as exc:
            return report.fail("bad_entry", exc.detail, index, entry_id if isinstance(entry_id, str) else None)
        if body["chain"] != chain:
            return report.fail("wrong_chain", "the entry names another chain", body["seq"], body["id"])
        if body["seq"] != index:
            what = "missing or reordered entries" if body["seq"] > index else "duplicate or reordered entries"
            return report.fail("seq_gap", f"expected seq {index}, found {body['seq']}: {what}", index, body["id"])
        if "prev_hash" in item and item["prev_hash"] != prev:
            return report.fail("broken_link", "prev_hash does not match the previous entry's hash", index, body["id"])
        if require_content and "content" not in item:
            return report.fail("content_missing", "the entry's event is missing", index, body["id"])
        if "content" in item:
            try:
                digest = content_digest(item["content"], item.get("salt") if isinstance(item.get("salt"), str) else "")
            except AuditError as exc:
                return report.fail(exc.code.split(".", 1)[-1], exc.detail, index, body["id"])
            if digest != body["digest"]:
                return report.fail("content_mismatch", "the entry's content does not match its digest", index,
                                   body["id"])
        prev = entry_hash(prev, body)
        if item.get("hash") != prev:
            return report.fail("hash_mismatch", "the recomputed hash differs from the stored one", index, body["id"])
        heads[index] = prev
        report.entries = index
        report.kinds[body["kind"]] = report.kinds.get(body["kind"], 0) + 1
    report.head = prev
    for token in checkpoints:
        try:
            if keys is None:
                payload = read_checkpoint(token)
                cp_chain, cp_seq, cp_head = payload.get("chain"), payload.get("seq"), payload.get("head")
            else:
                checked = verify_checkpoint(token, keys)
                cp_chain, cp_seq, cp_head = checked.chain, checked.seq, checked.head
        except AuditError as exc:
            return report.fail(exc.code.split(".", 1)[-1], exc.detail)
        if cp_chain != chain:
            return report.fail("wrong_chain", "a checkpoint names another chain")
        if not isinstance(cp_seq, int) or cp_seq not in heads:
            return report.fail("truncated", f"a checkpoint covers entry {cp_seq} but the chain has "
                               f"{report.entries}: entries were removed", cp_seq if isinstance(cp_seq, int) else None)
        if heads[cp_seq] != cp_head:
            return report.fail("checkpoint_mismatch", f"the chain's hash at entry {cp_seq} differs from the signed one",
                               cp_seq)
        report.checkpoints += 1
        report.last_checkpoint_seq = max(report.last_checkpoint_seq, cp_seq)
    if require_checkpoint and report.entries and not report.checkpoints:
        return report.fail("no_checkpoint", "the chain has entries but no signed checkpoint")
    return report

