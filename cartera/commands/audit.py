"""`cartera audit`: check an audit chain export offline (a wallet history export, an issuer chain export).

``verify`` recomputes every content digest and entry hash, checks the sequence has no gap, and checks
every signed checkpoint against the given keys (``--jwks``: a JWKS file, or a URL of a JWKS or of JWT VC
Issuer Metadata). Without ``--jwks`` the keys the export carries are used: that shows the export is
consistent, not who signed it, and the summary says so. ``--previous`` compares with an older export
of the same chain: the new one must extend it unchanged (no rewritten or dropped history).

Exit status: 0 the chain checks out, 1 tampering or inconsistency found (the first broken entry is
named), 2 the input cannot be read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from cartera.console import console, fail, print_json, safe
from ssi.audit_chain import ChainReport, canonical, keys_from_jwks, verify_chain
from ssi.encoding import json_loads
from ssi.errors import SSIError
from ssi.jose import Key

app = typer.Typer(help="Check tamper-evident audit chains (wallet history, issuer records) offline.",
                  no_args_is_help=True)

WALLET_EXPORT = "cartera-wallet-history"
CHAIN_EXPORT = "cartera-audit-chain"
MAX_BYTES = 200_000_000


def _read_json(path: Path, what: str) -> Any:
    try:
        if path.stat().st_size > MAX_BYTES:
            fail(f"{what} {path} is too large", code=2)
        return json_loads(path.read_bytes())
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror or exc}", code=2)
    except SSIError as exc:
        fail(f"{what} {path} is not valid JSON ({exc.code})", code=2)


def _chain_document(doc: Any, what: str) -> dict[str, Any]:
    """The chain part of an export: the document itself, or a wallet history export's ``audit``."""
    if isinstance(doc, dict) and doc.get("format") == WALLET_EXPORT and isinstance(doc.get("audit"), dict):
        doc = doc["audit"]
    if not (isinstance(doc, dict) and doc.get("format") == CHAIN_EXPORT and isinstance(doc.get("chain"), str)
            and isinstance(doc.get("entries"), list) and isinstance(doc.get("checkpoints"), list)):
        fail(f"{what} is neither a wallet history export with an audit chain nor an audit chain export", code=2,
             hint="export it with GET /v1/history/export (wallet) or GET /v1/audit/export (issuer admin)")
    return doc


def _load_keys(source: str) -> list[Key]:
    """Keys from a JWKS file or URL (a JWKS, or metadata holding one under ``jwks``)."""
    if source.startswith(("https://", "http://")):
        try:
            response = httpx.get(source, timeout=10, follow_redirects=False)
        except httpx.HTTPError as exc:
            fail(f"cannot fetch {source} ({type(exc).__name__})", code=2)
        if response.status_code != 200:
            fail(f"{source} answered HTTP {response.status_code}", code=2)
        body = response.content
    else:
        try:
            body = Path(source).read_bytes()
        except OSError as exc:
            fail(f"cannot read the JWKS {source}: {exc.strerror or exc}", code=2)
    try:
        return keys_from_jwks(json_loads(body))
    except SSIError as exc:
        fail(f"{source} is not a usable JWKS ({exc.code}: {exc.detail})", code=2)


def _cross_check_history(doc: dict[str, Any], report: ChainReport) -> None:
    """A wallet export lists the history beside the chain: every history entry must be a chain entry
    with the same kind, time and details."""
    entries = doc.get("entries")
    if not isinstance(entries, list):
        return
    chained = {e.get("id"): e for e in doc["audit"]["entries"] if isinstance(e, dict)}
    for item in entries:
        if not isinstance(item, dict):
            report.fail("event_mismatch", "a history entry is not an object")
            return
        entry = chained.get(item.get("id"))
        if entry is None:
            report.fail("unchained_event", "a history entry has no chain entry", entry_id=str(item.get("id")))
            return
        same = (entry.get("kind") == item.get("kind") and "content" in entry
                and canonical(entry["content"]) == canonical(item.get("details")))
        if not same:
            report.fail("event_mismatch", "a history entry differs from what its chain entry commits to",
                        entry.get("seq"), str(item.get("id")))
            return


