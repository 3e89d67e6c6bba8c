"""How CLI commands reach the running services: where they are, and readable errors from their APIs.

Where to connect comes, in order, from command options, environment variables, then the development
file written by ``cartera run`` (``var/cartera-dev.json``, or the file named by ``CARTERA_DEV_FILE``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from cartera.console import fail
from cartera.system import DEV_FILE_NAME

DEFAULT_DEV_FILE = Path("var") / DEV_FILE_NAME


def dev_file_path() -> Path:
    return Path(os.environ.get("CARTERA_DEV_FILE") or DEFAULT_DEV_FILE)


def dev_section(name: str) -> dict[str, Any]:
    """The ``name`` member of the development file (``{}`` when there is no file)."""
    path = dev_file_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        fail(f"{path} is not readable JSON")
    section = data.get(name, {}) if isinstance(data, dict) else {}
    return section if isinstance(section, dict) else {}


_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")


def path_segment(value: str, what: str) -> str:
    """``value`` (an id given on the command line or named by an API) as one URL path segment.

    Ids are letters, digits, ``.``, ``_`` and ``-``, without ``..``: anything else (``/``, ``?``, ``#``,
    a dot segment) would make the request reach another endpoint than the command means. The value
    is percent-encoded as well, so that nothing in it can ever be read as URL syntax."""
    if not isinstance(value, str) or not _ID.fullmatch(value) or ".." in value or value == ".":
        fail(f"not a valid {what}: {value!r}", hint="ids are letters, digits, '.', '_' and '-'")
    return quote(value, safe="")


def call_api(service: str, method: str, base_url: str, token: str, path: str, *, timeout: float = 30,
             answerable: Collection[str] = (), **kwargs: Any) -> Any:
    """Call ``base_url + path`` with a bearer token; return the JSON body, or exit with a readable
    error (the API's ``error``/``error_description`` and any ``problems`` list). An error whose code
    is in ``answerable`` (one the caller can put right, e.g. by asking for a PIN) is returned instead."""
    if not token:
        fail(f"no credentials for the {service}", hint="give --api-key/--token or set the environment variable")
    try:
        response = httpx.request(method, base_url.rstrip("/") + path, headers={"Authorization": f"Bearer {token}"},
                                 timeout=timeout, **kwargs)
    except httpx.InvalidURL:
        fail(f"{base_url} is not a usable URL for the {service}")
    except httpx.HTTPError as exc:
        fail(f"cannot reach the {service} at {base_url} ({type(exc).__name__})",
             hint="is the system running? `cartera status` shows it")
    if 300 <= response.status_code < 400:
        fail(f"the {service} at {base_url} answered with a redirect (HTTP {response.status_code})",
             hint="is --url the address of the API?")
    try:
        body = response.json() if response.content else {}
    except ValueError:
        if response.status_code < 400:
            fail(f"the {service} at {base_url} answered HTTP {response.status_code} with a body that is not JSON",
                 hint="is --url the address of the API?")
        body = {"error": "bad_response", "error_description": response.text[:200]}
    if response.status_code >= 400:
        if not isinstance(body, dict):
            body = {}
        if body.get("error") in answerable:
            return body
        listed = body.get("problems")
        problems = "; ".join(f"{p.get('path')}: {p.get('message')}" for p in
                             (listed if isinstance(listed, list) else [])[:10] if isinstance(p, dict))
        fail(f"{body.get('error', f'HTTP {response.status_code}')}: {body.get('error_description', '')}"
             + (f" ({problems})" if problems else ""))
    return body
