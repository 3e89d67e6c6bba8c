"""Both OpenID4VCI flows end to end over real HTTP, for every built-in type, verified with the sd-jwt library."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator

import httpx
import pytest

from sandbox.population import DEMO_EVERYTHING, DEMO_PENDING, DEMO_TAX_NEGATIVE
from ssi.jose import Key
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT
from ssi.sd_jwt import SDJWT
from tests.issuer.conftest import IssuerEnv, Sandbox, make_settings, start_issuer
from tests.issuer.helpers import LIMITS, create_offer, verify_with_reference_library, verify_with_ssi
from tests.support.servers import free_port
from tests.support.wallet_client import IssuerError, WalletClient

pytestmark = pytest.mark.anyio

CASES = [("uni-barcelona", "university-diploma"), ("aoc-tax", "tax-compliance"), ("aoc-tax", "working-life"),
         ("ajuntament-girona", "padro")]


@pytest.mark.parametrize(("slug", "type_id"), CASES)
async def test_pre_authorized_flow_issues_each_builtin_type(issuer_env: IssuerEnv, slug: str, type_id: str) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, slug, type_id, DEMO_EVERYTHING)
        result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
    assert len(result.credentials) == 1
    claims = verify_with_ssi(issuer_env, result.credentials[0], result.holder_keys[0])
    assert claims["vct"].endswith(type_id + "/v1")
    assert claims["iss"] == issuer_env.issuer(slug)
    reference = verify_with_reference_library(issuer_env, result.credentials[0], result.holder_keys[0])
    assert reference["iss"] == issuer_env.issuer(slug)
    assert "status" in reference and reference["cnf"]["jwk"]["kty"] == "EC"


@pytest.mark.parametrize(("slug", "type_id"), CASES)
async def test_authorization_code_flow_with_par_issues_for_the_logged_in_citizen(issuer_env: IssuerEnv, slug: str,
                                                                                 type_id: str) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        result = await WalletClient(http).authorize_and_receive(issuer_env.issuer(slug), type_id,
                                                                login_hint=DEMO_EVERYTHING)
        records = (await http.get(f"{issuer_env.url}/v1/credentials", params={"subject": DEMO_EVERYTHING, "type": type_id},
                                  headers=issuer_env.headers(slug))).json()
    claims = verify_with_ssi(issuer_env, result.credentials[0], result.holder_keys[0])
    reference = verify_with_reference_library(issuer_env, result.credentials[0], result.holder_keys[0])
    assert reference["vct"] == claims["vct"]
    identifiers = {claims.get(name) for name in ("personalIdentifier", "nif", "identifier", "holderIdentifier")}
    assert DEMO_EVERYTHING in identifiers or DEMO_EVERYTHING in json.dumps(claims)
    if type_id == "university-diploma":
        assert claims["name"] == "Montserrat Puig Ferrer"
    login = [r for r in records["items"] if r["login"].get("identity_provider") == "valid"]
    assert login and login[0]["login"]["assurance_level"] in ("low", "substantial", "high")


async def test_authorization_code_flow_without_par(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        result = await WalletClient(http).authorize_and_receive(issuer_env.issuer("aoc-tax"), "tax-compliance",
                                                                login_hint=DEMO_TAX_NEGATIVE, use_par=False)
    claims = verify_with_ssi(issuer_env, result.credentials[0], result.holder_keys[0])
    assert claims["complianceStatus"] == "NEGATIVE" and claims["negativeCause"]


async def test_offer_by_value_and_legacy_user_pin(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING, by_reference=False)
        assert "credential_offer=" in offer["offer_uri"]
        wallet = WalletClient(http)
        parsed = await wallet.resolve_offer(offer["offer_uri"])
        code = parsed.grants.pre_authorized_code.pre_authorized_code
        token = await http.post(f"{issuer_env.issuer('aoc-tax')}/token", data={
            "grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": code, "user_pin": offer["tx_code"],
            "client_id": "some-wallet", "resource": "https://elsewhere.example"})
    assert token.status_code == 200, token.text
    assert token.headers["cache-control"] == "no-store"


async def test_batch_issuance_binds_each_copy_to_its_key_with_its_own_status_index(issuer_env: IssuerEnv) -> None:
    keys = [Key.generate("ES256") for _ in range(3)]
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "ajuntament-girona", "padro", DEMO_EVERYTHING)
        result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"], keys=keys)
    assert len(result.credentials) == 3
    seen = set()
    for credential, key in zip(result.credentials, keys, strict=True):
        claims = verify_with_ssi(issuer_env, credential, key)
        assert claims["cnf"]["jwk"]["x"] == key.public_jwk()["x"]
        ref = claims["status"]["status_list"]
        seen.add((ref["uri"], ref["idx"]))
    assert len(seen) == 3
    salts = [SDJWT.parse(c).disclosures[0].salt for c in result.credentials]
    assert len(set(salts)) == 3


async def test_deferred_issuance_when_the_source_is_pending(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_PENDING)
        wallet = WalletClient(http)
        result = await wallet.receive_offer(offer["offer_uri"], offer["tx_code"])
        assert result.transaction_id and result.interval >= 1 and not result.credentials
        done = await wallet.poll_deferred(result, attempts=50, wait=0.1)
        again = await wallet.poll_deferred(result, attempts=1)
        bad = await http.post(result.issuer_metadata["deferred_credential_endpoint"], json={"transaction_id": "nope"},
                              headers={"Authorization": f"Bearer {result.access_token}"})
    assert len(done.credentials) == 1 and again.credentials == done.credentials
    claims = verify_with_ssi(issuer_env, done.credentials[0], result.holder_keys[0])
    assert claims["nif"] == DEMO_PENDING if "nif" in claims else claims["iss"]
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_transaction_id"


async def test_a_delivered_deferred_credential_is_kept_only_for_a_wallets_retries(issuer_env: IssuerEnv) -> None:
    """The transaction row holds the sealed response, every claim of the credential: once delivered it
    is kept only while a wallet that failed to store it may poll again (a day), not for the
    transaction's 30 days."""
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_PENDING)
        wallet = WalletClient(http)
        result = await wallet.receive_offer(offer["offer_uri"], offer["tx_code"])
        database = str(issuer_env.settings.database_url).split("///", 1)[1]
        with sqlite3.connect(database) as db:
            pending = db.execute("SELECT transaction_hash, expires_at FROM deferred_transactions "
                                 "WHERE sealed_response IS NULL").fetchall()
        done = await wallet.poll_deferred(result, attempts=50, wait=0.1)
        again = await wallet.poll_deferred(result, attempts=1)
    assert done.credentials and again.credentials == done.credentials
    with sqlite3.connect(database) as db:
        delivered = dict(db.execute("SELECT transaction_hash, expires_at FROM deferred_transactions "
                                    "WHERE sealed_response IS NOT NULL").fetchall())
    ours = [(tx, waiting) for tx, waiting in pending if tx in delivered]
    assert len(ours) == 1
    tx, waiting_until = ours[0]
    waiting = dt.datetime.fromisoformat(waiting_until).replace(tzinfo=dt.UTC)
    kept = dt.datetime.fromisoformat(delivered[tx]).replace(tzinfo=dt.UTC)
    now = dt.datetime.now(dt.UTC)
    assert waiting - now > dt.timedelta(days=29)
    kept_for = dt.timedelta(seconds=issuer_env.settings.deferred_kept_after_delivery)
    assert kept_for - dt.timedelta(seconds=30) <= kept - now <= kept_for + dt.timedelta(seconds=5), kept


