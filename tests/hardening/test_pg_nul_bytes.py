"""NUL characters and lone surrogates in every input of every service, on PostgreSQL: never a 5xx.

PostgreSQL stores no NUL in ``text`` (nor ``\\u0000`` in ``jsonb``), and asyncpg cannot encode a lone
surrogate (``"\\ud800"`` in JSON is one) as UTF-8: such a value used to reach a query and come back as
an unauthenticated 500, where SQLite answered 404. Here the issuer, the verifier and the wallet API run
on a real PostgreSQL database each, and every path parameter, query parameter and string field of
their OpenAPI documents (each JSON string at any depth, free-form object keys too), plus the form and
JSON bodies the documents leave out (token, PAR, authorization, credential, wallet response endpoints),
gets a NUL — and, in JSON, a lone surrogate — one at a time. Every answer must be a 4xx in the
``{"error", "error_description"}`` shape (``service_kit.security.UnstorableInputMiddleware`` refuses
them with 400 ``invalid_request`` before any work). The probes authenticate as each service's callers
would (tenant/agency API keys, the platform admin key, an issuer access token, a wallet session), with
real ids where an endpoint looks one up first (a tenant slug, a pending presentation request and its
``state``, a redeemable pre-authorized code).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import String, bindparam, select, text
from sqlalchemy.orm import Mapped, mapped_column

from sandbox.idp_service import IdPSandboxConfig, RegisteredClient
from sandbox.idp_service import create_app as create_idp
from sandbox.population import DEMO_EVERYTHING
from service_kit.app import create_service_app
from service_kit.db import Database, make_base
from service_kit.security import unstorable_body
from service_kit.settings import ServiceSettings
from ssi.oid4vci import PRE_AUTHORIZED_CODE_GRANT
from tests.hardening.conftest import PROXY, new_client
from tests.issuer.conftest import ADMIN_KEY, Sandbox, make_settings, start_issuer
from tests.support.postgres import PostgresCluster
from tests.support.servers import free_port, serve
from tests.verifier.conftest import PKI, start_verifier
from tests.wallet_api.conftest import APP_REDIRECT, IDP_SECRET, login, wallet_settings
from wallet_api.app import create_app as create_wallet

NUL = "a\x00b"
SURROGATE = "a\ud800b"
#: In JSON bodies both (``json.dumps`` writes them as ``\u0000`` and ``\ud800`` escapes); in paths,
#: queries and forms a NUL (a percent-encoded surrogate decodes to U+FFFD, which is storable).
JSON_BAD = (NUL, SURROGATE)
_METHODS = ("get", "post", "put", "patch", "delete")
VERIFIER_ADMIN_KEY = "V" * 40


@dataclass
class Probe:
    """One request carrying one bad value."""

    method: str
    path: str  # the OpenAPI path (for the report)
    where: str  # which input is bad
    url: str
    params: dict[str, str] = field(default_factory=dict)
    json_text: str | None = None
    form: dict[str, str] | None = None


@dataclass
class Target:
    """A running service and what the probes need to reach past its first checks."""

    name: str
    url: str
    #: Authorization headers to try in turn, until one is not refused with 401/403.
    auths: list[dict[str, str]]
    #: Values for path parameters, by name (a callable gives a fresh value per probe).
    path_values: dict[str, str | Callable[[], str]] = field(default_factory=dict)
    #: Bodies and queries the OpenAPI document does not describe: (method, path) -> kind -> bases.
    undocumented: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    #: Form fields whose value is JSON text (a vp_token): they also get JSON with a bad string inside.
    json_fields: frozenset[str] = frozenset()
    skip: frozenset[tuple[str, str]] = frozenset()
    #: Proxy header making each probe come from a client of its own (the default rate limits).
    per_client: bool = True


# -- the schema walk ---------------------------------------------------------------------------------

def _resolve(doc: dict[str, Any], schema: Any) -> dict[str, Any]:
    while isinstance(schema, dict) and "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    if not isinstance(schema, dict):
        return {}
    if "allOf" in schema:
        merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
        for part in schema["allOf"]:
            part = _resolve(doc, part)
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += part.get("required", [])
            merged.update({k: v for k, v in part.items() if k not in ("properties", "required")})
        return merged
    return schema


def _options(doc: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null alternatives of a schema (itself when it has none)."""
    options = schema.get("anyOf") or schema.get("oneOf")
    if not options:
        return [schema]
    resolved = [_resolve(doc, o) for o in options]
    return [o for o in resolved if o.get("type") != "null"] or resolved


