"""Fast checks of the Aries channel's pure parts (no agent): contexts, credentials, status lists,
webhook parsing, the runner's command line and the presentation policies on crafted records."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aries import webhooks
from aries.client import BBS
from aries.errors import AriesError, VerificationFailed, WebhookRefused
from aries.jsonld import (
    BBS_V1,
    CREDENTIALS_V1,
    build_credential,
    context_url,
    contexts_document,
    credential_contexts,
    generate_context,
    schema_terms,
    status_entry,
)
from aries.presentation import build_proof_request, check_presentation
from aries.runner import AgentConfig, build_command, postgres_storage
from aries.status import decode_list, encode_list, get_bit, read_status, set_bit
from credential_schemas import load_builtin_types

TYPES = load_builtin_types()
DIPLOMA = TYPES["university-diploma"]


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


@pytest.mark.parametrize("type_id", sorted(TYPES))
def test_every_schema_property_is_defined_in_the_generated_context(type_id: str) -> None:
    ctype = TYPES[type_id]
    context = generate_context(ctype)["@context"]
    assert context["@protected"] is True
    for term in schema_terms(ctype.json_schema):
        assert context[term]["@id"] == ctype.vct.split("#")[0] + "#" + term
    # $defs reached through $ref (padró household members) are covered too.
    if type_id == "padro":
        assert {"givenName", "familyName", "18", "65"} <= set(context)


def test_contexts_document_holds_a_versioned_url_per_type_and_the_status_context() -> None:
    docs = contexts_document(TYPES.values(), "http://127.0.0.1:8001/")
    assert "http://127.0.0.1:8001/v1/aries/contexts/university-diploma/1.0" in docs
    assert "http://127.0.0.1:8001/v1/aries/contexts/status/1" in docs


def test_credential_is_built_from_the_type_and_refuses_invalid_claims() -> None:
    claims = {"name": "A", "personalIdentifier": "12345678Z", "title": "T", "qualificationCode": "2500001",
              "degreeType": "bachelor", "eqfLevel": 6, "awardingBody": "UB", "completionDate": "2020-06-30",
              "awardingDate": "2020-09-01", "countryOfAward": "ES", "registrationNumber": "R"}
    at = dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC)
    vc = build_credential(DIPLOMA, claims, issuer_did="did:key:zUC7", issuer_base_url="https://iss.example",
                          proof_type="BbsBlsSignature2020", issued_at=at,
                          status=status_entry("https://iss.example/v1/aries/status/1", 4))
    assert vc["type"] == ["VerifiableCredential", "UniversityDiplomaCredential"]
    assert vc["@context"][1] == "https://iss.example/v1/aries/contexts/university-diploma/1.0"
    assert vc["issuanceDate"] == "2026-01-31T12:00:00Z" and vc["expirationDate"] == "2031-01-31T12:00:00Z"
    assert vc["credentialStatus"]["statusListIndex"] == "4"
    # Every key the credential uses is defined by one of its contexts (ours or the W3C/BBS ones).
    ours = set(generate_context(DIPLOMA)["@context"])
    assert set(vc["credentialSubject"]) <= ours
    with pytest.raises(AriesError) as bad:
        build_credential(DIPLOMA, {**claims, "eqfLevel": "six"}, issuer_did="did:key:z", issuer_base_url="https://i",
                         proof_type="BbsBlsSignature2020")
    assert bad.value.code == "aries.claims_invalid" and "six" not in bad.value.detail


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(min_value=0, max_value=131_071), max_size=20))
def test_status_list_round_trip(indexes: set[int]) -> None:
    bits = bytearray(131_072 // 8)
    for i in indexes:
        set_bit(bits, i, True)
    decoded = decode_list(encode_list(bytes(bits)))
    assert all(get_bit(decoded, i) == (i in indexes) for i in [*indexes, 0, 131_071])


@pytest.mark.parametrize("encoded", [None, 5, "", "zabc", "u!!!", "uAAAA", "u" + "A" * 7])
def test_malformed_encoded_lists_raise_typed_errors(encoded: Any) -> None:
    with pytest.raises(AriesError) as err:
        decode_list(encoded)
    assert err.value.code == "aries.bad_status_list"


def test_read_status_checks_the_entry_belongs_to_the_list() -> None:
    bits = bytearray(16)
    set_bit(bits, 3, True)
    url = "https://iss.example/v1/aries/status/1"
    lst = {"id": url, "credentialSubject": {"statusPurpose": "revocation", "encodedList": encode_list(bytes(bits))}}
    assert read_status(lst, status_entry(url, 3)) is True
    assert read_status(lst, status_entry(url, 4)) is False
    for entry, code in [(status_entry(url + "x", 3), "aries.status_list_mismatch"),
                        (status_entry(url, 3, "suspension"), "aries.status_list_mismatch"),
                        ({**status_entry(url, 3), "statusListIndex": "x"}, "aries.bad_status_entry"),
                        (status_entry(url, 999), "aries.bad_status_index"),
                        ({"type": "StatusList2021Entry"}, "aries.bad_status_entry")]:
        with pytest.raises(AriesError) as err:
            read_status(lst, entry)
        assert err.value.code == code


def test_webhook_parsing_and_authentication() -> None:
    body = json.dumps({"cred_ex_record": {"cred_ex_id": "c1", "thread_id": "t1", "state": "done"}}).encode()
    event = webhooks.receive({"x-api-key": "k"}, "issue_credential_v2_0", body, "k")
    assert (event.record_id, event.thread_id, event.state, event.key) == ("c1", "t1", "done",
                                                                        "issue_credential_v2_0:t1:done")
    for headers, topic, payload, code in [
        ({}, "present_proof_v2_0", b"{}", "aries.webhook_unauthorized"),
        ({"x-api-key": "K"}, "present_proof_v2_0", b"{}", "aries.webhook_unauthorized"),
        ({"x-api-key": "k"}, "../etc", b"{}", "aries.webhook_bad_topic"),
        ({"x-api-key": "k"}, "present_proof_v2_0", b"[1]", "aries.webhook_bad_json"),
        ({"x-api-key": "k"}, "present_proof_v2_0", b"\xff", "aries.webhook_bad_json"),
        ({"x-api-key": "k"}, "issue_credential_v2_0", b'{"cred_ex_record": 3}', "aries.webhook_bad_payload"),
    ]:
        with pytest.raises(WebhookRefused) as err:
            webhooks.receive(headers, topic, payload, "k")
        assert err.value.code == code


def test_runner_keeps_secrets_off_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "aca-py"
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setenv("CARTERA_ACAPY_BIN", str(fake))
    config = AgentConfig(name="a", data_dir=tmp_path, inbound_port=1, admin_port=2, webhook_url="http://h/w",
                         webhook_api_key="hook-secret", postgres_url="postgresql://u:p%40ss@db:5433/x",
                         contexts_file=tmp_path / "c.json")
    args, env = build_command(config)
    line = " ".join(args)
    for secret in (config.admin_api_key, config.wallet_key, "hook-secret", "p@ss"):
        assert secret not in line
    assert "--no-ledger" in args and args[args.index("--wallet-key-derivation-method") + 1] == "kdf:argon2i:int"
    assert args[args.index("--admin") + 1] == "127.0.0.1"
    assert env["ACAPY_WEBHOOK_URL"] == "http://h/w#hook-secret"
    assert json.loads(env["ACAPY_WALLET_STORAGE_CREDS"])["password"] == "p@ss"
    assert json.loads(postgres_storage("postgresql://u:p@db/x")[0])["url"] == "db:5432"
    with pytest.raises(AriesError):
        postgres_storage("mysql://u:p@db/x")


def test_proof_request_shape() -> None:
    request = build_proof_request(DIPLOMA, ["title", "awardingBody"], domain="v.example")
    descriptor = request.presentation_definition["input_descriptors"][0]
    assert descriptor["constraints"]["limit_disclosure"] == "required"
    holder_ids = descriptor["constraints"]["is_holder"][0]["field_id"]
    field = next(f for f in descriptor["constraints"]["fields"] if f["id"] == holder_ids[0])
    assert field["path"] == ["$.credentialSubject.id"]
    import uuid
    assert uuid.UUID(holder_ids[0]).version == 4
    for bad, code in [([], "aries.no_claims"), (["salary"], "aries.unknown_claim")]:
        with pytest.raises(VerificationFailed) as err:
            build_proof_request(DIPLOMA, bad, domain="v.example")
        assert err.value.code == code


def _record(request: Any, **changes: Any) -> dict[str, Any]:
    """A record shaped as ACA-Py's for an honest BBS+ answer (issuer base https://i.example/t/ub)."""
    holder, base = "did:key:zHolder", "https://i.example/t/ub"
    vc = {"@context": credential_contexts(context_url(base, DIPLOMA), BBS),
          "type": ["VerifiableCredential", "UniversityDiplomaCredential"], "issuer": "did:key:zIssuer",
          "issuanceDate": "2026-01-01T00:00:00Z", "expirationDate": "2031-01-01T00:00:00Z",
          "credentialSubject": {"id": holder, "title": "T", "awardingBody": "UB"},
          "credentialStatus": status_entry(f"{base}/v1/aries/status/L1/bbs", 3),
          "proof": {"type": "BbsBlsSignatureProof2020"}}
    vc.update(changes.pop("vc", {}))
    proof = {"challenge": request.challenge, "verificationMethod": f"{holder}#k"}
    proof.update(changes.pop("proof", {}))
    submission = {"id": "s", "definition_id": request.presentation_definition["id"],
                  "descriptor_map": [{"id": DIPLOMA.id, "format": "ldp_vc", "path": "$.verifiableCredential[0]"}]}
    vp = {"@context": [CREDENTIALS_V1, BBS_V1], "type": ["VerifiablePresentation"], "verifiableCredential": [vc],
          "presentation_submission": submission, "proof": proof}
    record = {"state": "done", "verified": "true", "by_format": {"pres": {"dif": vp}}}
    record.update(changes)
    return record


