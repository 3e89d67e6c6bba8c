"""Every ``error_description`` answered keeps to RFC 6749 §5.2's characters (%x20-21 / %x23-5B /
%x5D-7E: printable ASCII without ``"`` and ``\\``), whatever text a handler raised, so a client that
checks the grammar, or quotes the text in a header, never meets an accent, a quote or a control byte."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter

from service_kit.app import create_service_app
from service_kit.errors import APIError, safe_description
from service_kit.settings import ServiceSettings
from tests.support.servers import serve

ALLOWED = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    app = create_service_app(name="kit-test", version="1", settings=ServiceSettings(data_dir=tmp_path), db=None,
                             configure_logs=False)
    router = APIRouter()

    @router.get("/accented")
    async def accented() -> None:
        raise APIError(400, "invalid_request", "VÀLid login is not configured")

    @router.get("/quoted")
    async def quoted() -> None:
        raise APIError(400, "invalid_request", 'parameter "a\\b"\n\x7f\u2028 is repeated')

    app.include_router(router, prefix=app.state.api_prefix)
    with serve(app) as url:
        yield url


def test_descriptions_are_kept_to_the_rfc_6749_characters(base_url: str) -> None:
    accented = httpx.get(f"{base_url}/v1/accented").json()["error_description"]
    quoted = httpx.get(f"{base_url}/v1/quoted").json()["error_description"]
    assert accented == "VALid login is not configured"
    assert quoted == "parameter 'a/b'??? is repeated"
    assert ALLOWED.fullmatch(accented) and ALLOWED.fullmatch(quoted)


def test_safe_description_leaves_plain_text_alone_and_cuts_long_names() -> None:
    assert safe_description("the access token is missing, unknown or expired") == \
        "the access token is missing, unknown or expired"
    assert safe_description("x" * 100, 40) == "x" * 40 + "..."
    assert safe_description("ﬁ€", 40) == "fi?"
