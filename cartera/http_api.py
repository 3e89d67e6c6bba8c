"""How CLI commands reach the running services: where they are, and readable errors from their APIs.

Where to connect comes, in order, from command options, environment variables, then the development
file written by ``cartera run`` (``var/cartera-dev.json``, or the file named by ``CARTERA_DEV_FILE``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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


def call_api(service: str, method: str, base_url: str, token: str, path: str, *, timeout: float = 30,
             **kwargs: Any) -> Any:
    """Call ``base_url + path`` with a bearer token; return the JSON body, or exit with a readable
    error (the API's ``error``/``error_description`` and any ``problems`` list)."""
    if not token:
        fail(f"no credentials for the {service}", hint="give --api-key/--token or set the environment variable")
    try:
        response = httpx.request(method, base_url.rstrip("/") + path, headers={"Authorization": f"Bearer {token}"},
                                 timeout=timeout, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the {service} at {base_url} ({type(exc).__name__})",
             hint="is the system running? `cartera status` shows it")
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = {"error": "bad_response", "error_description": response.text[:200]}
    if response.status_code >= 400:
        if not isinstance(body, dict):
            body = {}
        problems = "; ".join(f"{p.get('path')}: {p.get('message')}" for p in body.get("problems", [])[:10]
                             if isinstance(p, dict))
        fail(f"{body.get('error', f'HTTP {response.status_code}')}: {body.get('error_description', '')}"
             + (f" ({problems})" if problems else ""))
    return body
