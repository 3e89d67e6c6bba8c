"""``cartera verifier``: create presentation requests, read results and list templates over HTTP.

Where to connect, in order: ``--url``/``--api-key`` options, the ``CARTERA_VERIFIER_URL`` /
``CARTERA_VERIFIER_API_KEY`` environment variables, then the development file written by provisioning
(``var/cartera-dev.json``, or ``CARTERA_DEV_FILE``)::

    {"verifier": {"url": "http://127.0.0.1:8002",
                  "agencies": {"ajuntament-barcelona": {"api_key": "ck_..."}, ...}}}

``--agency`` picks the agency in that file (default: the first one).
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer
from rich.console import Console

from cartera.console import fail, print_listing, safe
from cartera.http_api import call_api, dev_section, path_segment
from ssi.qr import qr_terminal

app = typer.Typer(help="Verifier: ask citizens for credentials (OpenID4VP) and read verified results.",
                  no_args_is_help=True)
console = Console()

DEFAULT_URL = "http://127.0.0.1:8002"

UrlOpt = Annotated[str | None, typer.Option("--url", help="Verifier base URL \\[env CARTERA_VERIFIER_URL].")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", help="Agency API key \\[env CARTERA_VERIFIER_API_KEY].")]
AgencyOpt = Annotated[str | None, typer.Option("--agency", help="Agency slug in the development file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]






def _connection(url: str | None, api_key: str | None, agency: str | None) -> tuple[str, str]:
    dev = dev_section("verifier")
    url = url or os.environ.get("CARTERA_VERIFIER_URL") or dev.get("url") or DEFAULT_URL
    api_key = api_key or os.environ.get("CARTERA_VERIFIER_API_KEY")
    if not api_key:
        agencies = dev.get("agencies") or {}
        if agency is not None and agency not in agencies:
            fail(f"agency {agency!r} is not in the development file")
        entry = agencies.get(agency) if agency else next(iter(agencies.values()), None)
        api_key = (entry or {}).get("api_key")
    if not api_key:
        fail("no API key: give --api-key, set CARTERA_VERIFIER_API_KEY, or run `cartera run` to provision")
    return url.rstrip("/"), api_key  # type: ignore[return-value]




@app.command("request")
def request(template: Annotated[str, typer.Option("--template", "-t", help="Template name.")],
            expires_in: Annotated[int | None, typer.Option(help="Lifetime in seconds.")] = None,
            webhook_url: Annotated[str | None, typer.Option(help="Where to POST the signed result.")] = None,
            haip: Annotated[bool, typer.Option("--haip", help="Show the haip-vp:// link in the QR.")] = False,
            url: UrlOpt = None, api_key: KeyOpt = None, agency: AgencyOpt = None, as_json: JsonOpt = False) -> None:
    """Create a presentation request from a template; print its link and a QR code to scan."""
    base, key = _connection(url, api_key, agency)
    body: dict[str, Any] = {"template": template}
    if expires_in is not None:
        body["expires_in"] = expires_in
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    created = call_api("verifier", "POST", base, key, "/v1/requests", json=body)
    if as_json:
        typer.echo(json.dumps({k: created[k] for k in ("id", "uri", "request_uri", "status_url")}))
        return
    link = created["haip_uri"] if haip else created["uri"]
    typer.echo(qr_terminal(link))
    console.print(f"[bold]Request[/bold] {safe(created['id'])}  (expires {safe(created['expires_at'])})",
                  highlight=False)
    console.print(safe(link), soft_wrap=True, highlight=False)
    console.print(f"Result: cartera verifier result {safe(created['id'])}", highlight=False)


@app.command("result")
def result(request_id: Annotated[str, typer.Argument(help="The request (transaction) id. An id that begins with '-' (made before "
                                                 "2026-12) goes after '--': `cartera verifier result -- -Xy…`.")],
           url: UrlOpt = None, api_key: KeyOpt = None, agency: AgencyOpt = None) -> None:
    """Print a request's result as JSON: status, claims per query, errors."""
    base, key = _connection(url, api_key, agency)
    body = call_api("verifier", "GET", base, key, f"/v1/requests/{path_segment(request_id, 'request id')}")
    typer.echo(json.dumps({"status": body["status"], "claims": body["claims"], "errors": body["errors"],
                           "credentials": body["credentials"], "id": body["id"]}, indent=2, ensure_ascii=False))


@app.command("templates")
def templates(url: UrlOpt = None, api_key: KeyOpt = None, agency: AgencyOpt = None, as_json: JsonOpt = False) -> None:
    """List the agency's request templates."""
    base, key = _connection(url, api_key, agency)
    def row(t: dict[str, Any]) -> tuple[Any, ...]:
        asked = ", ".join(cq["id"] for cq in t["dcql_query"].get("credentials", []))
        purpose = t["purpose"].get("en") or next(iter(t["purpose"].values()), "")
        return t["name"], asked, purpose, t["response_mode"], f"{t['retention_seconds']}s"

    print_listing(call_api("verifier", "GET", base, key, "/v1/templates"), as_json=as_json,
                  columns=("name", "asks for", "purpose (en)", "mode", "retention"), row=row)
