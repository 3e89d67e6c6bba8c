"""End to end over real HTTP: a citizen's logins, a real issuance, a share, a decline and a deletion are
chained by the wallet; the issuer chains the record and its revocation; both chains are proven through
their APIs, exported, verified offline by `cartera audit verify`, and tampering in the databases is
caught by the API check and by the CLI."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cartera.cli import app as cli
from ssi.audit_chain import keys_from_jwks, verify_inclusion
from tests.wallet_api.conftest import bearer, login
from tests.wallet_api.system import System, fresh_citizens, running_system
from tests.wallet_api.test_e2e import make_offer, receive

CITIZENS = fresh_citizens(8)[5:8]  # others' tests use the first ones


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A system of its own: these tests tamper with its databases (and put them back)."""
    with running_system(tmp_path_factory.mktemp("audit-system")) as running:
        yield running


def sql(db: Path, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        rows = connection.execute(statement, params).fetchall()
        connection.commit()
        return rows


def verify_file(tmp: Path, doc: Any, *args: str) -> tuple[int, dict[str, Any]]:
    path = tmp / "export.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    result = CliRunner().invoke(cli, ["audit", "verify", str(path), "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def share(system: System, tokens: dict[str, str], *, approve: bool) -> None:
    request = httpx.post(f"{system.verifier}/v1/requests", headers=system.verifier_headers("ajuntament-barcelona"),
                         json={"template": "grant-application"}).json()
    preview = httpx.post(f"{system.wallet}/v1/presentations", json={"request_uri": request["uri"]},
                         headers=bearer(tokens), timeout=30)
    assert preview.status_code == 201, preview.text
    action = "approve" if approve else "decline"
    answer = httpx.post(f"{system.wallet}/v1/presentations/{preview.json()['presentation_id']}/{action}", json={},
                        headers=bearer(tokens), timeout=30)
    assert answer.status_code == 200, answer.text


def test_wallet_chain_through_the_api_and_the_cli(system: System, tmp_path: Path) -> None:
    citizen = CITIZENS[0]
    login(system.wallet, citizen)
    tokens = login(system.wallet, citizen)
    received = receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", citizen))
    share(system, tokens, approve=True)
    share(system, tokens, approve=False)
    deleted = httpx.delete(f"{system.wallet}/v1/credentials/{received['credential_ids'][0]}", headers=bearer(tokens),
                           timeout=30)
    assert deleted.status_code == 204
    me = bearer(tokens)

    head = httpx.get(f"{system.wallet}/v1/audit/head", headers=me).json()
    assert head["seq"] == 6 and head["checkpoint"]["seq"] == 6
    check = httpx.get(f"{system.wallet}/v1/audit/check", headers=me).json()
    assert check["ok"], check
    assert check["kinds"] == {"login": 2, "receipt": 1, "share": 1, "decline": 1, "deletion": 1}

    # a share's proof, checked with the published keys, commits to exactly what the history shows
    jwks = httpx.get(f"{system.wallet}/v1/audit/jwks").json()  # public: no login
    history = httpx.get(f"{system.wallet}/v1/history", params={"kind": "share"}, headers=me).json()
    proof = httpx.get(f"{system.wallet}/v1/audit/entries/{history[0]['id']}/proof", headers=me).json()
    checkpoint = verify_inclusion(proof, keys_from_jwks(jwks), content=history[0]["details"], salt=proof["salt"])
    # the proof ends at the first checkpoint at or after the share (the background sweep signs them too)
    assert proof["entry"]["seq"] == 4 and 4 <= checkpoint.seq <= 6
    assert len(proof["following"]) == checkpoint.seq - 4
    assert proof["content"] == history[0]["details"]

    # owner only
    other = login(system.wallet, CITIZENS[1])
    assert httpx.get(f"{system.wallet}/v1/audit/entries/{history[0]['id']}/proof", headers=bearer(other)
                     ).status_code == 404
    assert httpx.get(f"{system.wallet}/v1/audit/head").status_code == 401
    spec = httpx.get(f"{system.wallet}/openapi.json").json()
    assert {"/v1/audit/head", "/v1/audit/check", "/v1/audit/export", "/v1/audit/jwks",
            "/v1/audit/entries/{entry_id}/proof"} <= set(spec["paths"])

    exported = httpx.get(f"{system.wallet}/v1/history/export", headers=me)
    assert exported.status_code == 200 and "audit" in exported.json()
    status, report = verify_file(tmp_path, exported.text, "--jwks", f"{system.wallet}/v1/audit/jwks")
    assert status == 0 and report["ok"] and report["entries"] == 6 and report["keys"] == "given"

    # tamper: the share becomes a decline in the database
    row_id = history[0]["id"]
    sql(system.wallet_db, "UPDATE history SET kind = 'decline' WHERE id = ?", row_id)
    try:
        broken = httpx.get(f"{system.wallet}/v1/audit/check", headers=me).json()
        assert not broken["ok"] and broken["error"]["code"] == "audit.event_mismatch"
        assert broken["error"]["entry_id"] == row_id
        status, report = verify_file(tmp_path, httpx.get(f"{system.wallet}/v1/history/export", headers=me).text,
                                     "--jwks", f"{system.wallet}/v1/audit/jwks")
        assert status == 1 and report["error"]["code"] == "audit.event_mismatch"
    finally:
        sql(system.wallet_db, "UPDATE history SET kind = 'share' WHERE id = ?", row_id)
    # tamper: the login entries swap places
    wallet_id = sql(system.wallet_db, "SELECT chain_id FROM audit_entries WHERE entry_id = ?", row_id)[0][0]
    sql(system.wallet_db, "UPDATE audit_entries SET seq = -1 WHERE chain_id = ? AND seq = 1", wallet_id)
    sql(system.wallet_db, "UPDATE audit_entries SET seq = 1 WHERE chain_id = ? AND seq = 2", wallet_id)
    sql(system.wallet_db, "UPDATE audit_entries SET seq = 2 WHERE chain_id = ? AND seq = -1", wallet_id)
    broken = httpx.get(f"{system.wallet}/v1/audit/check", headers=me).json()
    assert not broken["ok"] and broken["error"]["seq"] == 1
    status, report = verify_file(tmp_path, httpx.get(f"{system.wallet}/v1/audit/export", headers=me).json())
    assert status == 1 and report["error"]["seq"] == 1 and report["keys"] == "embedded"


def test_issuer_chain_through_the_admin_api_and_the_cli(system: System, tmp_path: Path) -> None:
    citizen = CITIZENS[2]
    tokens = login(system.wallet, citizen)
    receive(system, tokens, make_offer(system, "aoc-tax", "tax-compliance", citizen))
    admin = system.issuer_headers("aoc-tax")
    records = httpx.get(f"{system.issuer}/v1/credentials", params={"subject": citizen}, headers=admin).json()
    record_id = records["items"][0]["credential_id"]
    revoked = httpx.post(f"{system.issuer}/v1/credentials/{record_id}/revoke", headers=admin)
    assert revoked.status_code == 200, revoked.text

    check = httpx.get(f"{system.issuer}/v1/audit/check", headers=admin).json()
    assert check["ok"], check
    assert check["kinds"]["issued"] >= 1 and check["kinds"]["status"] >= 1
    assert httpx.get(f"{system.issuer}/v1/audit/check").status_code == 401

    slug_meta = f"{system.issuer}/.well-known/jwt-vc-issuer/t/aoc-tax"
    proof = httpx.get(f"{system.issuer}/v1/audit/credentials/{record_id}/proof", headers=admin).json()
    checkpoint = verify_inclusion(proof, keys_from_jwks(httpx.get(slug_meta).json()), content=proof["content"],
                                  salt=proof["salt"])
    assert proof["content"]["subject_identifier"] == citizen and proof["content"]["id"] == record_id
    assert checkpoint.seq >= proof["entry"]["seq"]
    # another tenant cannot see this one's records
    assert httpx.get(f"{system.issuer}/v1/audit/credentials/{record_id}/proof",
                     headers=system.issuer_headers("uni-barcelona")).status_code == 404

    export = httpx.get(f"{system.issuer}/v1/audit/export", headers=admin).json()
    status, report = verify_file(tmp_path, export, "--jwks", slug_meta)
    assert status == 0 and report["ok"], report

    issuer_db = system.wallet_db.parent / "issuer.db"
    for statement, restore, code in [
        ("UPDATE issuance_records SET subject_identifier = '00000000T' WHERE id = ?",
         "UPDATE issuance_records SET subject_identifier = ? WHERE id = ?", "audit.content_mismatch"),
        ("UPDATE issuance_records SET status = 'valid' WHERE id = ?",
         "UPDATE issuance_records SET status = 'revoked' WHERE id = ? AND ? IS NOT NULL", "audit.status_mismatch"),
    ]:
        sql(issuer_db, statement, record_id)
        try:
            broken = httpx.get(f"{system.issuer}/v1/audit/check", headers=admin).json()
            assert not broken["ok"] and broken["error"]["code"] == code, broken
            if code == "audit.content_mismatch":
                tampered = httpx.get(f"{system.issuer}/v1/audit/export", headers=admin).json()
                status, report = verify_file(tmp_path, tampered, "--jwks", slug_meta)
                assert status == 1 and report["error"]["code"] == code
        finally:
            if code == "audit.content_mismatch":
                sql(issuer_db, restore, citizen, record_id)
            else:
                sql(issuer_db, restore, record_id, record_id)
        assert httpx.get(f"{system.issuer}/v1/audit/check", headers=admin).json()["ok"]


def test_cli_refuses_unreadable_input_without_a_traceback(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["audit", "verify", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    (tmp_path / "bad.json").write_text("{not json")
    bad = runner.invoke(cli, ["audit", "verify", str(tmp_path / "bad.json")])
    assert bad.exit_code == 2 and "not valid JSON" in " ".join(bad.output.split())
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    other = runner.invoke(cli, ["audit", "verify", str(tmp_path / "other.json")])
    assert other.exit_code == 2 and "audit chain" in " ".join(other.output.split())
