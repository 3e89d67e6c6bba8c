"""A FastAPI route that FastAPI documents as usual but calls directly: ``endpoint(request, **path_params)``.

For the few endpoints on a hot path that already do their own parsing and answer with a ``Response``
(the issuer's token, nonce and credential endpoints): FastAPI's request handler solves the
dependencies, validates the parameters and inspects the result on every request, which for an
endpoint with nothing to solve cost about as much as the endpoint itself (in-process, the nonce
endpoint: 162 µs as an APIRoute, 88 µs called as a plain Starlette route). The route stays an
``APIRoute``, so the OpenAPI document is generated from the endpoint's signature and decorator as
before, and errors go through the app's exception handlers as before.

What such an endpoint may declare is checked when the route is built: the ``Request``, and path
parameters typed ``str``. Anything FastAPI would have to solve (a dependency, a body, a query, header
or cookie parameter, a ``Response`` or ``BackgroundTasks`` parameter) is refused with ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import request_response


class DirectRoute(APIRoute):
    """An ``APIRoute`` whose endpoint is awaited as ``endpoint(request, **request.path_params)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        d = self.dependant
        extra = (d.query_params or d.header_params or d.cookie_params or d.body_params or d.dependencies
                 or d.response_param_name or d.background_tasks_param_name or d.websocket_param_name
                 or d.http_connection_param_name or d.security_scopes_param_name)
        not_text = [p.name for p in d.path_params if p.field_info.annotation is not str]
        if extra or not_text or d.request_param_name is None:
            raise TypeError(f"{self.path}: a DirectRoute endpoint takes the Request and str path parameters only")
        if kwargs.get("max_body_size") is None:
            # Starlette's wrapper, not FastAPI's copy of it: that one opens two AsyncExitStacks per
            # request for dependencies with yield, which these endpoints cannot have.
            self.app = request_response(self.get_route_handler())

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint
        request_name = self.dependant.request_param_name

        async def handler(request: Request) -> Response:
            return await endpoint(**{request_name: request}, **request.path_params)  # type: ignore[dict-item]

        return handler