async def _not_revoked(entry: dict[str, Any], issuer: str) -> bool:
    return False


@pytest.mark.parametrize(("changes", "code"), [
    ({"verified": "false"}, "aries.signature_invalid"),
    ({"state": "abandoned"}, "aries.signature_invalid"),  # abandoned by the agent on what it received
    ({"state": "abandoned", "by_format": {"pres_request": {}}}, "aries.declined"),  # nothing was presented
    ({"state": "abandoned", "by_format": {}}, "aries.declined"),
    ({"proof": {"challenge": "other"}}, "aries.challenge_mismatch"),
    ({"proof": {"domain": "evil.example"}}, "aries.domain_mismatch"),
    ({"proof": {"verificationMethod": "did:key:zSomeoneElse#k"}}, "aries.holder_mismatch"),
    ({"vc": {"issuer": "did:key:zStranger"}}, "aries.untrusted_issuer"),
    ({"vc": {"type": ["VerifiableCredential", "PadroCredential"]}}, "aries.wrong_type"),
    ({"vc": {"proof": {"type": "BbsBlsSignature2020"}}}, "aries.not_derived"),
    ({"vc": {"expirationDate": "2026-01-02T00:00:00Z"}}, "aries.expired"),
    ({"vc": {"expirationDate": "yesterday"}}, "aries.bad_credential"),
    ({"vc": {"issuanceDate": "2026-12-01T00:00:00Z"}}, "aries.not_yet_valid"),
    ({"vc": {"credentialSubject": {"id": "did:key:zHolder", "title": "T"}}}, "aries.disclosure_mismatch"),
    ({"vc": {"credentialSubject": {"id": "did:key:zHolder", "title": "T", "awardingBody": "UB", "name": "A"}}},
     "aries.disclosure_mismatch"),
    ({}, "aries.status_unchecked"),  # a status and no lookup to read it
    ({"by_format": {}}, "aries.bad_presentation"),
])
def test_policies_refuse_crafted_presentations(changes: dict[str, Any], code: str) -> None:
    import asyncio
    request = build_proof_request(DIPLOMA, ["title", "awardingBody"], domain="v.example")
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    lookup = None if code == "aries.status_unchecked" else _not_revoked
    with pytest.raises(VerificationFailed) as err:
        asyncio.run(check_presentation(_record(request, **changes), request, trusted_issuers={"did:key:zIssuer"},
                                       status_lookup=lookup, now=now))
    assert err.value.code == code


