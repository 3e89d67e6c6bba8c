"""An answer whose result cannot be written: the wallet always gets an error in the common shape and
the request never stays ``processing`` beyond its expiry. The session's verifier and the test wallet
over HTTP; the only stand-in is the failing write (``_finish`` patched), standing for any exception
raised while finishing (a value that cannot be stored, the database)."""

from __future__ import annotations

from typing import Any

from tests.verifier.conftest import read_result
from tests.verifier.test_claims_report import ANNA, PAU, _answer
from tests.verifier.test_expiry import _past, _row, _set, _until
from verifier import transactions

PATHS = [["members", None, "name"]]


def test_a_result_that_cannot_be_written_is_recorded_as_an_internal_error(http, verifier, wallet, pki, monkeypatch):
    """Any exception while writing the result (here a value that cannot be serialised) ends the request
    as ``rejected`` (``verifier.internal_error``, no claims); the wallet is told in the common shape."""
    real_finish = transactions._finish
    writes: list[str] = []

    async def finish(*args: Any, **kwargs: Any) -> Any:
        writes.append(kwargs["status"])
        if len(writes) == 1:
            raise TypeError("Object of type object is not JSON serializable")
        return await real_finish(*args, **kwargs)

    monkeypatch.setattr(transactions, "_finish", finish)
    tx_id, response = _answer(http, verifier, wallet, pki, PATHS, [ANNA, PAU])
    assert writes == ["verified", "rejected"]
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request" and body["error_description"]
    assert [e["code"] for e in body["errors"]] == ["verifier.internal_error"]
    result = read_result(http, verifier, tx_id)
    assert result["status"] == "rejected" and result["claims"] == {} and result["credentials"] == {}
    assert [e["code"] for e in result["errors"]] == ["verifier.internal_error"]
    assert _row(verifier, tx_id).status == "rejected"


def test_a_result_that_can_never_be_written_is_left_to_the_expiry(http, verifier, wallet, pki, monkeypatch):
    """When no write goes through at all, the wallet gets 500 ``server_error`` (not an unhandled error)
    and the request, still ``processing``, is expired by the sweep at its ``expires_at``."""

    async def finish(*_args: Any, **_kwargs: Any) -> Any:
        raise ConnectionResetError("the database connection was lost")

    monkeypatch.setattr(transactions, "_finish", finish)
    tx_id, response = _answer(http, verifier, wallet, pki, PATHS, [ANNA, PAU])
    monkeypatch.undo()
    assert response.status_code == 500, response.text
    assert response.json()["error"] == "server_error"
    assert response.json()["code"] == "verifier.internal_error"
    assert _row(verifier, tx_id).status == "processing"
    _set(verifier, tx_id, expires_at=_past())
    assert _until(lambda: _row(verifier, tx_id).status == "expired", timeout=8)
    assert read_result(http, verifier, tx_id)["status"] == "expired"