def _compare_previous(previous: dict[str, Any], current: dict[str, Any], report: ChainReport) -> None:
    """The current chain must extend the previous export's chain with the same hashes."""
    if previous["chain"] != current["chain"]:
        report.fail("wrong_chain", "the previous export is of another chain")
        return
    now = {e.get("seq"): e.get("hash") for e in current["entries"] if isinstance(e, dict)}
    for old in previous["entries"]:
        if not isinstance(old, dict):
            continue
        seq = old.get("seq")
        if seq not in now:
            report.fail("truncated", f"entry {seq} of the previous export is gone", seq, old.get("id"))
            return
        if now[seq] != old.get("hash"):
            report.fail("rewritten", f"entry {seq} differs from the previous export", seq, old.get("id"))
            return


@app.command("verify")
def verify(
    export_file: Annotated[Path, typer.Argument(help="A wallet history export (GET /v1/history/export) or an "
                                                      "audit chain export (GET /v1/audit/export).")],
    jwks: Annotated[str | None, typer.Option("--jwks", help="JWKS file or URL with the keys that sign "
                                             "checkpoints (wallet: <wallet>/v1/audit/jwks; issuer: "
                                             "<issuer>/.well-known/jwt-vc-issuer/t/<slug>). Default: the "
                                             "keys in the export (consistency only, not origin).")] = None,
    previous: Annotated[Path | None, typer.Option("--previous", help="An older export of the same chain: "
                                                  "the new one must extend it unchanged.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Verify an exported audit chain offline: digests, hashes, sequence, checkpoint signatures."""
    raw = _read_json(export_file, "export")
    doc = _chain_document(raw, "the export")
    embedded = not jwks
    if jwks:
        keys = _load_keys(jwks)
    else:
        try:
            keys = keys_from_jwks(doc.get("jwks"))
        except SSIError as exc:
            fail(f"the export carries no usable JWKS ({exc.code}); pass --jwks", code=2)
    report = verify_chain(doc["chain"], doc["entries"], doc["checkpoints"], keys, require_content=True)
    if report.ok and isinstance(raw, dict) and raw.get("format") == WALLET_EXPORT:
        _cross_check_history(raw, report)
    if report.ok and previous is not None:
        _compare_previous(_chain_document(_read_json(previous, "previous export"), "the previous export"), doc, report)
    result = {**report.as_dict(), "keys": "embedded" if embedded else "given",
              "uncheckpointed": report.entries - report.last_checkpoint_seq}
    if as_json:
        print_json(result)
    else:
        _print(result, export_file)
    if not report.ok:
        raise typer.Exit(1)


def _print(result: dict[str, Any], path: Path) -> None:
    table = Table(title=f"Audit chain {safe(result['chain'])}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    # The export is outside input: every value from it is shown as plain text, never as markup.
    table.add_row("export", safe(path))
    table.add_row("entries", safe(str(result["entries"]) + (
        " (" + ", ".join(f"{k} {v}" for k, v in sorted(result["kinds"].items())) + ")" if result["kinds"] else "")))
    table.add_row("head", safe(result["head"]))
    table.add_row("checkpoints", safe(f"{result['checkpoints']} (last covers entry {result['last_checkpoint_seq']})"))
    table.add_row("signing keys", "from the export itself: proves consistency, not origin (use --jwks)"
                  if result["keys"] == "embedded" else "given with --jwks")
    console.print(table)
    if result["ok"]:
        tail = result["uncheckpointed"]
        console.print("[green]OK[/green]: every digest, hash and checkpoint checks out"
                      + (f"; the last {tail} entries are not yet covered by a checkpoint" if tail else "") + ".")
        return
    error = result["error"]
    where = " ".join(filter(None, [f"entry {error['seq']}" if error["seq"] else None,
                                   f"({error['entry_id']})" if error["entry_id"] else None]))
    console.print(f"[red]TAMPERED[/red]: {safe(error['code'])}" + (f" at {safe(where)}" if where else "")
                  + f": {safe(error['detail'])}", highlight=False)
