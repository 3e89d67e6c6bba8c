"""A wallet app served from another origin (``CARTERA_WALLET_CORS_ORIGINS``) can read what the API
answers with: the request id and the history's paging cursor (``Cartera-Next-Before``), which a
browser hides from scripts unless the answer exposes it."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.servers import free_port, serve
from tests.wallet_api.conftest import wallet_settings
from wallet_api.app import create_app

APP_ORIGIN = "https://app.cartera.example"


def test_the_history_cursor_is_readable_from_an_allowed_origin(tmp_path: Path) -> None:
    port = free_port()
    settings = wallet_settings(tmp_path, port, "http://127.0.0.1:9", cors_origins=APP_ORIGIN)
    with serve(create_app(settings, run_background=False), port=port, ready_path="/healthz") as url:
        allowed = httpx.get(f"{url}/v1/history", headers={"Origin": APP_ORIGIN})
        other = httpx.get(f"{url}/v1/history", headers={"Origin": "https://elsewhere.example"})
    exposed = {h.strip().lower() for h in allowed.headers["access-control-expose-headers"].split(",")}
    assert exposed >= {"x-request-id", "cartera-next-before"}
    assert allowed.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "access-control-allow-origin" not in other.headers  # so the browser shows it nothing
