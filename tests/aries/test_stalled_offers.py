"""An Aries offer interrupted half-way is never left stranded in ``offering``.

- an unexpected error before anything was sent fails the exchange (``internal_error``) instead of
  stranding it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

import issuer.aries_channel as issuer_channel
from aries.client import AdminClient
from issuer.app import create_app as create_issuer
from issuer.settings import IssuerSettings
from tests.support.servers import serve

from .harness import wait_for
from .test_deferred_and_workers import (
    READY_SUBJECT,
    Outside,
    _connect,
    _invite,
    _issuer_settings,
    _provision,
    _wait_exchange,
    outside,  # noqa: F401 - the module's fixture: the simulated Via Oberta and the citizen's agent
)

LONG_AGO = "2000-01-01 00:00:00.000000"


@dataclass
class Issuer:
    base: str
    key: str
    settings: IssuerSettings

    def age(self, exchange_id: str, **columns: Any) -> None:
        """What a worker that stopped mid-offer leaves: ``offering``, last touched long ago."""
        values = {"state": "offering", "updated_at": LONG_AGO, **columns}
        db = sqlite3.connect(self.settings.data_dir / "issuer.db", timeout=30)
        try:
            with db:
                db.execute(f"UPDATE aries_exchanges SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",  # noqa: S608
                           [*values.values(), exchange_id])
        finally:
            db.close()

    def record(self, credential_id: str) -> httpx.Response:
        return httpx.get(f"{self.base}/v1/credentials/{credential_id}", headers={"Authorization": f"Bearer {self.key}"},
                         timeout=10)


@pytest.fixture(scope="module")
def issuer(outside: Outside) -> Iterator[Issuer]:  # noqa: F811 - the imported fixture
    settings = _issuer_settings(outside, "issuer-stalled")
    tenant = _provision(outside, settings)
    with serve(create_issuer(settings, configure_logs=False), port=settings.port) as base:
        yield Issuer(base, tenant["api_key"], settings)


class Stop:
    """Replaces an async function: its first call hangs as a stopped worker would (and fails once given
    up, as a dead worker does nothing more); later calls run the real one."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.calls = 0
        self.entered = threading.Event()
        self.given_up = threading.Event()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls > 1:
            return await self.real(*args, **kwargs)
        self.entered.set()
        while not self.given_up.is_set():
            await asyncio.sleep(0.05)
        raise RuntimeError("this worker was stopped")


async def _new_records(out: Outside, before: set[str]) -> list[dict[str, Any]]:
    """The citizen agent's credential exchanges started after ``before``."""
    async with AdminClient(out.wallet.admin_url, out.wallet.admin_api_key) as w:
        return [r["cred_ex_record"] for r in await w.cred_records() if r["cred_ex_record"]["cred_ex_id"] not in before]


def _offered(out: Outside, before: set[str]) -> list[dict[str, Any]]:
    return asyncio.run(wait_for(lambda: _new_records(out, before), bool))


def test_an_unexpected_error_before_the_offer_fails_the_exchange(
        outside: Outside, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyError("a bug in the source adapter")

    monkeypatch.setattr(issuer_channel, "fetch_record", broken)
    body = _invite(issuer.base, issuer.key, READY_SUBJECT)
    before = asyncio.run(_connect(outside.wallet, body["short_url"]))
    failed = _wait_exchange(issuer.base, issuer.key, body["exchange_id"], {"failed", "offered"}, timeout=30)
    assert failed["state"] == "failed" and failed["error"] == "internal_error", failed
    assert failed["credential_id"] is None
    assert not asyncio.run(_new_records(outside, before))
