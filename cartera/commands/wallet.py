"""`cartera wallet`: operate the wallet API (master key rotation, status) and use it as a citizen.

Connection: `--url` (or `CARTERA_WALLET_URL`, default http://127.0.0.1:8003) and, for citizen
commands, `--token` (or `CARTERA_WALLET_TOKEN`: an access token from the login flow).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cartera.console import fail
from cartera.http_api import call_api

app = typer.Typer(help="The citizen wallet API: master-key rotation, credentials, offers, requests.",
                  no_args_is_help=True)
console = Console()

UrlOpt = Annotated[str, typer.Option("--url", envvar="CARTERA_WALLET_URL", help="Wallet API base URL.")]
TokenOpt = Annotated[str, typer.Option("--token", envvar="CARTERA_WALLET_TOKEN", help="A citizen access token.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
DEFAULT_URL = "http://127.0.0.1:8003"






@app.command("rotate-master-key")
def rotate_master_key(
    new_key_file: Annotated[Path, typer.Option("--new-key-file", help="File with the new master key "
                                               "(base64url or hex, 32 bytes). Created if missing with --generate.")],
    generate: Annotated[bool, typer.Option("--generate", help="Create the new key file with a random key.")] = False,
) -> None:
    """Rewrap every wallet data key under a new master key (no downtime).

    Reads the current configuration (CARTERA_WALLET_MASTER_KEY[_FILE], CARTERA_WALLET_DATABASE_URL...).
    First restart the services with the new key as master key and the old one as a previous key; then
    run this; then drop the old key. Rows sealed under data keys are not touched.
    """
    from service_kit.crypto import SecretBox, SecretBoxError, parse_master_key
    from wallet_api.provisioning import rotate_master_key as rotate
    from wallet_api.settings import WalletSettings

    if generate and not new_key_file.exists():
        import base64

        new_key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(new_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.urlsafe_b64encode(SecretBox.generate_key()).rstrip(b"=").decode() + "\n")
    try:
        new_key = parse_master_key(new_key_file.read_bytes())
        count = asyncio.run(rotate(WalletSettings(), new_key))
    except FileNotFoundError:
        fail(f"{new_key_file} does not exist (use --generate to create it)")
    except SecretBoxError as exc:
        fail(exc.detail)
    console.print(f"rewrapped {count} key(s) under the new master key")


@app.command("credentials")
def credentials(url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """List the citizen's credentials."""
    items = call_api("wallet API", "GET", url, token, "/v1/credentials")
    if as_json:
        typer.echo(json.dumps(items, indent=1, ensure_ascii=False))
        return
    table = Table("id", "name", "issuer", "status", "expires")
    for item in items:
        table.add_row(item["id"], item["name"], item["issuer_name"], item["status"], str(item["expires_at"] or ""))
    console.print(table)


@app.command("receive")
def receive(offer_uri: Annotated[str, typer.Argument(help="The openid-credential-offer:// URI.")],
            tx_code: Annotated[str | None, typer.Option("--tx-code", help="The transaction code.")] = None,
            url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """Receive a credential offer: preview, then accept."""
    preview = call_api("wallet API", "POST", url, token, "/v1/offers", json={"offer_uri": offer_uri})
    result = call_api("wallet API", "POST", url, token, f"/v1/offers/{preview['offer_id']}/accept", json={"tx_code": tx_code})
    if as_json:
        typer.echo(json.dumps(result, indent=1, ensure_ascii=False))
    else:
        console.print(f"{result['state']}: {', '.join(result['credential_ids']) or '(pending)'}")


@app.command("present")
def present(request_uri: Annotated[str, typer.Argument(help="The openid4vp:// URI.")],
            yes: Annotated[bool, typer.Option("--yes", help="Approve without asking.")] = False,
            url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """Answer a presentation request after showing exactly what would be disclosed."""
    preview = call_api("wallet API", "POST", url, token, "/v1/presentations", json={"request_uri": request_uri})
    verifier = preview["verifier"]
    console.print(f"Verifier: {verifier['name'] or verifier['client_id']}"
                  + ("" if verifier["verified"] else f"  [yellow]{verifier['warning']}[/yellow]"))
    console.print(f"Purpose: {preview['purpose'] or '-'}")
    for query in preview["queries"]:
        for option in query["options"][:1]:
            for claim in option["claims"]:
                console.print(f"  {option['credential_name']}: {claim['name']} = {claim['value']}")
    if not preview["satisfiable"]:
        fail("the wallet cannot answer this request")
    if not yes and not typer.confirm("Send these claims?"):
        result = call_api("wallet API", "POST", url, token, f"/v1/presentations/{preview['presentation_id']}/decline")
    else:
        result = call_api("wallet API", "POST", url, token, f"/v1/presentations/{preview['presentation_id']}/approve", json={})
    if as_json:
        typer.echo(json.dumps(result, indent=1, ensure_ascii=False))
    else:
        console.print(result["state"])
