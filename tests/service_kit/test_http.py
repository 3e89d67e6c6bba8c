"""A tiny app built with create_service_app, served over real HTTP on loopback."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from service_kit.app import create_service_app
from service_kit.db import Database
from service_kit.errors import APIError
from service_kit.logging import configure_logging
from service_kit.security import no_store
from service_kit.settings import ServiceSettings
from ssi.errors import SDJWTError
from tests.support.postgres import PostgresCluster
from tests.support.servers import free_port, serve

SECRET_MARK = "s3cr3t-Detail-xyz"


class Item(BaseModel):
    name: str
    count: int


def build_app(settings: ServiceSettings, db: Database | None) -> FastAPI:
    app = create_service_app(name="kit-test", version="1.2.3", settings=settings, db=db, configure_logs=False)
    made = app.state.metrics.counter("cartera_items_total", "Items created by outcome.", ["outcome"])
    router = APIRouter()

    @router.post("/items")
    async def create_item(item: Item) -> dict[str, object]:
        made.labels(outcome="ok").inc()
        return {"name": item.name, "count": item.count}

    @router.get("/items/{item_id}")
    async def get_item(item_id: str, code: str | None = None) -> dict[str, str]:
        logging.getLogger("kit.test").info("fetched an item")
        return {"id": item_id}

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError(SECRET_MARK)

    @router.get("/api-error")
    async def api_error() -> None:
        raise APIError(401, "invalid_token", "the access token expired", {"WWW-Authenticate": "Bearer"})

    @router.get("/ssi-error")
    async def ssi_error() -> None:
        raise SDJWTError("unreferenced_disclosure", "a disclosure is not referenced by any digest")

    @router.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @router.post("/nonce", dependencies=[Depends(no_store)])
    async def nonce() -> dict[str, str]:
        return {"c_nonce": "abc"}

    @router.get("/page", response_class=HTMLResponse)
    async def page() -> str:
        return "<!doctype html><title>desk</title><p>hello</p>"

    app.include_router(router, prefix=app.state.api_prefix)
    return app


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("kit-test", "info", stream=buffer)
    try:
        yield buffer
    finally:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if getattr(handler, "_cartera_json_handler", False):
                root.removeHandler(handler)


def log_lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


@pytest.fixture
def settings(tmp_path: Path) -> ServiceSettings:
    return ServiceSettings(data_dir=tmp_path, max_body_bytes=4096)


@pytest.fixture
def base_url(settings: ServiceSettings, tmp_path: Path, log_buffer: io.StringIO) -> Iterator[str]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'kit.db'}")
    with serve(build_app(settings, db)) as url:
        yield url


def test_malformed_json_is_a_400_invalid_request(base_url: str) -> None:
    r = httpx.post(f"{base_url}/v1/items", content=b'{"name": "a", ', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_request", "error_description": "request body is not valid JSON"}
    assert r.headers["cache-control"] == "no-store"


def test_validation_errors_name_fields_but_never_echo_values(base_url: str) -> None:
    r = httpx.post(f"{base_url}/v1/items", json={"count": SECRET_MARK})
    assert r.status_code == 400
    body = r.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == "invalid_request"
    assert "name: required" in body["error_description"]
    assert "count: must be an integer" in body["error_description"]
    assert SECRET_MARK not in r.text


def test_valid_request_passes(base_url: str) -> None:
    r = httpx.post(f"{base_url}/v1/items", json={"name": "a", "count": 2})
    assert r.status_code == 200
    assert r.json() == {"name": "a", "count": 2}
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in r.headers


def test_404_and_405_have_the_same_error_shape(base_url: str) -> None:
    r = httpx.get(f"{base_url}/v1/nothing-here")
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "error_description": "Not Found"}
    r = httpx.get(f"{base_url}/v1/items")
    assert r.status_code == 405
    assert r.json()["error"] == "method_not_allowed"
    assert "POST" in r.headers["allow"]


def test_body_over_the_limit_is_refused_by_content_length(base_url: str) -> None:
    r = httpx.post(f"{base_url}/v1/upload", content=b"x" * 5000)
    assert r.status_code == 413
    assert r.json()["error"] == "request_too_large"


def test_body_over_the_limit_is_refused_while_streaming(base_url: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 1000

    # A generator body is sent chunked, without Content-Length: only the streaming check can catch it.
    r = httpx.post(f"{base_url}/v1/upload", content=chunks())
    assert r.status_code == 413
    assert r.json()["error"] == "request_too_large"
    ok = httpx.post(f"{base_url}/v1/upload", content=iter([b"z" * 1000, b"z" * 1000]))
    assert ok.status_code == 200 and ok.json() == {"size": 2000}


def test_streamed_json_over_the_limit_is_413_not_400(base_url: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(10):
            yield b"n" * 1000
        yield b'", "count": 1}'

    r = httpx.post(f"{base_url}/v1/items", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"] == "request_too_large"


def test_unexpected_exception_is_500_without_details_and_logged_with_request_id(
    base_url: str, log_buffer: io.StringIO
) -> None:
    r = httpx.get(f"{base_url}/v1/boom")
    assert r.status_code == 500
    request_id = r.headers["x-request-id"]
    assert r.json() == {"error": "server_error", "error_description": f"internal error (request id {request_id})"}
    assert SECRET_MARK not in r.text and "Traceback" not in r.text
    errors = [line for line in log_lines(log_buffer) if line["logger"] == "cartera.errors"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == request_id
    assert errors[0]["level"] == "error"
    assert "RuntimeError" in str(errors[0]["exception"])
    # The exception's message may quote the data it was handling: the log keeps its type only.
    assert SECRET_MARK not in log_buffer.getvalue()
    # The server keeps serving afterwards.
    assert httpx.get(f"{base_url}/healthz").status_code == 200


def test_an_unexpected_500_carries_the_security_headers(tmp_path: Path, log_buffer: io.StringIO) -> None:
    """The catch-all 500 is made outside the routes and their error handlers: it carries the same
    headers as any other answer (HSTS too when the public URL is https)."""
    settings = ServiceSettings(data_dir=tmp_path, public_url="https://kit.example.org")
    with serve(build_app(settings, None)) as url:
        answers = {path: httpx.get(f"{url}{path}") for path in ("/v1/boom", "/v1/nowhere")}
    assert [r.status_code for r in answers.values()] == [500, 404]
    for path, r in answers.items():
        assert r.headers.get("x-content-type-options") == "nosniff", path
        assert r.headers.get("referrer-policy") == "no-referrer", path
        assert r.headers.get("strict-transport-security") == "max-age=31536000", path
        assert r.headers.get("cache-control") == "no-store", path
        assert r.headers.get("x-request-id"), path


def test_a_task_exception_nobody_retrieved_is_logged_without_its_message(
        settings: ServiceSettings, log_buffer: io.StringIO) -> None:
    """asyncio's "Task exception was never retrieved" would write the task's repr, which quotes the
    exception (a claim value, an identifier): the services' loop logs its type only."""
    import asyncio

    app = build_app(settings, None)

    async def work() -> None:
        raise ValueError(SECRET_MARK)

    @app.post("/v1/fire-and-forget")
    async def fire_and_forget() -> dict[str, bool]:
        task = asyncio.get_running_loop().create_task(work())
        done, _ = await asyncio.wait([task])  # finished, its exception never retrieved
        del task, done  # the last references: asyncio reports the exception now
        return {"ok": True}

    with serve(app) as url:
        assert httpx.post(f"{url}/v1/fire-and-forget").status_code == 200
    text = log_buffer.getvalue()
    assert SECRET_MARK not in text
    line = next(line for line in log_lines(log_buffer) if line["logger"] == "asyncio")
    assert line["message"] == "Task exception was never retrieved" and line["level"] == "error"
    assert line["error"] == "ValueError" and "work" in str(line["coroutine"])


