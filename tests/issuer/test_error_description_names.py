"""A repeated parameter is named in the error, but a client-chosen name is quoted within RFC 6749
§5.2's ``error_description`` characters (no accents, ``"``, ``\\`` or control characters) and cut to
40 characters, at the form endpoints (token, PAR) and at the authorization endpoint's query."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.issuer.conftest import IssuerEnv
from tests.issuer.helpers import LIMITS

pytestmark = pytest.mark.anyio
SLUG = "aoc-tax"
ALLOWED = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
#: é, ", \, a newline, then a long tail: URL-encoded as a form or query name.
NAME = "%C3%A9%22%5C%0A" + "n" * 200


def _check(r: httpx.Response) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "invalid_request"
    description = body["error_description"]
    assert ALLOWED.fullmatch(description), description
    assert description.startswith("parameter e'/?nnn") and description.endswith("... is repeated"), description
    assert len(description) < 70


async def test_a_repeated_form_parameter_is_named_within_the_allowed_characters(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        for endpoint in ("token", "par"):
            r = await http.post(f"{issuer_env.issuer(SLUG)}/{endpoint}", content=f"{NAME}=1&{NAME}=2",
                                headers={"content-type": "application/x-www-form-urlencoded"})
            _check(r)


async def test_a_repeated_query_parameter_is_named_within_the_allowed_characters(issuer_env: IssuerEnv) -> None:
    async with httpx.AsyncClient(timeout=20, limits=LIMITS) as http:
        r = await http.get(f"{issuer_env.issuer(SLUG)}/authorize?{NAME}=1&{NAME}=2", follow_redirects=False)
    _check(r)


def test_an_error_sent_back_to_the_redirect_uri_keeps_to_the_allowed_characters() -> None:
    """RFC 6749 §4.1.2.1: the error_description an authorization request error puts into the wallet's
    redirect URI keeps to the same characters as a JSON answer's (service_kit.errors.safe_description),
    whatever text the error was raised with: accents dropped, '"' and '\\' replaced, controls as '?'."""
    from urllib.parse import parse_qs, urlsplit

    from issuer.authorization import RedirectableError
    from service_kit.errors import APIError, safe_description

    text = 'scope "tax\\compliance" is not offered\nby this issuer: Via Oberta, VÀLid \u202e'
    error = RedirectableError(APIError(400, "invalid_scope", text), "http://127.0.0.1:9/cb?app=1", "s1",
                              "https://issuer.example/t/aoc-tax")
    query = parse_qs(urlsplit(error.location).query)
    description = query["error_description"][0]
    assert ALLOWED.fullmatch(description), description
    assert description == safe_description(text)
    assert description.startswith("scope 'tax/compliance' is not offered?by this issuer: Via Oberta, VALid")
    assert query["error"] == ["invalid_scope"] and query["state"] == ["s1"] and query["app"] == ["1"]
    assert query["iss"] == ["https://issuer.example/t/aoc-tax"]