def test_policies_accept_and_report_only_requested_claims() -> None:
    import asyncio
    request = build_proof_request(DIPLOMA, ["title", "awardingBody"], domain="v.example")
    result = asyncio.run(check_presentation(_record(request, proof={"domain": "v.example"}), request,
                                            trusted_issuers={"did:key:zIssuer"}, status_lookup=_not_revoked,
                                            now=dt.datetime(2026, 6, 1, tzinfo=dt.UTC)))
    assert result.claims == {"title": "T", "awardingBody": "UB"}


def test_shared_agent_lock_picks_one_owner_and_publishes_no_secret(tmp_path: Path) -> None:
    from aries.service import SharedAgentLock, derive_admin_key, derive_wallet_key

    first, second = SharedAgentLock(tmp_path), SharedAgentLock(tmp_path)
    # flock is per open file: two lock objects in one process compete exactly as two workers do.
    assert first.try_acquire() and not second.try_acquire()
    assert second.published() is None
    first.publish("http://127.0.0.1:8021", "nonce-1", 4242)
    published = second.published()
    assert published == {"admin_url": "http://127.0.0.1:8021", "start_id": "nonce-1", "agent_pid": 4242}
    master = b"m" * 32
    key = derive_admin_key(master, "cartera-issuer", "nonce-1")
    assert key not in (tmp_path / "agent.json").read_text()
    assert key == derive_admin_key(master, "cartera-issuer", "nonce-1")  # every worker derives the same
    assert key != derive_admin_key(master, "cartera-issuer", "nonce-2")  # and a new one per start
    assert key != derive_wallet_key(master, "cartera-issuer")
    first.release()  # an owner stopping cleanly withdraws the agent and lets another take over
    assert second.published() is None and second.try_acquire()
    (tmp_path / "agent.json").write_text("{not json")
    assert second.published() is None
    second.release()