async def test_retry_after_timeout_returns_the_same_credentials_and_never_issues_twice(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
        wallet = WalletClient(http)
        ready = await wallet.redeem_offer(offer["offer_uri"], offer["tx_code"])
        key = Key.generate("ES256")
        proofs = wallet.proofs([key], ready.issuer, await wallet.nonce(ready.issuer_metadata))
        first = await wallet.request_credential(ready, [key], proofs=proofs)
        retried = await wallet.request_credential(ready, [key], proofs=proofs)
        with pytest.raises(IssuerError) as other:
            await wallet.request_credential(ready)
        records = (await http.get(f"{issuer_env.url}/v1/credentials",
                                  headers=issuer_env.headers("aoc-tax"))).json()["items"]
    assert first.credentials == retried.credentials
    assert other.value.error == "credential_request_denied"
    cid = offer["credential_ids"]["tax-compliance"]
    assert [r["credential_id"] for r in records].count(cid) == 1


async def test_notification_is_recorded_on_the_issuance_record(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "aoc-tax", "working-life", DEMO_EVERYTHING)
        wallet = WalletClient(http)
        result = await wallet.receive_offer(offer["offer_uri"], offer["tx_code"])
        response = await wallet.notify(result, "credential_accepted")
        unknown = await http.post(result.issuer_metadata["notification_endpoint"],
                                  json={"notification_id": "n_unknown", "event": "credential_deleted"},
                                  headers={"Authorization": f"Bearer {result.access_token}"})
        record = (await http.get(f"{issuer_env.url}/v1/credentials/{offer['credential_ids']['working-life']}",
                                 headers=issuer_env.headers("aoc-tax"))).json()
    assert response.status_code == 204
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_notification_id"
    assert [n["event"] for n in record["notifications"]] == ["credential_accepted"]
    assert record["evidence"]["product"].endswith("VIDA_LABORAL") and record["evidence"]["consent"] == "Si"
    assert "Montserrat" not in json.dumps(record)


async def test_full_flow_on_postgresql(pg_issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, pg_issuer_env, "uni-barcelona", "university-diploma", DEMO_EVERYTHING,
                                   name="Montserrat Puig Ferrer")
        result = await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"], keys=[Key.generate(), Key.generate()])
        auth = await WalletClient(http).authorize_and_receive(pg_issuer_env.issuer("ajuntament-girona"), "padro",
                                                              login_hint=DEMO_EVERYTHING)
    assert len(result.credentials) == 2
    verify_with_ssi(pg_issuer_env, result.credentials[1], result.holder_keys[1])
    verify_with_reference_library(pg_issuer_env, auth.credentials[0], auth.holder_keys[0])


async def test_issuer_state_offer_accepts_only_its_subject_at_login(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        r = await http.post(f"{issuer_env.url}/v1/offers", headers=issuer_env.headers("uni-barcelona"), json={
            "credential_configuration_ids": ["university-diploma"], "subject": {"identifier": DEMO_EVERYTHING, "name": "Titular de Prova"},
            "authorization_code": True, "selector": "2005/004567"})
        offer = r.json()
        state = offer["offer"]["grants"]["authorization_code"]["issuer_state"]
        wallet = WalletClient(http)
        with pytest.raises(IssuerError) as refused:
            await wallet.authorize(issuer_env.issuer("uni-barcelona"), "university-diploma",
                                   login_hint=DEMO_TAX_NEGATIVE, issuer_state=state)
        ready = await wallet.authorize(issuer_env.issuer("uni-barcelona"), "university-diploma",
                                       login_hint=DEMO_EVERYTHING, issuer_state=state)
        result = await wallet.request_credential(ready)
    assert refused.value.error == "access_denied"
    claims = verify_with_ssi(issuer_env, result.credentials[0], result.holder_keys[0])
    assert claims["registrationNumber"] == "2005/004567"  # the offer's selector picked the master's degree


async def test_openapi_documents_the_admin_api(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        doc = (await http.get(f"{issuer_env.url}/openapi.json")).json()
    assert {"/v1/offers", "/v1/types", "/v1/credentials/{credential_id}/{action}", "/v1/keys/rotate"} <= set(doc["paths"])
    offer = doc["components"]["schemas"]["OfferCreate"]
    assert offer["properties"]["credential_configuration_ids"]["examples"]


async def test_metrics_count_issued_credentials(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, issuer_env, "aoc-tax", "working-life", DEMO_EVERYTHING)
        await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
        text = (await http.get(f"{issuer_env.url}/metrics")).text
    assert 'cartera_issuer_credentials_issued_total{tenant="aoc-tax",type="working-life"}' in text


@pytest.fixture(scope="module")
def long_token_issuer(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IssuerEnv]:
    """Access tokens that outlive the replay window (an operator's choice the settings allow)."""
    folder = tmp_path_factory.mktemp("issuer-long-tokens")
    settings = make_settings(sandbox, f"sqlite+aiosqlite:///{folder / 'issuer.db'}", free_port(), folder, folder)
    yield from start_issuer(sandbox, settings.model_copy(update={"access_token_ttl": 600, "replay_window": 10}))


async def test_a_stored_answer_is_kept_while_its_token_can_send_the_request_again(long_token_issuer: IssuerEnv) -> None:
    """Once the stored answer is gone, an identical retry takes the claim over and, without a reserved
    credential id (authorization code flow), would issue again: it is kept as long as the token lives."""
    env = long_token_issuer
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        offer = await create_offer(http, env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
        await WalletClient(http).receive_offer(offer["offer_uri"], offer["tx_code"])
    database = str(env.settings.database_url).split("///", 1)[1]
    with sqlite3.connect(database) as db:
        (token_expiry,) = db.execute("SELECT max(expires_at) FROM access_tokens").fetchone()
        (kept_until,) = db.execute("SELECT max(expires_at) FROM stored_responses").fetchone()
    assert kept_until >= token_expiry, (kept_until, token_expiry)