def _kind(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind is None:
        if "properties" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema:
            return "array"
        if "enum" in schema or "const" in schema:
            return "string"
        return "any"
    return str(kind)


def placeholder(doc: dict[str, Any], schema: Any, depth: int = 0) -> Any:
    """A plausible value for ``schema``: its required members only, simple values."""
    schema = _options(doc, _resolve(doc, schema))[0]
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    kind = _kind(schema)
    if kind == "string":
        fmt = schema.get("format", "")
        if fmt in ("uri", "url"):
            return "https://example.org/x"
        if fmt == "date-time":
            return "2026-01-01T00:00:00Z"
        if fmt == "email":
            return "x@example.org"
        return "x" * max(1, int(schema.get("minLength", 1)))
    if kind in ("integer", "number"):
        return max(1, schema.get("minimum", 1))
    if kind == "boolean":
        return False
    if kind == "array":
        count = int(schema.get("minItems", 0))
        return [placeholder(doc, schema.get("items", {}), depth + 1) for _ in range(count)] if depth < 6 else []
    if kind == "object" or kind == "any":
        if depth >= 6:
            return {}
        props = schema.get("properties", {})
        return {name: placeholder(doc, props[name], depth + 1) for name in schema.get("required", []) if name in props}
    return None


def variants(doc: dict[str, Any], schema: Any, bad: str, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """``(where, value)``: a value for ``schema`` with ``bad`` in one string (or object key) of it."""
    resolved = _resolve(doc, schema)
    seen: set[str] = set()
    for option in _options(doc, resolved):
        kind = _kind(option)
        if kind == "string" and "string" not in seen:
            seen.add("string")
            yield "", bad
        elif kind == "array" and depth < 6:
            for where, value in variants(doc, option.get("items", {}), bad, depth + 1):
                yield f"[0]{where}", [value]
        elif kind in ("object", "any") and depth < 6:
            base = placeholder(doc, option, depth)
            if not isinstance(base, dict):
                base = {}
            props = option.get("properties", {})
            for name, sub in props.items():
                for where, value in variants(doc, sub, bad, depth + 1):
                    yield f".{name}{where}", {**base, name: value}
            extra = option.get("additionalProperties", kind == "any" or not props)
            if extra:
                sub = extra if isinstance(extra, dict) else {"type": "string"}
                yield ".<key>", {**base, f"k{bad}": placeholder(doc, sub, depth + 1)}
                for where, value in variants(doc, sub, bad, depth + 1):
                    yield f".<value>{where}", {**base, "k": value}


def _fill(target: Target, path: str, bad_param: str | None = None, bad: str = NUL) -> str:
    url = path
    for name in _path_names(path):
        if name == bad_param:
            value = bad
        else:
            given = target.path_values.get(name, "x")
            value = given() if callable(given) else given
        url = url.replace("{" + name + "}", quote(value, safe=""))
    return url


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def probes(target: Target, doc: dict[str, Any]) -> Iterator[Probe]:
    """Every probe for the service: documented inputs from ``doc``, then the undocumented ones."""
    for path, item in doc["paths"].items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is None or (method, path) in target.skip:
                continue
            parameters = [_resolve(doc, p) for p in operation.get("parameters", [])]
            required_query = {p["name"]: str(placeholder(doc, p.get("schema", {}))) for p in parameters
                              if p.get("in") == "query" and p.get("required")}
            body_schema = (operation.get("requestBody", {}).get("content", {})
                           .get("application/json", {}).get("schema"))
            base_body = None if body_schema is None else json.dumps(placeholder(doc, body_schema))
            for name in _path_names(path):
                yield Probe(method, path, f"path {name}", _fill(target, path, name), dict(required_query),
                            base_body)
            for p in parameters:
                if p.get("in") == "query":
                    yield Probe(method, path, f"query {p['name']}", _fill(target, path),
                                {**required_query, p["name"]: NUL}, base_body)
            if body_schema is not None:
                for bad in JSON_BAD:
                    for where, value in variants(doc, body_schema, bad):
                        yield Probe(method, path, f"json{where or ' body'} {bad!r}", _fill(target, path),
                                    dict(required_query), json.dumps(value))
    for (method, path), kinds in target.undocumented.items():
        for kind, bases in kinds.items():
            for base in bases:
                for name in base:
                    values = list(JSON_BAD if kind == "json" else (NUL,))
                    if kind != "json" and name in target.json_fields:
                        values += [json.dumps({"k": bad}) for bad in JSON_BAD]
                    for bad in values:
                        changed = {**base, name: bad}
                        where = f"{kind} {name} {bad!r}"
                        url = _fill(target, path)
                        if kind == "json":
                            yield Probe(method, path, where, url, json_text=json.dumps(changed))
                        elif kind == "form":
                            yield Probe(method, path, where, url, form=changed)
                        else:
                            yield Probe(method, path, where, url, params=changed)


def send(client: httpx.Client, target: Target, probe: Probe) -> httpx.Response:
    """Send ``probe`` with each of the target's credentials until one is not refused (401/403)."""
    answers: list[httpx.Response] = []
    for auth in target.auths or [{}]:
        headers = dict(auth)
        if target.per_client:
            headers["X-Forwarded-For"] = new_client()
        kwargs: dict[str, Any] = {"params": probe.params or None, "headers": headers}
        if probe.json_text is not None:
            kwargs["content"] = probe.json_text.encode()
            headers["Content-Type"] = "application/json"
        elif probe.form is not None:
            kwargs["data"] = probe.form
        # Streamed: an event stream answers its status at once and then stays open.
        with client.stream(probe.method.upper(), target.url + probe.url, **kwargs) as answer:
            if answer.status_code >= 400 or "text/event-stream" not in answer.headers.get("content-type", ""):
                answer.read()
        answers.append(answer)
        if answer.status_code not in (401, 403):
            break
    return answers[-1]


def bad_answers(target: Target) -> tuple[int, list[str]]:
    """Send every probe; the count sent, and every answer that is a 5xx or not in the error shape."""
    with httpx.Client(timeout=30) as client:
        doc = client.get(f"{target.url}/openapi.json").json()
        found: list[str] = []
        count = 0
        for probe in probes(target, doc):
            count += 1
            answer = send(client, target, probe)
            if answer.status_code >= 500 or not _refused_in_error_shape(answer):
                # ascii(): an answer may echo a lone surrogate, which pytest-xdist cannot carry.
                found.append(f"{probe.method.upper()} {probe.path} [{probe.where}]: {answer.status_code} "
                             f"{ascii(answer.text[:160])}")
    return count, found


def _refused_in_error_shape(answer: httpx.Response) -> bool:
    if not 400 <= answer.status_code < 500:
        return False
    try:
        body = answer.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), str) and "error_description" in body


