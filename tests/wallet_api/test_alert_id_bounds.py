"""Alert ids the client names (``Last-Event-ID``, ``after``, ``POST /v1/alerts/read`` ``ids``) are alert ids
or a 400 ``invalid_request``, never a 500: ``Last-Event-ID`` ASCII digits (``²`` passes ``str.isdigit``
and fails ``int``), none of them above 2^31 - 1 (what PostgreSQL's ``INTEGER`` holds; SQLite overflows at
2^63) nor below 0. Found by the wallet review (``t3_sse``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest

from sandbox.population import generate_population
from tests.wallet_api.conftest import WalletHandle, bearer, login

#: A citizen of the wallet fixture's population; the test reads no state of its wallet.
CITIZEN = generate_population(size=50).citizens[4].identifier
MAX_ALERT_ID = 2**31 - 1


@pytest.fixture(scope="module")
def headers(wallet: WalletHandle) -> dict[str, str]:
    return bearer(login(wallet.url, CITIZEN))


@contextlib.contextmanager
def _stream(wallet: WalletHandle, headers: dict[str, str], **kwargs: object) -> Iterator[httpx.Response]:
    with httpx.stream("GET", f"{wallet.url}/v1/alerts/stream", headers=headers, timeout=10,
                      **kwargs) as response:  # type: ignore[arg-type]
        yield response


def _refused(response: httpx.Response) -> None:
    response.read()
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request", response.text


@pytest.mark.parametrize("event_id", [b"\xb2", b"1\xb2", b"9" * 5000, b"9" * 11, b"9" * 30,
                                      str(MAX_ALERT_ID + 1).encode(), b"-1", b"+1", b"1.0", b""])
def test_a_last_event_id_that_is_no_alert_id_is_a_400(wallet: WalletHandle, headers: dict[str, str],
                                                      event_id: bytes) -> None:
    with _stream(wallet, {**headers, "Last-Event-ID": event_id}) as response:  # type: ignore[dict-item]
        _refused(response)


@pytest.mark.parametrize("after", ["9" * 30, str(MAX_ALERT_ID + 1), "-1"])
def test_an_after_beyond_the_alert_ids_is_a_400_before_the_stream_starts(
        wallet: WalletHandle, headers: dict[str, str], after: str) -> None:
    with _stream(wallet, headers, params={"after": after}) as response:
        _refused(response)


@pytest.mark.parametrize("ids", [[10**30], [MAX_ALERT_ID + 1], [2**63], [-1], [-(2**40)], [1, 10**30]])
def test_marking_ids_beyond_the_alert_ids_is_a_400(wallet: WalletHandle, headers: dict[str, str],
                                                   ids: list[int]) -> None:
    r = httpx.post(f"{wallet.url}/v1/alerts/read", headers=headers, json={"ids": ids}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text


def test_the_largest_alert_id_is_still_taken(wallet: WalletHandle, headers: dict[str, str]) -> None:
    r = httpx.post(f"{wallet.url}/v1/alerts/read", headers=headers, json={"ids": [0, MAX_ALERT_ID]}, timeout=10)
    assert r.status_code == 204, r.text
    for kwargs in ({"headers": {**headers, "Last-Event-ID": str(MAX_ALERT_ID)}},
                   {"headers": {**headers, "Last-Event-ID": "0000000007"}},
                   {"headers": headers, "params": {"after": str(MAX_ALERT_ID)}}):
        with _stream(wallet, **kwargs) as response:  # type: ignore[arg-type]
            assert response.status_code == 200
            assert next(response.iter_lines()) == ": connected"
