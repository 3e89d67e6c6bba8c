"""Document the common error answers in every service's OpenAPI document.

FastAPI documents a ``422`` validation error with its own body shape on every operation that takes
input, and nothing else; Cartera answers validation errors with ``400`` and every client error with
``{"error", "error_description"}`` (see :mod:`service_kit.errors`). A client generated from the document,
or a fuzzer checking answers against it, would otherwise meet statuses and bodies it was never told of.

:func:`document_error_responses` rewrites the generated document once, when it is first served:

- the ``ErrorResponse`` schema is added to the components;
- ``422`` is replaced by ``400`` (a parameter or the body is invalid, or the body is not well-formed);
- ``4XX`` documents every other client error (401, 403, 404, 405, 409, 413, 415, 429...) in that shape;
- ``502`` and ``503`` document a dependency that cannot be reached or answered wrongly (the database, a
  data source, an issuer, a verifier, the identity provider): answers about the world, not bugs;
- an error response a route documented without a body schema gets ``ErrorResponse``.

``500`` is never documented: an internal error stays what it is, a bug.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA_NAME = "ErrorResponse"
ERROR_SCHEMA: dict[str, Any] = {
    "title": ERROR_SCHEMA_NAME,
    "type": "object",
    "description": "The OAuth 2.0 error shape that every Cartera service answers with.",
    "properties": {
        "error": {"type": "string", "description": "A protocol error code, e.g. invalid_request, invalid_grant."},
        "error_description": {"type": "string", "description": "A human-readable sentence; never secrets."},
    },
    "required": ["error"],
    # Some errors add members (c_nonce, code, interval).
    "additionalProperties": True,
}
_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": dict(_REF)}}


def rewrite_error_responses(document: dict[str, Any]) -> dict[str, Any]:
    """Apply the rewrite described in the module docstring to ``document`` in place; return it."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.setdefault(ERROR_SCHEMA_NAME, ERROR_SCHEMA)
    for path_item in document.get("paths", {}).values():
        for method in _METHODS:
            operation = path_item.get(method)
            if not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            validation = responses.pop("422", None)
            # A route that documents its own client errors as a range (an HTML error page) keeps them.
            if validation is not None or ("400" not in responses and "4XX" not in responses):
                responses.setdefault("400", {
                    "description": "Invalid request: a parameter or the body is invalid or not well-formed.",
                    "content": _error_content()})
            responses.setdefault("4XX", {
                "description": "Any other client error (unauthenticated, forbidden, unknown resource, method not "
                               "allowed, conflict, body too large, unsupported media type, rate limited).",
                "content": _error_content()})
            responses.setdefault("502", {
                "description": "A service this one depends on (issuer, verifier, identity provider, data source) "
                               "answered wrongly or could not be reached.",
                "content": _error_content()})
            responses.setdefault("503", {
                "description": "Temporarily unavailable (a dependency is down or overloaded); see Retry-After.",
                "content": _error_content()})
            for status, response in responses.items():
                if not (isinstance(response, dict) and str(status)[:1] in ("4", "5")):
                    continue
                content = response.get("content")
                if not content:
                    response["content"] = _error_content()
                    continue
                json_body = content.get("application/json")
                if isinstance(json_body, dict) and not json_body.get("schema"):
                    json_body["schema"] = dict(_REF)
    # FastAPI's validation error schemas, once no operation refers to them any more.
    if "#/components/schemas/HTTPValidationError" not in json.dumps(document.get("paths", {})):
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
    return document


def document_error_responses(app: FastAPI) -> None:
    """Make ``app`` serve its OpenAPI document with the common error responses documented."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = rewrite_error_responses(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
