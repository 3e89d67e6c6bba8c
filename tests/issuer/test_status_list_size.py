"""Status lists are large for herd privacy: outside ``dev_mode`` at least 100,000 entries, refused at
start-up otherwise; small lists stay possible in ``dev_mode`` (tests)."""

from __future__ import annotations

import secrets

import pytest

from issuer.settings import IssuerSettings


def _production(**values: object) -> IssuerSettings:
    return IssuerSettings(dev_mode=False, public_url="https://issuer.example.org", master_key=secrets.token_hex(32),
                          **values)


@pytest.mark.parametrize("size", [16, 1000, 99_999])
def test_outside_dev_mode_a_small_status_list_stops_the_start(size: int) -> None:
    with pytest.raises(ValueError, match="status_list_size") as refused:
        _production(status_list_size=size)
    assert "100,000" in str(refused.value)


def test_a_small_status_list_from_the_environment_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTERA_ISSUER_STATUS_LIST_SIZE", "1024")
    with pytest.raises(ValueError, match="status_list_size"):
        _production()


def test_the_default_and_larger_lists_are_accepted_and_dev_mode_keeps_small_ones() -> None:
    assert _production().status_list_size == 100_000
    assert _production(status_list_size=1_000_000).status_list_size == 1_000_000
    assert IssuerSettings(dev_mode=True, status_list_size=16).status_list_size == 16
    with pytest.raises(ValueError, match="status_list_size"):
        IssuerSettings(dev_mode=True, status_list_size=15)
