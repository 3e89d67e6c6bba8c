"""`cartera wallet`: operate the wallet API (master key rotation, status) and use it as a citizen.

Connection: `--url` (or `CARTERA_WALLET_URL`, default http://127.0.0.1:8003) and, for citizen
commands, `--token` (or `CARTERA_WALLET_TOKEN`: an access token from the login flow).

Everything the wallet API answers (verifier names, purposes, claim values) is printed as plain text,
never read as rich markup (``cartera.console.safe``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cartera.console import err_console, fail, safe
from cartera.http_api import call_api, path_segment

app = typer.Typer(help="The citizen wallet API: master-key rotation, credentials, offers, requests.",
                  no_args_is_help=True)
console = Console()

UrlOpt = Annotated[str, typer.Option("--url", envvar="CARTERA_WALLET_URL", help="Wallet API base URL.")]
TokenOpt = Annotated[str, typer.Option("--token", envvar="CARTERA_WALLET_TOKEN", help="A citizen access token.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
DEFAULT_URL = "http://127.0.0.1:8003"


def _ask_secret(label: str, missing: str, hint: str) -> str:
    """A secret from the terminal without echo (the question on standard error, so that standard
    output stays for --json), or the first line of standard input when it is not a terminal."""
    if sys.stdin.isatty():
        value = typer.prompt(label, hide_input=True, err=True)
    else:
        value = sys.stdin.readline()
    if not value.strip():
        fail(missing, hint=hint)
    return value.strip()


def _ask_tx_code() -> str:
    return _ask_secret("Transaction code", "the offer needs a transaction code",
                       "type it when asked, or set CARTERA_TX_CODE")


def _approved(out: Console) -> bool:
    """Ask on ``out`` whether to send; no answer (end of input) sends nothing and stops."""
    try:
        answer = out.input("Send these claims? [y/N] ")
    except EOFError:
        fail("no answer: nothing was sent")
    return answer.strip().lower() in ("y", "yes")


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
    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    from service_kit.crypto import SecretBox, SecretBoxError, parse_master_key
    from wallet_api.provisioning import rotate_master_key as rotate
    from wallet_api.settings import WalletSettings

    try:
        if generate and not new_key_file.exists():
            import base64

            new_key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(new_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(base64.urlsafe_b64encode(SecretBox.generate_key()).rstrip(b"=").decode() + "\n")
        new_key = parse_master_key(new_key_file.read_bytes())
    except FileNotFoundError:
        fail(f"{new_key_file} does not exist (use --generate to create it)")
    except OSError as exc:
        fail(f"cannot use the new key file {new_key_file}: {exc.strerror or exc}")
    except SecretBoxError as exc:
        fail(f"{new_key_file}: {exc.detail}")
    try:
        settings = WalletSettings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        fail(f"the wallet settings are invalid ({problems})", hint="check the CARTERA_WALLET_* environment variables")
    try:
        count = asyncio.run(rotate(settings, new_key))
    except SecretBoxError as exc:
        fail(exc.detail)
    except (OSError, SQLAlchemyError) as exc:
        first_line = (str(exc).splitlines() or [""])[0][:300]
        fail(f"cannot rewrap the wallet's keys ({type(exc).__name__}: {first_line})",
             hint="check CARTERA_WALLET_DATABASE_URL and that the database server is reachable")
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
        table.add_row(*(safe(v) for v in (item["id"], item["name"], item["issuer_name"], item["status"],
                                          item["expires_at"] or "")))
    console.print(table)


@app.command("receive")
def receive(offer_uri: Annotated[str, typer.Argument(help="The openid-credential-offer:// URI.")],
            tx_code: Annotated[str | None, typer.Option(
                "--tx-code", envvar="CARTERA_TX_CODE",
                help="The transaction code. Prefer the environment variable, or leave it out: when the offer "
                     "needs one, it is asked for without echo (or read from standard input when that is not a "
                     "terminal). A code on the command line shows in ps and the shell history.")] = None,
            url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """Receive a credential offer: preview, then accept."""
    preview = call_api("wallet API", "POST", url, token, "/v1/offers", json={"offer_uri": offer_uri})
    offer_id = path_segment(preview.get("offer_id"), "offer id")
    if not tx_code and preview.get("tx_code_required"):
        described = preview.get("tx_code") if isinstance(preview.get("tx_code"), dict) else {}
        if described.get("description"):
            err_console.print(f"The issuer says: {safe(described['description'])}", highlight=False)
        tx_code = _ask_tx_code()
    result = call_api("wallet API", "POST", url, token, f"/v1/offers/{offer_id}/accept", json={"tx_code": tx_code})
    if as_json:
        typer.echo(json.dumps(result, indent=1, ensure_ascii=False))
    else:
        console.print(f"{safe(result['state'])}: {safe(', '.join(result['credential_ids'])) or '(pending)'}",
                      highlight=False)


@app.command("present")
def present(request_uri: Annotated[str, typer.Argument(help="The openid4vp:// URI.")],
            yes: Annotated[bool, typer.Option("--yes", help="Approve without asking.")] = False,
            url: UrlOpt = DEFAULT_URL, token: TokenOpt = "",
            as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON on standard output (the "
                                                  "preview and the question go to standard error).")] = False) -> None:
    """Answer a presentation request after showing exactly what would be disclosed.

    When the wallet has a PIN, it is asked for without echo after the approval (or taken from
    CARTERA_WALLET_PIN, or from the next line of standard input when that is not a terminal)."""
    preview = call_api("wallet API", "POST", url, token, "/v1/presentations", json={"request_uri": request_uri})
    presentation_id = path_segment(preview.get("presentation_id"), "presentation id")
    # With --json, standard output carries the JSON answer only.
    out = err_console if as_json else console
    verifier = preview["verifier"]
    warning = "" if verifier["verified"] else f"  [bold yellow]{safe(verifier.get('warning') or 'not verified')}[/]"
    out.print(f"Verifier: {safe(verifier['name'] or verifier['client_id'])}{warning}", highlight=False)
    out.print(f"Purpose: {safe(preview['purpose'] or '-')}", highlight=False)
    for query in preview["queries"]:
        # What the approval below sends: the shared queries but the optional ones (none is ticked),
        # each answered by its first option. The others are named, without values.
        if not query.get("shared") or query.get("optional"):
            out.print(f"  not shared: {safe(query['query_id'])}", highlight=False)
            continue
        for option in query["options"][:1]:
            for claim in option["claims"]:
                out.print(f"  {safe(option['credential_name'])}: {safe(claim['name'])} = {safe(claim['value'])}",
                          highlight=False)
    if not preview["satisfiable"]:
        fail("the wallet cannot answer this request")
    if not yes and not _approved(out):
        result = call_api("wallet API", "POST", url, token, f"/v1/presentations/{presentation_id}/decline")
    else:
        approve = f"/v1/presentations/{presentation_id}/approve"
        result = call_api("wallet API", "POST", url, token, approve, json={}, answerable={"pin_required"})
        if result.get("error") == "pin_required":
            # The PIN is asked only when the wallet has one; never taken from the command line (ps, history).
            pin = os.environ.get("CARTERA_WALLET_PIN") or _ask_secret(
                "Wallet PIN", "the wallet needs its PIN to send claims", "type it when asked, or set CARTERA_WALLET_PIN")
            result = call_api("wallet API", "POST", url, token, approve, json={"pin": pin})
    if as_json:
        typer.echo(json.dumps(result, indent=1, ensure_ascii=False))
    else:
        console.print(safe(result["state"]), highlight=False)