# -- the services on PostgreSQL -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg_issuer(sandbox: Sandbox, postgres_cluster: PostgresCluster,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    folder = tmp_path_factory.mktemp("nul-issuer")
    settings = make_settings(sandbox, postgres_cluster.create_database(), free_port(), folder, folder)
    settings = settings.model_copy(update={"trusted_proxies": PROXY})
    with contextlib.contextmanager(start_issuer)(sandbox, settings) as env:
        tenant = {"Authorization": f"Bearer {env.api_keys['uni-barcelona']}"}
        with httpx.Client(timeout=30) as http:
            def offer() -> dict[str, Any]:
                r = http.post(f"{env.url}/v1/offers", headers=tenant, json={
                    "credential_configuration_ids": ["university-diploma"], "tx_code": True,
                    "subject": {"identifier": DEMO_EVERYTHING, "name": "Titular de Prova"}})
                assert r.status_code == 201, r.text
                grant = r.json()["offer"]["grants"][PRE_AUTHORIZED_CODE_GRANT]
                return {"code": grant["pre-authorized_code"], "tx_code": r.json()["tx_code"]}

            spent, kept = offer(), offer()
            r = http.post(f"{env.issuer('uni-barcelona')}/token", data={
                "grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": spent["code"],
                "tx_code": spent["tx_code"]})
            assert r.status_code == 200, r.text
            access = {"Authorization": f"Bearer {r.json()['access_token']}"}
        code_flow = {"response_type": "code", "client_id": "cartera-wallet", "redirect_uri": APP_REDIRECT,
                     "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
                     "authorization_details": json.dumps([{"type": "openid_credential",
                                                           "credential_configuration_id": "university-diploma"}]),
                     "scope": "university-diploma", "state": "s", "issuer_state": "x"}
        undocumented: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {
            ("post", "/t/{slug}/token"): {"form": [
                {"grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": kept["code"], "tx_code": "000000"},
                {"grant_type": PRE_AUTHORIZED_CODE_GRANT, "pre-authorized_code": kept["code"], "user_pin": "000000"},
                {"grant_type": "authorization_code", "code": "x", "code_verifier": "v" * 43,
                 "redirect_uri": APP_REDIRECT, "client_id": "cartera-wallet"}]},
            ("post", "/t/{slug}/par"): {"form": [code_flow]},
            ("get", "/t/{slug}/authorize"): {"query": [
                code_flow, {"client_id": "cartera-wallet", "request_uri": "urn:ietf:params:oauth:request_uri:x"}]},
            ("get", "/t/{slug}/login/callback"): {"query": [{"state": "x", "code": "x"},
                                                           {"state": "x", "error": "access_denied"}]},
            ("post", "/t/{slug}/credential"): {"json": [
                {"credential_configuration_id": "university-diploma", "proof": {"proof_type": "jwt", "jwt": "x"}},
                {"credential_identifier": "university-diploma", "proofs": {"jwt": ["x"]}}]},
            ("post", "/t/{slug}/deferred_credential"): {"json": [{"transaction_id": "x"}]},
            ("post", "/t/{slug}/notification"): {"json": [
                {"notification_id": "x", "event": "credential_accepted", "event_description": "x"}]},
            ("put", "/v1/types/{type_id}/source"): {"json": [{"adapter": "rest", "url": "https://example.org/x"}]},
            ("post", "/v1/aries/webhooks/topic/{topic}/"): {"json": [{"state": "active", "connection_id": "x"}]},
        }
        yield Target("issuer", env.url, [tenant, {"Authorization": f"Bearer {ADMIN_KEY}"}, access],
                     path_values={"slug": "uni-barcelona", "type_id": "university-diploma", "action": "revoke",
                                  "version": "1", "suite": "x", "topic": "connections"},
                     undocumented=undocumented, json_fields=frozenset({"authorization_details"}))


