"""Every answer of the wallet API says ``Cache-Control: no-store``: a browser's HTTP cache must not keep a
citizen's credentials, history or name after logout. The GET routes are read from the OpenAPI document,
so a route added later is checked too (real wallet, issuer and verifier over HTTP)."""

from __future__ import annotations

import re

import httpx

from sandbox.population import generate_population
from tests.wallet_api.conftest import APP_REDIRECT, bearer, login
from tests.wallet_api.system import System
from tests.wallet_api.test_e2e import make_offer, receive
from wallet_api.auth import pkce_pair

#: A citizen no other test of this system logs in (``fresh_citizens`` hands out others).
CITIZEN = generate_population(size=50).citizens[47].identifier
#: The login steps and public routes: answered without a token (and a redirect or an error here).
PUBLIC = {"/v1/auth/providers", "/v1/auth/login", "/v1/auth/callback", "/v1/issuance/callback", "/v1/audit/jwks"}


def test_every_api_answer_says_no_store(system: System) -> None:
    tokens = login(system.wallet, CITIZEN)
    headers = {**bearer(tokens), "Accept-Language": "en"}
    received = receive(system, tokens, make_offer(system, "ajuntament-girona", "padro", CITIZEN))
    request = httpx.post(f"{system.verifier}/v1/requests", headers=system.verifier_headers("ajuntament-barcelona"),
                         json={"template": "residence"}, timeout=30).json()
    scanned = httpx.post(f"{system.wallet}/v1/presentations", json={"request_uri": request["uri"]}, headers=headers,
                         timeout=30)
    assert scanned.status_code == 201, scanned.text
    history = httpx.get(f"{system.wallet}/v1/history", headers=headers, timeout=30).json()
    ids = {"credential_id": received["credential_ids"][0], "offer_id": received["offer_id"],
           "presentation_id": scanned.json()["presentation_id"], "entry_id": history[0]["id"]}
    queries = {"/v1/auth/login": {"provider": "valid", "redirect_uri": APP_REDIRECT, "state": "s",
                                  "code_challenge": pkce_pair()[1], "code_challenge_method": "S256"}}

    paths = httpx.get(f"{system.wallet}/openapi.json", timeout=30).json()["paths"]
    reads = sorted(p for p, ops in paths.items() if "get" in ops and p.startswith("/v1/"))
    assert "/v1/credentials/{credential_id}" in reads and "/v1/me/logins" in reads
    checked = []
    with httpx.Client(base_url=system.wallet, timeout=30, follow_redirects=False) as http:
        for path in reads:
            names = re.findall(r"\{(\w+)\}", path)
            assert set(names) <= set(ids), f"{path}: give the test an id for it"
            url = path.format(**{name: ids[name] for name in names})
            sent = {} if path in PUBLIC else headers
            with http.stream("GET", url, headers=sent, params=queries.get(path)) as answer:  # the alert stream too
                status, cache = answer.status_code, answer.headers.get("cache-control")
            if path not in PUBLIC:
                assert status == 200, (path, status)  # a real answer, not an error (errors say no-store anyway)
            assert cache == "no-store", (path, status, cache)
            checked.append(path)
        # A query string changes nothing, nor does a method other than GET.
        for method, url in (("GET", "/v1/me/logins?limit=20"), ("GET", "/v1/history?q=padr"),
                            ("POST", "/v1/alerts/read")):
            answer = http.request(method, url, headers=headers, json={"ids": None} if method == "POST" else None)
            assert answer.status_code in (200, 204) and answer.headers["cache-control"] == "no-store", url
        # The web app's own files are not API answers: they keep their revalidation policy.
        assert http.get("/app/app.js").headers["cache-control"] == "no-cache"
    assert len(checked) >= 20, checked
