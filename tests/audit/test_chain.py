"""The audit chain format (ssi.audit_chain): hashes, checkpoints, proofs, and every kind of tampering."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssi.audit_chain import (
    CHECKPOINT_TYP,
    GENESIS,
    AuditError,
    canonical,
    content_digest,
    entry_body,
    entry_hash,
    entry_hash_parts,
    inclusion_proof,
    keys_from_jwks,
    new_salt,
    sign_checkpoint,
    verify_chain,
    verify_checkpoint,
    verify_inclusion,
)
from ssi.jose import Key, sign_jws

KEY = Key.generate("ES256", kid="audit-1")
OTHER = Key.generate("ES256", kid="audit-1")  # same kid, different key: a forger's


def build(n: int, *, chain: str = "wal_1", every: int = 4, key: Key = KEY) -> tuple[list[dict[str, Any]], list[str]]:
    """A chain of ``n`` entries with contents and a checkpoint every ``every`` entries."""
    entries, checkpoints, prev = [], [], GENESIS
    for seq in range(1, n + 1):
        content = {"verifier": "Ajuntament", "purpose": f"p{seq}", "claims": [{"path": ["name"], "value": "Núria"}]}
        salt = new_salt()
        body = entry_body(chain, seq, f"hist_{seq}", "share" if seq % 2 else "receipt",
                          f"2026-11-24T08:00:{seq:02d}.000000+00:00", content_digest(content, salt))
        h = entry_hash(prev, body)
        entries.append({**body, "prev_hash": prev, "hash": h, "content": content, "salt": salt})
        prev = h
        if seq % every == 0:
            checkpoints.append(sign_checkpoint(key, chain=chain, seq=seq, head=h, iat=1_700_000_000 + seq))
    return entries, checkpoints


def check(entries: list[dict[str, Any]], checkpoints: list[str], **kw: Any) -> Any:
    return verify_chain("wal_1", entries, checkpoints, [KEY.public()], require_content=True, **kw)


def test_intact_chain_verifies_and_counts() -> None:
    entries, cps = build(10)
    report = check(entries, cps)
    assert report.ok, report.as_dict()
    assert report.entries == 10 and report.checkpoints == 2 and report.last_checkpoint_seq == 8
    assert report.head == entries[-1]["hash"] and report.kinds == {"share": 5, "receipt": 5}


def test_canonical_form_is_sorted_compact_utf8() -> None:
    assert canonical({"b": 1, "a": ["é", None, True]}) == '{"a":["é",null,true],"b":1}'.encode()
    with pytest.raises(AuditError) as exc:
        canonical({"x": float("nan")})
    assert exc.value.code == "audit.not_json"


def test_digest_is_salted_and_hash_is_domain_separated() -> None:
    content = {"birth_date": "1990-01-01"}
    a, b = new_salt(), new_salt()
    assert content_digest(content, a) != content_digest(content, b)
    body = entry_body("c", 1, "e", "k", "t", content_digest(content, a))
    assert entry_hash(GENESIS, body) != entry_hash("f" * 64, body)
    with pytest.raises(AuditError):
        content_digest(content, "short")


@pytest.mark.parametrize(("mutate", "code"), [
    (lambda e, c: e[3]["content"].update(purpose="changed"), "audit.content_mismatch"),
    (lambda e, c: e[3].update(kind="decline"), "audit.hash_mismatch"),
    (lambda e, c: e[3].update(at="2020-01-01T00:00:00+00:00"), "audit.hash_mismatch"),
    (lambda e, c: e.pop(5), "audit.seq_gap"),
    (lambda e, c: e.__setitem__(slice(2, 4), [e[3], e[2]]), "audit.seq_gap"),
    (lambda e, c: e.insert(4, copy.deepcopy(e[3])), "audit.seq_gap"),
    (lambda e, c: e.__delitem__(slice(6, None)), "audit.truncated"),
    (lambda e, c: e[0].pop("content"), "audit.content_missing"),
    (lambda e, c: e[2].update(prev_hash="a" * 64), "audit.broken_link"),
    (lambda e, c: c.append(sign_checkpoint(OTHER, chain="wal_1", seq=9, head=e[8]["hash"], iat=1)),
     "audit.bad_signature"),
    (lambda e, c: c.append(sign_checkpoint(KEY, chain="wal_1", seq=9, head="b" * 64, iat=1)),
     "audit.checkpoint_mismatch"),
    (lambda e, c: c.append(sign_checkpoint(KEY, chain="wal_2", seq=9, head=e[8]["hash"], iat=1)),
     "audit.wrong_chain"),
    (lambda e, c: c.append(sign_jws({"alg": "ES256", "typ": "JWT"}, {"v": 1}, KEY)), "audit.bad_checkpoint"),
    (lambda e, c: c.append("not a jws"), "audit.bad_checkpoint"),
])
def test_every_tampering_is_detected(mutate: Any, code: str) -> None:
    entries, cps = build(10)
    mutate(entries, cps)
    report = check(entries, cps)
    assert not report.ok and report.code == code, report.as_dict()


def test_recomputed_chain_after_edit_is_caught_by_the_checkpoint() -> None:
    """An attacker without the key rewrites an entry and recomputes every later hash: the signed head
    no longer matches."""
    entries, cps = build(8)
    entries[1]["content"]["purpose"] = "rewritten"
    entries[1]["digest"] = content_digest(entries[1]["content"], entries[1]["salt"])
    prev = entries[0]["hash"]
    for item in entries[1:]:
        item["prev_hash"] = prev
        item["hash"] = prev = entry_hash(prev, entry_body(*(item[k] for k in ("chain", "seq", "id", "kind", "at",
                                                                               "digest"))))
    report = check(entries, cps)
    assert not report.ok and report.code == "audit.checkpoint_mismatch" and report.seq == 4


def test_rewrite_after_the_last_checkpoint_is_only_caught_by_a_newer_checkpoint() -> None:
    entries, cps = build(6, every=4)
    del entries[5]
    assert check(entries, cps).ok  # nothing signed covers entry 6 yet: the documented limit
    entries, cps = build(6, every=3)
    del entries[5]
    assert check(entries, cps).code == "audit.truncated"


def test_require_checkpoint_and_keyless_mode() -> None:
    entries, _ = build(3, every=10)
    assert check(entries, [], require_checkpoint=True).code == "audit.no_checkpoint"
    entries, cps = build(4)
    assert verify_chain("wal_1", entries, cps, None).ok
    forged = [sign_checkpoint(OTHER, chain="wal_1", seq=4, head=entries[3]["hash"], iat=1)]
    assert verify_chain("wal_1", entries, forged, None).ok  # keyless mode checks heads, not signers
    assert not check(entries, forged).ok


def test_checkpoint_fields_and_type() -> None:
    token = sign_checkpoint(KEY, chain="c", seq=3, head="0" * 64, iat=5, issuer="https://wallet.example")
    cp = verify_checkpoint(token, [KEY.public()])
    assert (cp.chain, cp.seq, cp.head, cp.iat, cp.kid) == ("c", 3, "0" * 64, 5, "audit-1")
    from ssi.jose import parse_jws

    assert parse_jws(token).header["typ"] == CHECKPOINT_TYP
    assert parse_jws(token).json_payload()["iss"] == "https://wallet.example"
    for bad in (None, 5, "", "a.b.c"):
        with pytest.raises(AuditError):
            verify_checkpoint(bad, [KEY.public()])


def test_inclusion_proof_round_trip_and_tampering() -> None:
    entries, cps = build(8)
    proof = inclusion_proof(entries[1:4], 2, cps[0])
    cp = verify_inclusion(proof, [KEY.public()], content=entries[1]["content"], salt=entries[1]["salt"])
    assert cp.seq == 4
    for mutate, code in [
        (lambda p: p["entry"].update(kind="decline"), "audit.bad_proof"),
        (lambda p: p["following"].pop(), "audit.bad_proof"),
        (lambda p: p.update(prev_hash="c" * 64), "audit.bad_proof"),
        (lambda p: p.update(checkpoint=sign_checkpoint(OTHER, chain="wal_1", seq=4, head=entries[3]["hash"], iat=1)),
         "audit.bad_signature"),
    ]:
        broken = copy.deepcopy(proof)
        mutate(broken)
        with pytest.raises(AuditError) as exc:
            verify_inclusion(broken, [KEY.public()])
        assert exc.value.code == code
    with pytest.raises(AuditError) as exc:
        verify_inclusion(proof, [KEY.public()], content={"other": 1}, salt=entries[1]["salt"])
    assert exc.value.code == "audit.content_mismatch"


def test_jwks_parsing() -> None:
    keys = keys_from_jwks({"jwks": {"keys": [KEY.public_jwk()]}})
    assert keys[0].kid == "audit-1"
    private = KEY.private_jwk()
    from ssi.errors import JOSEError

    with pytest.raises(JOSEError):  # private members are dropped: only a public key comes back
        _ = keys_from_jwks({"keys": [private]})[0].private_key
    for bad in (None, {}, {"keys": []}, {"keys": [1]}, {"keys": [{"kty": "nope"}]}):
        with pytest.raises(AuditError):
            keys_from_jwks(bad)


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                     max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(index=st.integers(0, 5), field=st.sampled_from(["id", "kind", "at", "digest", "seq", "content", "hash"]),
       value=_JSON)
def test_any_change_to_any_entry_is_detected(index: int, field: str, value: Any) -> None:
    entries, cps = build(6, every=3)
    if entries[index][field] == value:
        return
    entries[index][field] = value
    report = check(entries, cps)
    assert not report.ok and report.code.startswith("audit.")


@settings(max_examples=150, deadline=None)
@given(garbage=st.lists(_JSON, max_size=4), tokens=st.lists(_JSON, max_size=2))
def test_garbage_gives_typed_failures_not_exceptions(garbage: list[Any], tokens: list[Any]) -> None:
    report = verify_chain("wal_1", garbage, tokens, [KEY.public()], require_content=True)
    assert report.ok == (not garbage and not tokens) or report.ok is False
    if not report.ok:
        assert report.code is not None and report.code.startswith("audit.")


@settings(max_examples=150, deadline=None)
@given(proof=st.dictionaries(st.sampled_from(["v", "prev_hash", "entry", "following", "checkpoint"]), _JSON,
                             max_size=5))
def test_garbage_proofs_give_typed_errors(proof: dict[str, Any]) -> None:
    with pytest.raises(AuditError):
        verify_inclusion(proof, [KEY.public()])


@settings(max_examples=200, deadline=None)
@given(chain=st.text(max_size=20), entry_id=st.text(max_size=20), kind=st.text(max_size=10),
       at=st.text(max_size=40), seq=st.integers(min_value=1, max_value=2**40))
def test_hash_parts_rebuild_the_entry_hash_for_any_values(chain: str, entry_id: str, kind: str, at: str,
                                                          seq: int) -> None:
    # What PostgreSQL computes for an issuance appended in one statement (issuer.statements).
    import hashlib

    digest, prev = "ab" * 32, "0f" * 32
    label, before, after = entry_hash_parts(chain, entry_id, kind, at, digest)
    rebuilt = hashlib.sha256(label + bytes.fromhex(prev) + before + str(seq).encode() + after).hexdigest()
    assert rebuilt == entry_hash(prev, entry_body(chain, seq, entry_id, kind, at, digest))