def test_the_cleanup_removes_settled_records_and_only_old_orphans() -> None:
    """A finished record is removed when its exchange is settled on our side; one we have no row for
    only once a day old (a worker may still be about to adopt a fresh one); one still open never."""
    from aries.cleanup import ORPHAN_AGE, removable

    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    old = (now - ORPHAN_AGE - dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    fresh = (now - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    records = [{"pres_ex_id": "settled", "updated_at": fresh}, {"pres_ex_id": "open", "updated_at": old},
               {"pres_ex_id": "old-orphan", "updated_at": old}, {"pres_ex_id": "fresh-orphan", "updated_at": fresh},
               {"pres_ex_id": "undated-orphan"}, {"pres_ex_id": "bad-date", "updated_at": "yesterday"}, {}]
    assert removable(records, "pres_ex_id", settled={"settled"}, known={"settled", "open"}, now=now) == [
        "settled", "old-orphan"]
    # Issued but never acknowledged by the holder: settled for the issuer at once, removed a day on.
    issued = [{"cred_ex_id": "fresh", "state": "credential-issued", "updated_at": fresh},
              {"cred_ex_id": "old", "state": "credential-issued", "updated_at": old}]
    assert removable(issued, "cred_ex_id", settled={"fresh", "old"}, known={"fresh", "old"}, now=now) == ["old"]


@pytest.mark.parametrize(("failure", "maybe_done"), [
    (httpx.ConnectError("refused"), False), (httpx.ConnectTimeout("no connection"), False),
    (httpx.PoolTimeout("no free connection"), False), (httpx.ReadTimeout("answer lost"), True),
    (httpx.RemoteProtocolError("connection dropped mid-answer"), True)])
def test_an_admin_call_that_may_have_reached_the_agent_says_so(failure: Exception, maybe_done: bool) -> None:
    """The issuer withdraws a record whose offer call failed only when nothing can have been sent."""
    from aries.client import AdminClient
    from aries.errors import AgentUnavailable

    def fail(request: httpx.Request) -> httpx.Response:
        raise failure

    async def call() -> AgentUnavailable:
        client = AdminClient("http://127.0.0.1:9", "key")
        client._client = httpx.AsyncClient(transport=httpx.MockTransport(fail))
        try:
            with pytest.raises(AgentUnavailable) as raised:
                await client.request("POST", "/issue-credential-2.0/send-offer", json={})
        finally:
            await client.aclose()
        return raised.value

    assert asyncio.run(call()).maybe_done is maybe_done


@pytest.mark.parametrize(("admin_key", "webhook_key", "says"), [
    (None, "w", "admin API key"),
    ("k", None, "webhook key"),
    ("k", "", "webhook key"),
])
def test_an_external_agent_without_its_keys_is_refused_at_start(tmp_path: Path, admin_key: str | None,
                                                                webhook_key: str | None, says: str) -> None:
    """An agent run elsewhere configured without its webhook key started silently and refused every
    webhook (401): no exchange ever moved. Like a missing admin key, the service does not start."""
    from aries.service import start_runtime

    with pytest.raises(AriesError) as refused:
        asyncio.run(start_runtime(name="t", label="t", admin_url="http://127.0.0.1:9", admin_api_key=admin_key,
                                  webhook_key=webhook_key, data_dir=tmp_path, inbound_port=1, admin_port=1,
                                  endpoint="", webhook_url="", master_key=b"\0" * 32))
    assert refused.value.code == "aries.agent_misconfigured" and says in refused.value.detail


def test_a_verifier_with_an_external_agent_and_no_webhook_key_does_not_start(tmp_path: Path) -> None:
    import secrets

    from fastapi import FastAPI

    from verifier.aries_channel import VerifierAriesChannel
    from verifier.settings import VerifierSettings

    settings = VerifierSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'v.db'}", dev_mode=True,
                                master_key=secrets.token_hex(32), data_dir=tmp_path, aries_enabled=True,
                                aries_admin_url="http://127.0.0.1:9", aries_admin_api_key="admin-key")

    async def start() -> None:
        async with VerifierAriesChannel(settings, None, None).lifespan(FastAPI()):
            pass

    with pytest.raises(AriesError) as refused:
        asyncio.run(start())
    assert refused.value.code == "aries.agent_misconfigured"


def test_the_stored_event_key_fits_its_column_and_keeps_long_keys_apart() -> None:
    short = webhooks.parse("connections", json.dumps({"connection_id": "c", "thread_id": "t", "state": "active"}).encode())
    assert short.stored_key == short.key == "connections:t:active"
    long_a, long_b = (webhooks.parse("connections", json.dumps(
        {"connection_id": "c", "thread_id": "x" * 500 + tail, "state": "active"}).encode()) for tail in ("a", "b"))
    assert len(long_a.stored_key) == len(long_b.stored_key) == webhooks.MAX_STORED_KEY
    assert long_a.stored_key != long_b.stored_key  # cut alone, they were one key