@pytest.fixture(scope="module")
def pg_verifier(pki: PKI, postgres_cluster: PostgresCluster,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    folder = tmp_path_factory.mktemp("nul-verifier")
    with start_verifier(folder, pki, postgres_cluster.create_database(), admin_api_key=VERIFIER_ADMIN_KEY,
                        trusted_proxies=PROXY) as verifier, httpx.Client(timeout=30) as http:
        agency = verifier.headers()

        def pending() -> str:
            r = http.post(f"{verifier.url}/v1/requests", headers=agency,
                          json={"template": "grant-application", "response_mode": "direct_post"})
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

        def state_of(tx_id: str) -> str:
            token = http.get(f"{verifier.url}/v1/wallet/requests/{tx_id}").text
            payload = token.split(".")[1]
            return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["state"])

        tx_id = pending()
        state = state_of(tx_id)
        fresh_ids = iter(pending() for _ in range(10_000))
        undocumented: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {
            ("post", "/v1/wallet/requests/{tx_id}"): {"form": [{"wallet_nonce": "n", "wallet_metadata": "{}"}]},
            ("post", "/v1/wallet/responses/{tx_id}"): {"form": [
                {"state": state, "vp_token": json.dumps({"diploma": ["x"]})},
                {"state": state, "error": "access_denied", "error_description": "x"},
                {"response": "x"}]},
            ("post", "/v1/aries/webhooks/topic/{topic}/"): {"json": [{"state": "done", "pres_ex_id": "x"}]},
        }
        target = Target("verifier", verifier.url, [agency, {"Authorization": f"Bearer {VERIFIER_ADMIN_KEY}"}],
                        path_values={"tx_id": tx_id, "name": "grant-application", "topic": "present_proof_v2_0"},
                        undocumented=undocumented, json_fields=frozenset({"vp_token", "wallet_metadata"}))
        # A wallet's answer ends its request: each of those probes gets a request of its own, whose
        # state the answers above carry (a probe with a bad state meets "wrong state", as it should).
        target.path_values["tx_id"] = lambda: next(fresh_ids)
        yield target


