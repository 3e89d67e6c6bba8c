"""What a tenant's configuration may make the issuer reach: no file on the issuer's server, no
database the operator did not open to that tenant (the issuer's own included), no internal address
for a source or a webhook (service_kit.outbound)."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from issuer.app import create_app
from issuer.provisioning import provision_demo
from issuer.settings import SqlConnection
from sandbox.population import DEMO_EVERYTHING
from tests.issuer.conftest import ADMIN_KEY, IssuerEnv, Sandbox, make_settings, start_issuer
from tests.issuer.helpers import LIMITS, create_offer, own_builtin
from tests.support.servers import free_port, serve
from tests.support.wallet_client import IssuerError, WalletClient

pytestmark = pytest.mark.anyio

CONTEXT = {"purpose": "Prova", "procedure": "PROVA", "consent": "Ley", "official_name": "Anna", "official_nif": "11111111H"}
QUERY = {"query": "SELECT resultado, referencia, fecha FROM tax WHERE nif = :identifier", "product": "ECOT103",
         "fields": {"Certificado.Resultado": "resultado", "Certificado.ReferenciaAEAT": "referencia",
                    "Certificado.FechaEmision": "fecha"}}


@pytest.fixture(scope="module")
def sql_issuer(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("issuer-sql")
    registry = folder / "registry.sqlite"
    with sqlite3.connect(registry) as db:
        db.execute("CREATE TABLE tax (nif TEXT PRIMARY KEY, resultado TEXT, referencia TEXT, fecha TEXT)")
        db.execute("INSERT INTO tax VALUES (?, 'POSITIVO', 'REF-1', '20260320')", (DEMO_EVERYTHING,))
    settings = make_settings(sandbox, f"sqlite+aiosqlite:///{folder / 'issuer.db'}", free_port(), folder, folder)
    settings = settings.model_copy(update={"sql_connections": {
        "tax-registry": SqlConnection(url=SecretStr(f"sqlite:///{registry}"), tenants=["hisenda-test"]),
        "tax-registry-too": SqlConnection(url=SecretStr(f"sqlite:///{registry}"), tenants=["hisenda-lenta"])},
        # A deadline on a whole query longer than one request may take (a source's timeout: at most 120 s).
        "source_timeout": 150.0})
    yield from start_issuer(sandbox, settings)


async def _tenant(http: httpx.AsyncClient, env: IssuerEnv, slug: str) -> dict[str, str]:
    created = await http.post(f"{env.url}/v1/tenants", json={"slug": slug, "name": slug},
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert created.status_code == 201, created.text
    headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
    registered = await http.post(f"{env.url}/v1/types", json={"definition": own_builtin(env.url, slug, "tax-compliance")},
                                 headers=headers)
    assert registered.status_code == 201, registered.text
    return headers


async def test_a_sql_source_names_a_connection_opened_to_its_tenant(sql_issuer: IssuerEnv) -> None:
    env = sql_issuer
    source = f"{env.url}/v1/types/tax-compliance/source"
    own_database = str(env.settings.database_url).replace("+aiosqlite", "")
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        intruder = await _tenant(http, env, "intrus")
        # A URL, here the issuer's own database: its query could read every tenant's records.
        r = await http.put(source, headers=intruder, json={"kind": "sql", "url": own_database, **QUERY,
                                                            "context": CONTEXT})
        assert r.status_code == 400 and r.json()["error"] == "invalid_source", r.text
        assert "connection" in r.json()["error_description"]
        # A connection the operator opened to another tenant only.
        r = await http.put(source, headers=intruder, json={"kind": "sql", "connection": "tax-registry", **QUERY,
                                                            "context": CONTEXT})
        assert r.status_code == 400 and "opened to this tenant" in r.json()["error_description"], r.text

        owner = await _tenant(http, env, "hisenda-test")
        r = await http.put(source, headers=owner, json={"kind": "sql", "connection": "tax-registry", **QUERY,
                                                         "context": CONTEXT})
        assert r.status_code == 200 and r.json()["source_kind"] == "sql", r.text
        offer = (await http.post(f"{env.url}/v1/offers", headers=owner, json={
            "credential_configuration_ids": ["tax-compliance"],
            "subject": {"identifier": DEMO_EVERYTHING, "name": "Titular de Prova"}})).json()
        received = await WalletClient(http).receive_offer(offer["offer_uri"], offer.get("tx_code"))
    assert received.credentials, "the tenant's own connection serves its credentials"


async def test_a_source_without_its_own_timeout_is_served_under_a_source_timeout_beyond_120(
        sql_issuer: IssuerEnv) -> None:
    """Such a source gets source_timeout as its per-request timeout, capped at the adapters' 120 s:
    uncapped, the stored source no longer passed its own timeout check when loaded, and every credential
    request of the type was told that no data source is configured."""
    env = sql_issuer
    assert env.settings.source_timeout > 120
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        owner = await _tenant(http, env, "hisenda-lenta")
        r = await http.put(f"{env.url}/v1/types/tax-compliance/source", headers=owner, json={
            "kind": "sql", "connection": "tax-registry-too", **QUERY, "context": CONTEXT})
        assert r.status_code == 200, r.text
        offer = (await http.post(f"{env.url}/v1/offers", headers=owner, json={
            "credential_configuration_ids": ["tax-compliance"],
            "subject": {"identifier": DEMO_EVERYTHING, "name": "Titular de Prova"}})).json()
        received = await WalletClient(http).receive_offer(offer["offer_uri"], offer.get("tx_code"))
    assert received.credentials


async def test_a_source_names_no_file_on_the_issuers_server(issuer_env: IssuerEnv, tmp_path: Path) -> None:
    sandbox = issuer_env.sandbox
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(sandbox.requester_key_pem)
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        r = await http.put(f"{issuer_env.url}/v1/types/padro/source", headers=issuer_env.headers("ajuntament-girona"),
                           json={"kind": "viaoberta", "endpoint": sandbox.viaoberta_url, "product": "RESIDENT",
                                 "signing_key_file": str(key_file), "signing_cert_pem": sandbox.requester_cert_pem.decode(),
                                 "platform_certs_pem": [sandbox.platform_cert_pem.decode()], "context": CONTEXT})
    assert r.status_code == 400 and r.json()["error"] == "invalid_source"
    assert "signing_key_file" in r.json()["error_description"]


@pytest.mark.parametrize(("kind", "url"), [("rest", "https://169.254.169.254/latest/meta-data/{identifier}"),
                                           ("rest", "https://10.20.30.40/registry/{identifier}"),
                                           ("viaoberta", "https://192.168.0.10/siri-proxy")])
async def test_a_source_at_an_internal_address_is_refused(issuer_env: IssuerEnv, kind: str, url: str) -> None:
    sandbox = issuer_env.sandbox
    body = {"kind": "rest", "url": url, "fields": {"Certificado.Resultado": "resultado"}} if kind == "rest" else {
        "kind": "viaoberta", "endpoint": url, "product": "RESIDENT",
        "signing_key_pem": sandbox.requester_key_pem.decode(), "signing_cert_pem": sandbox.requester_cert_pem.decode(),
        "platform_certs_pem": [sandbox.platform_cert_pem.decode()]}
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        r = await http.put(f"{issuer_env.url}/v1/types/padro/source", headers=issuer_env.headers("ajuntament-girona"),
                           json={**body, "context": CONTEXT})
    assert r.status_code == 400 and r.json()["error"] == "invalid_source", r.text
    assert "internal address" in r.json()["error_description"]


@pytest.mark.parametrize("url", ["https://169.254.169.254/hook", "https://10.0.0.9/hook", "http://8.8.8.8/hook"])
async def test_a_webhook_the_issuer_may_not_reach_is_refused(issuer_env: IssuerEnv, url: str) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        r = await http.post(f"{issuer_env.url}/v1/webhooks", json={"url": url},
                            headers=issuer_env.headers("ajuntament-girona"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text


@pytest.mark.parametrize(("settings", "context", "error"), [
    ({}, {**CONTEXT, "purpose": "Emissi\x01o"}, "invalid_source"),  # stored, then every query failed in lxml
    # An unpaired surrogate can be stored nowhere: the request check refuses it before the source check.
    ({}, {**CONTEXT, "official_name": "Anna \ud800"}, "invalid_request"),
    ({"timeout": "abc"}, CONTEXT, "invalid_source"),      # stored, then a TypeError at each query
    ({"backoff_seconds": -1, "retries": 1}, CONTEXT, "invalid_source"),
    ({"signing_key_pem": "cl\u00e9"}, CONTEXT, "invalid_source"),
])
async def test_a_source_that_could_not_be_queried_is_refused_when_stored(issuer_env: IssuerEnv, settings: dict,
                                                                          context: dict, error: str) -> None:
    sandbox = issuer_env.sandbox
    body = {"kind": "viaoberta", "endpoint": sandbox.viaoberta_url, "product": "RESIDENT",
            "signing_key_pem": sandbox.requester_key_pem.decode(), "signing_cert_pem": sandbox.requester_cert_pem.decode(),
            "platform_certs_pem": [sandbox.platform_cert_pem.decode()], **settings}
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        # Sent as ASCII JSON: an unpaired surrogate travels as its \\u escape, as a client's JSON would carry it.
        r = await http.put(f"{issuer_env.url}/v1/types/padro/source",
                           headers={**issuer_env.headers("ajuntament-girona"), "Content-Type": "application/json"},
                           content=json.dumps({**body, "context": context}, ensure_ascii=True))
    assert r.status_code == 400 and r.json()["error"] == error, r.text


@pytest.mark.parametrize("settings", [
    {"headers": {"X-Key": "s3cret-\u20ac"}},            # stored, then a UnicodeEncodeError (500) at each query
    {"headers": {"X-Key": "s3cret\r\nX-Evil: 1"}},       # stored, then an h11 error taken for an outage (503)
    {"headers": {"X Key": "s3cret"}},
    {"auth": {"type": "bearer", "token": "s3cr\u00e8t"}},
])
async def test_a_rest_source_whose_headers_http_cannot_carry_is_refused_when_stored(
        issuer_env: IssuerEnv, settings: dict) -> None:
    body = {"kind": "rest", "url": "https://8.8.8.8/registry/{identifier}", "fields": QUERY["fields"],
            "context": CONTEXT}
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        headers = await _tenant(http, issuer_env, "rest-" + secrets.token_hex(4))
        source = f"{issuer_env.url}/v1/types/tax-compliance/source"
        r = await http.put(source, headers=headers, json={**body, **settings})
        assert r.status_code == 400 and r.json()["error"] == "invalid_source", r.text
        assert "s3cr" not in r.json()["error_description"]  # never quotes a value: it may be a secret
        # Printable ASCII is accepted.
        r = await http.put(source, headers=headers, json={**body, "headers": {"X-Key": "clau ~!"},
                                                          "auth": {"type": "bearer", "token": "t0ken"}})
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def production_issuer(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IssuerEnv]:
    """An issuer outside dev_mode (provisioned as in development, against the sandbox on loopback)."""
    folder = tmp_path_factory.mktemp("issuer-production")
    settings = make_settings(sandbox, f"sqlite+aiosqlite:///{folder / 'issuer.db'}", free_port(), folder, folder)
    provisioned = asyncio.run(provision_demo(
        settings, ca_key=sandbox.ca_key, ca_cert=sandbox.ca_cert, viaoberta_url=sandbox.viaoberta_url,
        viaoberta_platform_cert_pem=sandbox.platform_cert_pem, requester_key_pem=sandbox.requester_key_pem,
        requester_cert_pem=sandbox.requester_cert_pem))
    keys = {slug: t["api_key"] for slug, t in provisioned["tenants"].items()}
    settings = settings.model_copy(update={"dev_mode": False})
    with serve(create_app(settings, configure_logs=False), port=settings.port) as url:
        yield IssuerEnv(url, settings, keys, sandbox, provisioned)


def _source_body(sandbox: Sandbox, kind: str, url: str) -> dict:
    if kind == "rest":  # the token would travel in clear, and the citizen's record would come back so
        return {"kind": "rest", "url": url, "auth": {"type": "bearer", "token": "s3cret-token"},
                "fields": {"Certificado.Resultado": "resultado"}, "context": CONTEXT}
    return {"kind": "viaoberta", "endpoint": url, "product": "RESIDENT",
            "signing_key_pem": sandbox.requester_key_pem.decode(), "signing_cert_pem": sandbox.requester_cert_pem.decode(),
            "platform_certs_pem": [sandbox.platform_cert_pem.decode()], "context": CONTEXT}


@pytest.mark.parametrize(("kind", "url", "setting"), [
    ("rest", "http://8.8.8.8/registry/{identifier}", "url"),              # public, but plain http
    ("rest", "https://registrar:pa55word@8.8.8.8/registry/{identifier}", "url"),  # credentials in the URL
    ("viaoberta", "http://8.8.8.8/siri-proxy", "endpoint"),
])
async def test_outside_dev_mode_a_source_url_must_be_https(production_issuer: IssuerEnv, kind: str, url: str,
                                                           setting: str) -> None:
    env = production_issuer
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        r = await http.put(f"{env.url}/v1/types/padro/source", headers=env.headers("ajuntament-girona"),
                           json=_source_body(env.sandbox, kind, url))
        assert r.status_code == 400 and r.json()["error"] == "invalid_source", r.text
        described = r.json()["error_description"]
        assert described.startswith(f"{setting}: the URL "), described  # names the setting, not the URL
        assert "8.8.8.8" not in described and "pa55word" not in described and "s3cret" not in described
        # The same source over https is accepted (the rule is the scheme; 8.8.8.8 is a public address).
        https = url.replace("http://", "https://").replace("registrar:pa55word@", "")
        r = await http.put(f"{env.url}/v1/types/padro/source", headers=env.headers("ajuntament-girona"),
                           json=_source_body(env.sandbox, kind, https))
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("kind", ["rest", "viaoberta"])
async def test_in_dev_mode_a_source_url_is_http_only_to_loopback(issuer_env: IssuerEnv, kind: str) -> None:
    # The sandbox's http://127.0.0.1 endpoint was accepted when the demo tenants were provisioned.
    assert issuer_env.sandbox.viaoberta_url.startswith("http://127.0.0.1:")
    url = "http://8.8.8.8/registry/{identifier}" if kind == "rest" else "http://8.8.8.8/siri-proxy"
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        r = await http.put(f"{issuer_env.url}/v1/types/padro/source", headers=issuer_env.headers("ajuntament-girona"),
                           json=_source_body(issuer_env.sandbox, kind, url))
    assert r.status_code == 400 and r.json()["error"] == "invalid_source", r.text
    assert "must use https" in r.json()["error_description"] and "8.8.8.8" not in r.json()["error_description"]


async def test_a_source_the_policy_refuses_when_called_is_misconfigured_not_unavailable(sandbox: Sandbox,
                                                                                        tmp_path: Path) -> None:
    """A source accepted when stored can lead where the outbound policy refuses by the time it is
    called (the operator delisted its host; its name now resolves inward): the credential request is
    a 502 saying retrying will not help, not a 503 "try again later" after retries of the same refusal."""
    settings = make_settings(sandbox, f"sqlite+aiosqlite:///{tmp_path / 'issuer.db'}", free_port(), tmp_path, tmp_path)
    provisioned = await provision_demo(
        settings, ca_key=sandbox.ca_key, ca_cert=sandbox.ca_cert, viaoberta_url=sandbox.viaoberta_url,
        viaoberta_platform_cert_pem=sandbox.platform_cert_pem, requester_key_pem=sandbox.requester_key_pem,
        requester_cert_pem=sandbox.requester_cert_pem)
    keys = {slug: t["api_key"] for slug, t in provisioned["tenants"].items()}
    production = settings.model_copy(update={"dev_mode": False})
    listed = production.model_copy(update={"internal_hosts": ["127.0.0.1"]})
    source = {"kind": "rest", "url": "https://127.0.0.1:9/registry/{identifier}", "retries": 2,
              "fields": {"Certificado.Resultado": "resultado"}, "context": CONTEXT}
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        with serve(create_app(listed, configure_logs=False), port=settings.port) as url:
            env = IssuerEnv(url, listed, keys, sandbox, provisioned)
            r = await http.put(f"{url}/v1/types/tax-compliance/source", headers=env.headers("aoc-tax"), json=source)
            assert r.status_code == 200, r.text
        with serve(create_app(production, configure_logs=False), port=settings.port) as url:
            env = IssuerEnv(url, production, keys, sandbox, provisioned)
            offer = await create_offer(http, env, "aoc-tax", "tax-compliance", DEMO_EVERYTHING)
            with pytest.raises(IssuerError) as failed:
                await WalletClient(http).receive_offer(offer["offer_uri"], offer.get("tx_code"))
            # Counted as what it is: the operator must act (not a registry that refused the subject).
            metrics = (await http.get(f"{url}/metrics")).text
    assert failed.value.status == 502 and failed.value.error == "server_error", failed.value
    assert "misconfigured" in failed.value.body["error_description"]
    assert 'cartera_issuer_source_calls_total{outcome="misconfigured",tenant="aoc-tax",type="tax-compliance"} 1.0' \
        in metrics, [line for line in metrics.splitlines() if "source_calls" in line]
