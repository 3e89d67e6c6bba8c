"""The request check (``service_kit.security.UnstorableInputMiddleware``) reads a body as the endpoint
will: a form's escapes are ``%XX`` only, so the text ``\\u0000`` in a form field is six characters and
passes, while a form field holding JSON (a ``vp_token``) is checked as JSON; a JSON body's escapes are
decoded. A request with two Content-Type headers is checked as both kinds, whichever the endpoint
reads. A tiny app built with ``create_service_app``, served over real HTTP on loopback, whose endpoints
read their input as the services' do (the first Content-Type; Starlette's form parser or the standard
library's; ``ssi.encoding.json_loads``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request

from service_kit.app import create_service_app
from service_kit.settings import ServiceSettings
from ssi.encoding import json_loads
from tests.support.servers import serve

FORM = "application/x-www-form-urlencoded"
SIX_CHARACTERS = "\\u0000"  # a backslash, u, and four zeros: text


def build_app(folder: Path) -> FastAPI:
    app = create_service_app(name="check-test", version="0", settings=ServiceSettings(data_dir=folder), db=None,
                             configure_logs=False)
    router = APIRouter()

    @router.post("/starlette-form")
    async def starlette_form(request: Request) -> dict[str, Any]:
        return {"fields": dict((await request.form()).items())}

    @router.post("/as-sent")
    async def as_sent(request: Request) -> dict[str, Any]:
        # As the issuer's token endpoint and the verifier's agency API read a body: by the first type.
        body = await request.body()
        if request.headers.get("content-type", "").split(";")[0].strip() == FORM:
            return {"fields": dict(parse_qsl(body.decode(), keep_blank_values=True))}
        return {"json": json_loads(body)}

    @router.get("/query")
    async def query(request: Request) -> dict[str, Any]:
        return {"fields": dict(request.query_params)}

    app.include_router(router, prefix=app.state.api_prefix)
    return app


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with serve(build_app(tmp_path_factory.mktemp("check"))) as url, httpx.Client(base_url=f"{url}/v1", timeout=20) as client:
        yield client


def _refused(answer: httpx.Response) -> bool:
    return (answer.status_code == 400 and answer.json()["error"] == "invalid_request"
            and "NUL" in answer.json()["error_description"])


@pytest.mark.parametrize("text", [SIX_CHARACTERS, "a\\ud800b", "\\udc00", "C:\\u0000\\dir", "\\\\u0000"])
@pytest.mark.parametrize("path", ["/starlette-form", "/as-sent"])
def test_the_text_of_an_escape_in_a_form_field_is_text(http: httpx.Client, path: str, text: str) -> None:
    """Only JSON decodes ``\\u0000``; in a form it is what it says (a Windows path, a quoted escape)."""
    fields = {"state": "abc", "error_description": f"the text {text}, literally"}
    encoded = http.post(path, data=fields)  # the backslash sent as %5C
    raw = http.post(path, content=f"state=abc&error_description=the+text+{text},+literally".encode(),
                    headers={"Content-Type": FORM})  # the backslash sent as it is
    for answer in (encoded, raw):
        assert answer.status_code == 200, answer.text
        assert answer.json()["fields"] == fields


def test_the_text_of_an_escape_in_a_query_parameter_is_text(http: httpx.Client) -> None:
    answer = http.get("/query", params={"q": SIX_CHARACTERS})
    assert answer.status_code == 200, answer.text
    assert answer.json()["fields"] == {"q": SIX_CHARACTERS}
    assert _refused(http.get("/query", params={"q": '{"k": "\\u0000"}'}))  # JSON in a parameter: the NUL
    assert _refused(http.get("/query", params={"q": "a\x00b"}))


@pytest.mark.parametrize("value", [
    json.dumps({"q": ["a\x00b"]}),
    json.dumps({"q": ["a\ud800b"]}),
    json.dumps({"k\x00": 1}),
    json.dumps("a\x00b"),                               # a JSON string alone
    json.dumps([{"q": {"r": "x\x00"}}], indent=2),     # spaces and line breaks ('+' and %0A in the form)
    '\ufeff{"q": "\\u0000"}',                           # a byte order mark before it
    '{"q": "\\u0000", "n": ' + "9" * 5000 + "}",        # a number too long for int()
    '{"q": "\\u0000", "n": NaN, "q": 1}',               # what only a lenient parser reads
    '{"q": "\t\\u0000"}',                               # a raw tab, which strict JSON refuses
    "[" * 5_000 + '"\\u0000"' + "]" * 5_000,            # too deep to decode here: refused all the same
])
def test_a_form_field_holding_json_is_checked_as_json(http: httpx.Client, value: str) -> None:
    """A ``vp_token`` or ``authorization_details`` is JSON inside a form: its escapes are decoded by the
    endpoint, so they count, however the JSON is spelt."""
    answer = http.post("/starlette-form", content=f"state=abc&vp_token={quote(value, safe='')}".encode(),
                       headers={"Content-Type": FORM})
    assert _refused(answer), answer.text
    plus_spaces = http.post("/starlette-form", content=f"vp_token={quote(value, safe=' ').replace(' ', '+')}".encode(),
                            headers={"Content-Type": FORM})
    assert _refused(plus_spaces), plus_spaces.text


def test_json_in_a_form_field_without_a_bad_escape_passes(http: httpx.Client) -> None:
    value = json.dumps({"q": ["pla\u00e7a \U0001f600", "\\u0000 as text"]})
    assert "\\u00e7" in value and "\\ud83d\\ude00" in value and "\\\\u0000" in value
    answer = http.post("/starlette-form", data={"vp_token": value, "state": "abc"})
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.json()["fields"]["vp_token"]) == json.loads(value)


@pytest.mark.parametrize("body", [b'{"note": "a\\u0000b"}', b'{"note": "\\ud800"}', b'{"note": "a\x00b"}'])
def test_a_json_body_is_checked_on_its_decoded_strings(http: httpx.Client, body: bytes) -> None:
    assert _refused(http.post("/as-sent", content=body, headers={"Content-Type": "application/json"}))


@pytest.mark.parametrize("types", [("application/json", FORM), (FORM, "application/json"),
                                   ("application/json; charset=utf-8", FORM, "text/plain")])
@pytest.mark.parametrize("body", [
    b'{"note": "a\\u0000b"}',                  # JSON, read as JSON when its type comes first
    b'{"note=": "a\\ud800"}',                  # the same with '=', which a form would split at
    b"state=abc&error_description=a%00b",      # a form, read as a form when its type comes first
])
def test_two_content_types_are_checked_as_both_kinds(http: httpx.Client, types: tuple[str, ...], body: bytes) -> None:
    """Endpoints read the first Content-Type (7422b33): whichever comes first, nothing the endpoint would
    decode to a NUL gets past the check."""
    answer = http.post("/as-sent", content=body, headers=[("Content-Type", t) for t in types])
    assert _refused(answer), answer.text


def test_a_form_sent_with_a_second_content_type_is_also_read_as_json(http: httpx.Client) -> None:
    """The one cost of checking both kinds: the text ``\\u0000``, unencoded in a form that also claims to
    be JSON, is refused (a client sending two types gets the stricter reading)."""
    answer = http.post("/as-sent", content=b"error_description=\\u0000",
                       headers=[("Content-Type", FORM), ("Content-Type", "application/json")])
    assert _refused(answer), answer.text