@pytest.fixture(scope="module")
def pg_wallet(postgres_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    folder = tmp_path_factory.mktemp("nul-wallet")
    port = free_port()
    idp = IdPSandboxConfig(clients=[RegisteredClient("cartera-wallet", IDP_SECRET,
                                                     (f"http://127.0.0.1:{port}/v1/auth/callback",))],
                           allow_login_hint=True, population_size=20)
    with serve(create_idp(idp)) as idp_url:
        settings = wallet_settings(folder, port, idp_url, database_url=postgres_cluster.create_database(),
                                   trusted_proxies=PROXY)
        with serve(create_wallet(settings), port=port) as url:
            tokens = login(url, DEMO_EVERYTHING)
            code_grant = {"grant_type": "authorization_code", "code": "x", "redirect_uri": APP_REDIRECT,
                          "code_verifier": "v" * 43}
            refresh = {"grant_type": "refresh_token", "refresh_token": "x"}
            yield Target("wallet", url, [{"Authorization": f"Bearer {tokens['access_token']}"}],
                         undocumented={("post", "/v1/auth/token"): {"form": [code_grant, refresh],
                                                                    "json": [code_grant, refresh]}},
                         # Logging out would end the probes' session.
                         skip=frozenset({("post", "/v1/auth/logout")}))


@pytest.mark.parametrize("service", ["issuer", "verifier", "wallet"])
def test_nul_and_lone_surrogates_are_refused_not_500(service: str, request: pytest.FixtureRequest) -> None:
    target: Target = request.getfixturevalue(f"pg_{service}")
    count, found = bad_answers(target)
    assert count > 50, f"only {count} probes: the OpenAPI walk found too little"
    assert not found, f"{len(found)} of {count} probes were not refused with a 4xx in the error shape:\n" + \
        "\n".join(found)


def test_the_repro_cases_answer_400_invalid_request(pg_verifier: Target) -> None:
    """The reviewer's cases: each a 400 ``invalid_request`` in the OAuth shape, unauthenticated or not."""
    agency = pg_verifier.auths[0]
    with httpx.Client(base_url=pg_verifier.url, timeout=30) as http:
        answers = [
            http.post("/v1/wallet/responses/%00", data={"state": "x", "error": "access_denied"}),
            http.get("/v1/wallet/requests/a%00"),
            http.get("/v1/requests/a%00/events", params={"watch": "x" * 20}),
            http.get("/v1/requests/a%00", headers=agency),
            http.get("/v1/templates/a%00", headers=agency),
            http.post("/v1/requests", json={"template": "a\u0000"}, headers=agency),
            http.post("/v1/requests", content=b'{"template": "a\\ud800"}',
                      headers={**agency, "Content-Type": "application/json"}),
            http.get("/v1/aries/i/a%00"),
        ]
    for answer in answers:
        assert answer.status_code == 400, (answer.request.url, answer.text)
        assert answer.json()["error"] == "invalid_request"
        assert set(answer.json()) == {"error", "error_description"}


def test_a_second_content_type_does_not_hide_a_form_from_the_check(pg_verifier: Target) -> None:
    """Endpoints read the first Content-Type, the check read the last: a form sent with a JSON type after
    its form type was scanned as JSON, where ``%00`` is plain text, and reached the endpoint as a NUL."""
    tx_id = pg_verifier.path_values["tx_id"]
    tx = tx_id() if callable(tx_id) else tx_id
    with httpx.Client(base_url=pg_verifier.url, timeout=30) as http:
        token = http.get(f"/v1/wallet/requests/{tx}").text.split(".")[1]
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["state"]
        answer = http.post(f"/v1/wallet/responses/{tx}",
                           content=f"state={state}&error=access_denied&error_description=a%00b".encode(),
                           headers=[("Content-Type", "application/x-www-form-urlencoded"),
                                    ("Content-Type", "application/json")])
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request", answer.text
    assert "NUL" in answer.json()["error_description"]


def test_the_text_of_an_escape_in_a_wallet_form_is_text(pg_verifier: Target) -> None:
    """Only JSON decodes ``\\u0000``: a wallet's ``error_description`` saying it, in a form, is six
    characters, and the wallet's answer is taken; it was refused as if it were the NUL."""
    tx_id = pg_verifier.path_values["tx_id"]
    tx = tx_id() if callable(tx_id) else tx_id
    with httpx.Client(base_url=pg_verifier.url, timeout=30) as http:
        token = http.get(f"/v1/wallet/requests/{tx}").text.split(".")[1]
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["state"]
        answer = http.post(f"/v1/wallet/responses/{tx}", data={
            "state": state, "error": "access_denied", "error_description": "the user typed \\u0000 and \\ud800"})
    assert answer.status_code == 200, answer.text


def test_accents_pairs_tokens_and_escaped_backslashes_still_pass(pg_verifier: Target) -> None:
    """What the refusal must not catch: Catalan and Spanish text (sent as ``\\u00e8`` escapes), a surrogate
    pair (an emoji), the six characters ``\\u0000`` spelt with an escaped backslash, a JWT-like id."""
    agency = pg_verifier.auths[0]
    purpose = {"ca": "Sol·licitud d'ajut: així és, plaça 😀", "es": "Solicitud de ayuda: niño, acción",
               "en": "the text \\u0000 and \\ud800 \\\\u0000, literally"}
    with httpx.Client(base_url=pg_verifier.url, timeout=30) as http:
        template = http.get("/v1/templates/grant-application", headers=agency).json()
        body = {name: template[name] for name in ("dcql_query", "trusted_issuers", "retention_seconds",
                                                  "response_mode")}
        text = json.dumps({**body, "name": "nul-ok", "purpose": purpose})
        assert "\\u00e9" in text and "\\ud83d\\ude00" in text and "\\\\u0000" in text
        created = http.post("/v1/templates", content=text.encode(), headers={**agency, "Content-Type": "application/json"})
        read = http.get("/v1/templates/nul-ok", headers=agency)
        raw = http.put("/v1/templates/nul-ok", content=json.dumps({**body, "name": "nul-ok", "purpose": purpose},
                                                                  ensure_ascii=False).encode(),
                       headers={**agency, "Content-Type": "application/json"})
        jwt_like = http.get("/v1/requests/eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", headers=agency)
    assert created.status_code == 201, created.text
    assert read.json()["purpose"] == purpose
    assert raw.status_code == 200, raw.text
    assert jwt_like.status_code == 404, jwt_like.text


def test_a_request_id_of_another_form_is_an_unknown_request(pg_verifier: Target) -> None:
    """A verifier request id is 43 base64url characters: any other is answered as an unknown request,
    without a query, on every route that takes one — after the API key is checked where there is one."""
    agency = pg_verifier.auths[0]
    odd = ["x" * 42, "x" * 44, "a'b" + "x" * 40, "Girona-pla\u00e7a" + "x" * 27]
    with httpx.Client(base_url=pg_verifier.url, timeout=30) as http:
        for tx_id in odd:
            path = quote(tx_id, safe="")
            answers = [http.get(f"/v1/requests/{path}", headers=agency),
                       http.get(f"/v1/requests/{path}/qr.svg", headers=agency),
                       http.get(f"/v1/requests/{path}/events", params={"watch": "w" * 43}),
                       http.get(f"/v1/wallet/requests/{path}"),
                       http.post(f"/v1/wallet/responses/{path}", data={"state": "s", "error": "access_denied"})]
            assert [a.status_code for a in answers] == [404] * 5, [(a.request.url, a.text) for a in answers]
            unauthenticated = http.get(f"/v1/requests/{path}")
            assert unauthenticated.status_code == 401, unauthenticated.text


# -- the check itself ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "form", "refused"), [
    (b'{"a": "x\\u0000"}', False, True),
    (b'{"a\\u0000": 1}', False, True),
    (b'{"a": "\\ud800"}', False, True),             # a high half alone
    (b'{"a": "\\uDBFF x"}', False, True),           # upper-case hex, alone
    (b'{"a": "\\udc00"}', False, True),             # a low half alone
    (b'{"a": "\\ude00\\ud83d"}', False, True),      # both halves, in the wrong order
    (b'{"a": "\\ud83d\\\\ude00"}', False, True),    # a high half, then an escaped backslash
    (b'{"a": "\\\\\\u0000"}', False, True),         # an escaped backslash, then an escape
    (b'{"a": "x\x00"}', False, True),               # a raw NUL byte
    (b'{"a": "\\ud83d\\ude00 \\uD83D\\uDE00"}', False, False),  # surrogate pairs (an emoji)
    (b'{"a": "pla\\u00e7a, \\u00e0\\u00e8\\u00ed\\u00f2\\u00fa"}', False, False),
    ('{"a": "plaça, niño, l·l"}'.encode(), False, False),
    (b'{"a": "\\\\u0000 and \\\\ud800"}', False, False),  # the text \u0000, its backslash escaped
    (b'{"a": "\\\\\\\\u0000"}', False, False),
    (b'{"jwt": "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_"}', False, False),
    (b"code=a%00b", True, True),
    (b"code=a\x00b", True, True),
    (b"vp_token=%7B%22q%22%3A%5B%22a%5Cu0000%22%5D%7D", True, True),  # JSON with \u0000, in a form
    (b"vp_token=%7B%22q%22%3A%5B%22a%5cud800%22%5D%7D", True, True),
    (b"vp_token=%7B%22q%22%3A%5B%22a%5C%5Cu0000%22%5D%7D", True, False),  # the text \u0000, in JSON, in a form
    (b"vp_token=%7B%22q%22%3A%5B%22pla%5Cu00e7a%22%5D%7D&state=abc", True, False),
    (b"code=pla%C3%A7a&tx_code=123456&x=%ED%A0%80", True, False),  # a UTF-8-encoded surrogate: U+FFFD when read
    (b"code=%2500", True, False),  # the text %00
    # A form's escapes are %XX: the text \u0000 in a value that is no JSON is six characters.
    (b"error_description=the+text+%5Cu0000&state=abc", True, False),
    (b"error_description=the+text+\\u0000+and+%5cud800", True, False),
    (b"vp_token=%22a%5Cu0000%22", True, True),  # a JSON string, in a form
    (b"vp_token=%7B+%22q%22%3A+%22%5Cudc00%22+%7D", True, True),  # JSON spelt with '+' for its spaces
])
def test_what_the_request_check_refuses(body: bytes, form: bool, refused: bool) -> None:
    assert unstorable_body(body, form) is refused