def test_api_error_and_ssi_error_shapes(base_url: str) -> None:
    r = httpx.get(f"{base_url}/v1/api-error")
    assert r.status_code == 401
    assert r.json() == {"error": "invalid_token", "error_description": "the access token expired"}
    assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.get(f"{base_url}/v1/ssi-error")
    assert r.status_code == 400
    assert r.json() == {
        "error": "invalid_request",
        "error_description": "a disclosure is not referenced by any digest",
        "code": "sd_jwt.unreferenced_disclosure",
    }


def test_request_id_is_accepted_when_sane_and_replaced_when_not(base_url: str) -> None:
    r = httpx.get(f"{base_url}/healthz", headers={"X-Request-Id": "desk-42.req_7"})
    assert r.headers["x-request-id"] == "desk-42.req_7"
    for bad in ["has space", "x" * 200, "<script>", ""]:
        r = httpx.get(f"{base_url}/healthz", headers={"X-Request-Id": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), bad
    r1, r2 = httpx.get(f"{base_url}/healthz"), httpx.get(f"{base_url}/healthz")
    assert r1.headers["x-request-id"] != r2.headers["x-request-id"]


def test_json_logs_carry_request_id_and_route_template_but_no_query_or_ids(
    base_url: str, log_buffer: io.StringIO
) -> None:
    r = httpx.get(f"{base_url}/v1/items/ITEM-77?code=AUTHCODE-123", headers={"X-Request-Id": "rid-1"})
    assert r.status_code == 200
    text = log_buffer.getvalue()
    assert "AUTHCODE-123" not in text
    assert "ITEM-77" not in text
    lines = log_lines(log_buffer)
    for line in lines:
        assert {"time", "level", "logger", "message", "request_id", "service"} <= set(line)
        assert line["service"] == "kit-test"
    app_line = next(line for line in lines if line["message"] == "fetched an item")
    assert app_line["request_id"] == "rid-1"
    access = next(line for line in lines if line["logger"] == "cartera.access" and line["request_id"] == "rid-1")
    assert access["route"] == "/v1/items/{item_id}"
    assert access["method"] == "GET"
    assert access["status"] == 200
    assert isinstance(access["duration_ms"], float)


def test_metrics_count_by_route_template(base_url: str) -> None:
    for item in ("a", "b", "c"):
        httpx.get(f"{base_url}/v1/items/{item}")
    httpx.post(f"{base_url}/v1/items", json={"name": "a", "count": 1})
    httpx.get(f"{base_url}/v1/unknown/path/123")
    r = httpx.get(f"{base_url}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'http_requests_total{method="GET",route="/v1/items/{item_id}",status="200"} 3.0' in text
    assert 'http_requests_total{method="POST",route="/v1/items",status="200"} 1.0' in text
    assert 'http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'http_request_duration_seconds_count{method="GET",route="/v1/items/{item_id}",status="200"} 3.0' in text
    assert 'cartera_items_total{outcome="ok"} 1.0' in text
    assert "/v1/items/a" not in text and "/v1/unknown" not in text


def _asgi_get(app: FastAPI, path: str, peer: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """``path`` asked of ``app`` by a client whose TCP peer address is ``peer`` (in process: no test
    host has a routable address of its own to connect from)."""
    import asyncio

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://kit.example.org") as client:
            return await client.get(path, headers=headers)
    return asyncio.run(go())


def test_metrics_without_a_token_answer_this_host_only(settings: ServiceSettings, log_buffer: io.StringIO) -> None:
    """Per-tenant counts must not be public: without ``metrics_token``, ``/metrics`` answers a client
    connecting from loopback with no proxy in between; anyone else meets the 404 of a missing path."""
    app = build_app(settings, None)
    with serve(app) as url:
        assert httpx.get(f"{url}/metrics").status_code == 200
        # A proxy on this host connects from loopback for every client: its headers rule the request out,
        # and a client cannot talk its way in with them either.
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            r = httpx.get(f"{url}/metrics", headers={header: "127.0.0.1"})
            assert r.status_code == 404 and r.json()["error"] == "not_found", header
    for peer in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert _asgi_get(app, "/metrics", peer).status_code == 200, peer
    for peer in ("203.0.113.9", "10.0.0.5", "2001:db8::1", "::ffff:10.0.0.5"):
        r = _asgi_get(app, "/metrics", peer)
        assert r.status_code == 404, peer
        assert r.json() == _asgi_get(app, "/nowhere", peer).json()
        assert "http_requests_total" not in r.text


def test_metrics_with_a_token_require_it_from_anywhere(tmp_path: Path, log_buffer: io.StringIO) -> None:
    settings = ServiceSettings(data_dir=tmp_path, metrics_token="scrape-0123456789abcdef")
    app = build_app(settings, None)
    with serve(app) as url:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic scrape-0123456789abcdef"}):
            r = httpx.get(f"{url}/metrics", headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["error"] == "unauthorized" and r.headers["cache-control"] == "no-store"
            assert r.headers["www-authenticate"] == "Bearer"
        r = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer scrape-0123456789abcdef"})
        assert r.status_code == 200 and "http_requests_total" in r.text
    good = {"Authorization": "Bearer scrape-0123456789abcdef"}
    assert _asgi_get(app, "/metrics", "203.0.113.9", good).status_code == 200
    assert _asgi_get(app, "/metrics", "203.0.113.9").status_code == 401
    assert ServiceSettings(data_dir=tmp_path, metrics_token="").metrics_token is None


def test_only_the_databases_timeouts_and_connection_errors_are_a_503(
        settings: ServiceSettings, log_buffer: io.StringIO) -> None:
    """Python's TimeoutError and ConnectionError come from anything (an outbound call, the service's own
    asyncio.timeout): a bug or a peer's failure there is a 500, not "the database is unavailable". The
    database driver's own (asyncpg refusing to connect raises ConnectionRefusedError as is) stay a 503."""
    import asyncio

    from sqlalchemy import text

    app = build_app(settings, Database(f"postgresql+asyncpg://u:p@127.0.0.1:{free_port()}/none"))

    @app.get("/v1/own-timeout")
    async def own_timeout() -> None:
        async with asyncio.timeout(0):
            await asyncio.sleep(1)

    @app.get("/v1/peer-reset")
    async def peer_reset() -> None:
        raise ConnectionResetError(SECRET_MARK)

    @app.get("/v1/bare-timeout")
    async def bare_timeout() -> None:
        raise TimeoutError(SECRET_MARK)

    @app.get("/v1/query")
    async def query() -> None:
        async with app.state.db.session() as session:
            await session.execute(text("SELECT 1"))

    with serve(app) as url:
        answers = {path: httpx.get(f"{url}/v1/{path}") for path in ("own-timeout", "peer-reset", "bare-timeout",
                                                                    "query")}
    for path in ("own-timeout", "peer-reset", "bare-timeout"):
        r = answers[path]
        assert r.status_code == 500 and r.json()["error"] == "server_error", (path, r.text)
        assert SECRET_MARK not in r.text and "retry-after" not in r.headers
    r = answers["query"]
    assert r.status_code == 503 and r.json() == {
        "error": "temporarily_unavailable", "error_description": "the service's database is unavailable; retry shortly"}
    assert r.headers["retry-after"] == "2"
    assert SECRET_MARK not in log_buffer.getvalue()


def test_health_and_readiness(base_url: str) -> None:
    r = httpx.get(f"{base_url}/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = httpx.get(f"{base_url}/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"database": "ok"}}


def test_readyz_is_503_when_the_database_is_unreachable(settings: ServiceSettings, log_buffer: io.StringIO) -> None:
    # Nothing listens on this port: the database is "down" from the start.
    db = Database(f"postgresql+asyncpg://u:p@127.0.0.1:{free_port()}/none")
    with serve(build_app(settings, db)) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        r = httpx.get(f"{url}/readyz")
    assert r.status_code == 503
    assert r.json() == {"status": "unavailable", "checks": {"database": "unavailable"}}


def test_readyz_turns_503_when_postgres_goes_away(
    postgres_cluster: PostgresCluster, settings: ServiceSettings, log_buffer: io.StringIO
) -> None:
    db_url = postgres_cluster.create_database("ready")
    with serve(build_app(settings, Database(db_url))) as url:
        assert httpx.get(f"{url}/readyz").status_code == 200
        postgres_cluster.drop_database(db_url)
        r = httpx.get(f"{url}/readyz")
        assert r.status_code == 503
        assert db_url.split("@")[1] not in r.text


def test_security_headers_for_html_and_no_store_when_asked(base_url: str) -> None:
    r = httpx.get(f"{base_url}/v1/page")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    r = httpx.post(f"{base_url}/v1/nonce")
    assert r.headers["cache-control"] == "no-store"
    assert httpx.get(f"{base_url}/v1/items/a").headers.get("cache-control") is None


def test_no_cors_headers_without_configured_origins(base_url: str) -> None:
    r = httpx.options(
        f"{base_url}/v1/items",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in r.headers
    r = httpx.get(f"{base_url}/v1/items/a", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_only_for_configured_origins(tmp_path: Path, log_buffer: io.StringIO) -> None:
    settings = ServiceSettings(data_dir=tmp_path, cors_origins="https://wallet.example.org")  # type: ignore[arg-type]
    with serve(build_app(settings, None)) as url:
        ok = httpx.options(
            f"{url}/v1/items",
            headers={"Origin": "https://wallet.example.org", "Access-Control-Request-Method": "POST"},
        )
        bad = httpx.get(f"{url}/v1/items/a", headers={"Origin": "https://evil.example"})
        good = httpx.get(f"{url}/v1/items/a", headers={"Origin": "https://wallet.example.org"})
        ready = httpx.get(f"{url}/readyz")
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://wallet.example.org"
    assert "access-control-allow-origin" not in bad.headers
    assert good.headers["access-control-allow-origin"] == "https://wallet.example.org"
    assert "x-request-id" in good.headers["access-control-expose-headers"].lower()
    assert ready.json() == {"status": "ready", "checks": {}}


def test_openapi_has_name_and_version(base_url: str) -> None:
    doc = httpx.get(f"{base_url}/openapi.json").json()
    assert doc["info"] == {"title": "kit-test", "version": "1.2.3"}
    assert "/v1/items" in doc["paths"]
    assert "/metrics" not in doc["paths"]
