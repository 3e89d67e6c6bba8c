"""Two wallet workers deliver alert webhooks while one endpoint call hangs: no alert is sent twice.

A worker leases one row at a time, for longer than that row's tries can take (three calls of
``http_timeout``). It used to lease twenty rows under one two-minute lease and send them in turn: a slow
endpoint made the round outlast the lease, and another worker took the rest of the batch — and the row
still in flight — and sent them again.

An in-process wallet on its own SQLite database and a real receiver on loopback; the workers' clock is
moved forward instead of waiting two minutes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from fastapi import FastAPI, Request, Response

import wallet_api.background as background
from service_kit.webhooks import EVENT_ID_HEADER
from tests.support.servers import free_port, serve
from tests.wallet_api.conftest import wallet_settings
from wallet_api.app import create_app
from wallet_api.models import AlertWebhookOutbox, Wallet

pytestmark = pytest.mark.anyio

HTTP_TIMEOUT = 40.0


def _receiver(sent: Counter[str], hanging: threading.Event, release: threading.Event) -> FastAPI:
    app = FastAPI()

    @app.post("/alerts")
    async def alerts(request: Request) -> Response:
        event_id = request.headers.get(EVENT_ID_HEADER, "")
        sent[event_id] += 1
        if event_id == "evt_slow" and sent[event_id] == 1:
            hanging.set()  # the first call hangs until the test lets it answer
            await asyncio.to_thread(release.wait, 20)
        return Response(status_code=204)

    return app


async def test_a_slow_endpoint_does_not_get_an_alert_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: Counter[str] = Counter()
    hanging, release = threading.Event(), threading.Event()
    with serve(_receiver(sent, hanging, release)) as receiver:
        settings = wallet_settings(tmp_path, free_port(), "http://127.0.0.1:9", http_timeout=HTTP_TIMEOUT,
                                   webhook_url=f"{receiver}/alerts", webhook_secret="s" * 32)
        app = create_app(settings, run_background=False)
        async with app.router.lifespan_context(app):
            ctx = app.state.wallet
            start = dt.datetime.now(dt.UTC)
            async with ctx.db.session() as session:
                session.add(Wallet(id="w-lease", subject_index="lease", data_key=b"\0", profile=b"\0"))
                await session.flush()
                for i, event_id in enumerate(("evt_slow", "evt_next")):
                    due = start - dt.timedelta(seconds=10 - i)
                    session.add(AlertWebhookOutbox(id=event_id, wallet_id="w-lease", endpoint_id="alerts",
                                                   event_type="wallet.alert", body=b"{}", attempts=0,
                                                   created_at=due, next_attempt_at=due))
            elapsed = dt.timedelta()
            monkeypatch.setattr(background, "utcnow", lambda: dt.datetime.now(dt.UTC) + elapsed)

            first = asyncio.create_task(background.deliver_alert_webhooks(ctx))
            deadline = time.monotonic() + 10
            while not hanging.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert hanging.is_set(), "the first worker never reached the endpoint"
            # 130 s on, the slow call still within its tries (3 × 40 s and pauses): past the old
            # two-minute lease, short of the lease a row now gets.
            elapsed = dt.timedelta(seconds=130)
            second = await background.deliver_alert_webhooks(ctx)
            release.set()
            first_delivered = await asyncio.wait_for(first, 20)

    assert sent == {"evt_slow": 1, "evt_next": 1}
    assert first_delivered + second == 2