# -- the database backstop ------------------------------------------------------------------------------

Base = make_base()


class Note(Base):
    __tablename__ = "nul_notes"
    id: Mapped[str] = mapped_column(String(80), primary_key=True)


NOTE_BY_ID = select(Note.id).where(Note.id == bindparam("id"))


def _storing_app(url: str, folder: Path) -> FastAPI:
    """An app that stores and looks up text the request check never saw (decoded from base64url in the
    handler), through SQLAlchemy's ORM, a prebuilt statement on the driver directly, and a jsonb cast."""
    db = Database(url)
    app = create_service_app(name="nul-backstop", version="0", settings=ServiceSettings(data_dir=folder), db=db,
                             configure_logs=False)

    def decoded(encoded: str) -> str:
        return base64.urlsafe_b64decode(encoded + "==").decode("utf-8", "surrogatepass")

    @app.post("/v1/notes/{encoded}")
    async def store(encoded: str) -> dict[str, str]:
        async with db.session() as session:
            session.add(Note(id=decoded(encoded)))
        return {"stored": "yes"}

    @app.get("/v1/notes/{encoded}")
    async def find(encoded: str) -> dict[str, int]:
        async with db.statement_connection() as conn:
            return {"found": len((await conn.execute(NOTE_BY_ID, {"id": decoded(encoded)})).all())}

    @app.get("/v1/jsonb/{encoded}")
    async def as_jsonb(encoded: str) -> dict[str, str]:
        async with db.statement_connection() as conn:
            await conn.execute(text("SELECT CAST(:value AS jsonb)"), {"value": json.dumps({"t": decoded(encoded)})})
        return {"cast": "yes"}

    return app


