"""The request object of a transaction is signed once for every fetch without ``wallet_nonce`` (a
``GET`` of the ``request_uri``), not once per call — with a PKCS#11 key each signature is a token
operation, and anyone holding the QR code can loop on the link. A ``wallet_nonce`` still gets a fresh
object echoing it; an answered or expired transaction is still refused; a changed agency certificate
gets a new signature.

The session's verifier (SQLite) over real HTTP, the test wallet verifying what it fetches; the cache's
bounds with a clock of its own.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

from ssi.oid4vp import parse_authorization_request_uri
from tests.verifier.conftest import new_request
from tests.verifier.test_expiry import _set
from verifier.request_objects import RequestObjectCache


def _request_uri(created: dict[str, Any]) -> str:
    auth = parse_authorization_request_uri(created["uri"], allow_http_loopback=True)
    assert auth.request_uri is not None
    return auth.request_uri


def test_every_get_answers_the_object_signed_for_the_first(http, verifier, wallet):
    created = new_request(http, verifier)
    url = _request_uri(created)
    answers = [http.get(url) for _ in range(20)]
    assert {r.status_code for r in answers} == {200}
    # ES256 signatures are randomised: one text for twenty fetches is one signature
    assert len({r.text for r in answers}) == 1
    assert answers[0].headers["cache-control"] == "no-store"
    request = wallet.fetch_request(created["uri"])
    assert request.trust == "trusted" and request.wallet_nonce is None
    # another transaction has its own object
    assert http.get(_request_uri(new_request(http, verifier))).text != answers[0].text


def test_a_wallet_nonce_gets_a_fresh_object_each_time(http, verifier, wallet):
    created = new_request(http, verifier)
    url = _request_uri(created)
    got = http.get(url).text
    first = http.post(url, data={"wallet_nonce": "nonce-one"})
    second = http.post(url, data={"wallet_nonce": "nonce-two"})
    assert first.status_code == second.status_code == 200
    assert len({got, first.text, second.text}) == 3
    assert wallet.fetch_request(created["uri"], method="post").wallet_nonce  # verified, echoed
    assert http.get(url).text == got


def test_an_answered_or_expired_transaction_is_still_refused(http, verifier, wallet, creds):
    created = new_request(http, verifier)
    url = _request_uri(created)
    assert http.get(url).status_code == 200
    request = wallet.fetch_request(created["uri"])
    answer = wallet.post_response(request, wallet.build_vp_token(request, [creds.tax()]))
    assert answer.status_code == 200, answer.text
    again = http.get(url)
    assert again.status_code == 400 and again.json()["code"] == "verifier.already_answered"

    created = new_request(http, verifier)
    url = _request_uri(created)
    assert http.get(url).status_code == 200
    _set(verifier, created["id"], expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    again = http.get(url)
    assert again.status_code == 400 and again.json()["code"] == "verifier.expired_transaction"


# -- the cache itself ------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _tx(tx_id: str, clock: Clock, ttl: float = 300) -> Any:
    return SimpleNamespace(id=tx_id, expires_at=dt.datetime.fromtimestamp(clock.now + ttl, dt.UTC))


AGENCY = SimpleNamespace(x5c=["leaf-one", "ca"])


def _signer(text: str = "object") -> Any:
    calls: list[int] = []

    def sign() -> str:
        calls.append(1)
        return f"{text}-{len(calls)}"

    sign.calls = calls  # type: ignore[attr-defined]
    return sign


def test_an_object_is_kept_until_its_transaction_expires():
    clock = Clock()
    cache = RequestObjectCache(clock=clock)
    tx, sign = _tx("a", clock, ttl=60), _signer()
    assert [cache.get_or_sign(tx, AGENCY, sign) for _ in range(5)] == ["object-1"] * 5
    assert len(sign.calls) == 1 and cache.signed == 1
    clock.now += 61
    assert cache.get_or_sign(tx, AGENCY, sign) == "object-2"  # past its expiry: signed again, not kept
    assert len(cache) == 0


def test_a_new_agency_certificate_gets_a_new_signature():
    clock = Clock()
    cache = RequestObjectCache(clock=clock)
    tx, sign = _tx("a", clock), _signer()
    assert cache.get_or_sign(tx, AGENCY, sign) == "object-1"
    rotated = SimpleNamespace(x5c=["leaf-two", "ca"])
    assert cache.get_or_sign(tx, rotated, sign) == "object-2"
    assert cache.get_or_sign(tx, rotated, sign) == "object-2"


def test_a_new_agency_key_under_the_same_certificate_gets_a_new_signature():
    """A client id without ``x5c`` (or a certificate kept across a key change) has only the key to tell:
    the object signed under the old key was answered until the transaction expired."""
    clock = Clock()
    cache = RequestObjectCache(clock=clock)
    tx, sign = _tx("a", clock), _signer()
    before = SimpleNamespace(x5c=None, signing_key=b"sealed-key-one")
    assert cache.get_or_sign(tx, before, sign) == "object-1"
    assert cache.get_or_sign(tx, before, sign) == "object-1"
    after = SimpleNamespace(x5c=None, signing_key=b"sealed-key-two")
    assert cache.get_or_sign(tx, after, sign) == "object-2"


def test_the_cache_is_bounded_in_entries_and_bytes():
    clock = Clock()
    by_count = RequestObjectCache(maxsize=4, clock=clock)
    for index in range(10):
        by_count.get_or_sign(_tx(f"t{index}", clock), AGENCY, _signer())
    assert len(by_count) == 4
    by_bytes = RequestObjectCache(maxsize=100, max_bytes=8000, clock=clock)
    for index in range(10):
        by_bytes.get_or_sign(_tx(f"b{index}", clock), AGENCY, lambda: "y" * 900)
    assert len(by_bytes) == 8  # 8 x 900 bytes fit in 8000; the oldest went
    big = _signer("z" * 2000)  # over an eighth of the bytes: answered, never kept
    answers = [by_bytes.get_or_sign(_tx("big", clock), AGENCY, big) for _ in range(2)]
    assert answers == ["z" * 2000 + "-1", "z" * 2000 + "-2"] and len(by_bytes) == 8
