"""DirectRoute: documented by FastAPI like any route, called directly, and only for endpoints that
need nothing solved."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, Body, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from service_kit.direct_route import DirectRoute
from service_kit.errors import APIError, install_error_handlers


def _app(route_class: type) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    router = APIRouter(route_class=route_class)

    @router.post("/t/{slug}/things/{thing}", tags=["things"], summary="A thing of a tenant",
                 responses={429: {"description": "Too many"}})
    async def thing(request: Request, slug: str, thing: str) -> JSONResponse:
        if thing == "missing":
            raise APIError(404, "not_found", "no such thing")
        return JSONResponse({"slug": slug, "thing": thing, "body": (await request.body()).decode()})

    app.router.routes.extend(router.routes)
    return app


@pytest.mark.anyio
async def test_called_directly_with_the_request_and_path_parameters() -> None:
    transport = httpx.ASGITransport(app=_app(DirectRoute))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        r = await http.post("/t/acme/things/a%20b", content=b"raw")
        assert r.status_code == 200 and r.json() == {"slug": "acme", "thing": "a b", "body": "raw"}
        # The app's exception handlers still answer for the endpoint's errors.
        r = await http.post("/t/acme/things/missing")
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        assert (await http.get("/t/acme/things/x")).status_code == 405


def test_the_openapi_document_is_the_one_an_apiroute_gets() -> None:
    from fastapi.routing import APIRoute

    assert _app(DirectRoute).openapi() == _app(APIRoute).openapi()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _needs() -> str:
    return "x"


def test_endpoints_that_need_fastapi_to_solve_something_are_refused() -> None:
    router = APIRouter(route_class=DirectRoute)

    async def with_dependency(request: Request, value: str = Depends(_needs)) -> JSONResponse:  # noqa: B008
        return JSONResponse({})

    async def with_query(request: Request, q: str) -> JSONResponse:
        return JSONResponse({})

    async def with_body(request: Request, data: dict = Body(...)) -> JSONResponse:  # noqa: B008
        return JSONResponse({})

    async def with_int_path(request: Request, n: int) -> JSONResponse:
        return JSONResponse({})

    async def without_request(slug: str) -> JSONResponse:
        return JSONResponse({})

    for path, endpoint in [("/a/{slug}", with_dependency), ("/b", with_query), ("/c", with_body),
                           ("/d/{n}", with_int_path), ("/e/{slug}", without_request)]:
        with pytest.raises(TypeError, match="Request and str path parameters only"):
            router.add_api_route(path, endpoint, methods=["POST"])
