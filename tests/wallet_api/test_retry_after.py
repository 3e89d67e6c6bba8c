"""The issuer writes ``Retry-After`` (seconds or an HTTP date): whatever it sends, the wallet reads seconds or nothing,
never an exception (which would turn a busy issuer into the wallet's own 500)."""

from __future__ import annotations

import httpx
import pytest

from wallet_api.receiving import _retry_after


@pytest.mark.parametrize(("value", "expected"), [
    ("3", 3.0), (" 12 ", 12.0), ("", None), ("²", None), ("٣", None), ("-1", None), ("1.5", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("Wed, 21 Oct 2015 07:28:00", 0.0), ("x" * 500, None),
])
def test_retry_after_is_seconds_or_nothing(value: str, expected: float | None) -> None:
    # As received from the network: bytes, which httpx decodes (UTF-8 here).
    assert _retry_after(httpx.Response(503, headers={"Retry-After": value.encode()})) == expected