def test_database_refusing_a_value_is_a_400_not_a_500(postgres_cluster: PostgresCluster, tmp_path: Path) -> None:
    """Past the request check (a value decoded inside the handler), PostgreSQL's refusal of a NUL in text
    or jsonb and asyncpg's of a lone surrogate answer 400 ``invalid_request`` — not 500, nor 503, which
    would say the database is down — and the connections stay usable."""
    url = postgres_cluster.create_database()
    asyncio.run(_create_notes(url))

    def b64(value: str) -> str:
        return base64.urlsafe_b64encode(value.encode("utf-8", "surrogatepass")).decode().rstrip("=")

    with serve(_storing_app(url, tmp_path)) as base, httpx.Client(base_url=base, timeout=30) as http:
        warm = [http.get(f"/v1/notes/{b64('x')}") for _ in range(2)]  # the prebuilt statement goes direct
        answers = {name: call() for name, call in {
            "ORM text NUL": lambda: http.post(f"/v1/notes/{b64(NUL)}"),
            "ORM text surrogate": lambda: http.post(f"/v1/notes/{b64(SURROGATE)}"),
            "direct text NUL": lambda: http.get(f"/v1/notes/{b64(NUL)}"),
            "direct text surrogate": lambda: http.get(f"/v1/notes/{b64(SURROGATE)}"),
            "jsonb NUL": lambda: http.get(f"/v1/jsonb/{b64(NUL)}"),
        }.items()}
        after = [http.post(f"/v1/notes/{b64('Girona, plaça 😀')}"), http.get(f"/v1/notes/{b64('x')}"),
                 http.get(f"/v1/jsonb/{b64('així')}")]
    assert [a.status_code for a in warm] == [200, 200]
    for name, answer in answers.items():
        assert answer.status_code == 400, (name, answer.text)
        assert answer.json()["error"] == "invalid_request", name
    assert [a.status_code for a in after] == [200, 200, 200], [a.text for a in after]


def test_sqlite_refusing_a_lone_surrogate_is_a_400(tmp_path: Path) -> None:
    """SQLite stores a NUL but its driver cannot encode a lone surrogate: Python's UnicodeEncodeError,
    raised through the driver, answers 400 as well (an encoding error elsewhere stays a 500)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}"
    asyncio.run(_create_notes(url))
    surrogate = base64.urlsafe_b64encode(SURROGATE.encode("utf-8", "surrogatepass")).decode().rstrip("=")
    with serve(_storing_app(url, tmp_path)) as base, httpx.Client(base_url=base, timeout=30) as http:
        answers = [http.post(f"/v1/notes/{surrogate}"), http.get(f"/v1/notes/{surrogate}")]
    for answer in answers:
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_request", answer.text


async def _create_notes(url: str) -> None:
    db = Database(url)
    try:
        await db.create_all(Base.metadata)
    finally:
        await db.dispose()
