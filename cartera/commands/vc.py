"""`cartera vc`: decode and verify SD-JWT VCs, for operators and integrators.

``verify`` runs the library's verification (:func:`ssi.sd_jwt_vc.verify_sd_jwt_vc`) and reports the
outcome of each check in order. Verification stops at the first failure — later checks have nothing
trustworthy to look at — so checks after a failure are reported as not run (``"ok": null``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from cartera.console import console, fail, print_json, read_text_argument, safe
from ssi import x509 as ssi_x509
from ssi.encoding import json_loads
from ssi.errors import EncodingError, SSIError
from ssi.jose import Key
from ssi.sd_jwt import SDJWT
from ssi.sd_jwt_vc import (
    ChainedKeyResolver,
    IssuerKeyResolver,
    IssuerMetadataKeyResolver,
    PinnedKeyResolver,
    ResolvedIssuerKey,
    X5CKeyResolver,
    verify_sd_jwt_vc,
)
from ssi.status_list import verify_status_list_token

app = typer.Typer(help="Decode and verify SD-JWT VCs (with or without a Key Binding JWT).", no_args_is_help=True)

#: The checks in the order verification runs them, and which error codes belong to each.
CHECKS: list[tuple[str, str]] = [
    ("structure", "the SD-JWT parses: issuer JWT, disclosures, digests, KB-JWT shape"),
    ("algorithm", "the signing algorithm is on the allow-list"),
    ("credential_type", "typ dc+sd-jwt, iss and vct present (and vct expected)"),
    ("issuer_key", "the issuer key was found and is trusted (x5c chain, metadata or pinned key)"),
    ("issuer_signature", "the issuer's signature verifies"),
    ("validity", "iat / nbf / exp"),
    ("key_binding", "KB-JWT: typ, signature with cnf, aud, nonce, iat, sd_hash"),
    ("credential_rules", "SD-JWT VC rules: nothing forbidden disclosed, well-formed status"),
    ("status", "the status list says valid (only with --check-status; not_applicable without a status reference)"),
]
_CHECK_NAMES = [name for name, _ in CHECKS]

_CODE_TO_CHECK: dict[str, str] = {
    "jose.alg_not_allowed": "algorithm",
    "jose.alg_key_mismatch": "issuer_key",
    "jose.bad_signature": "issuer_signature",
    "sd_jwt.no_issuer_key": "issuer_key",
    "sd_jwt.expired": "validity",
    "sd_jwt.not_yet_valid": "validity",
    "sd_jwt.iat_in_future": "validity",
    "sd_jwt.bad_exp": "validity",
    "sd_jwt.bad_nbf": "validity",
    "sd_jwt.bad_iat": "validity",
    "sd_jwt_vc.bad_typ": "credential_type",
    "sd_jwt_vc.missing_iss": "credential_type",
    "sd_jwt_vc.missing_vct": "credential_type",
    "sd_jwt_vc.unexpected_vct": "credential_type",
    "sd_jwt_vc.forbidden_disclosure": "credential_rules",
    "sd_jwt_vc.bad_status": "credential_rules",
    "sd_jwt_vc.bad_vct_integrity": "credential_rules",
}


def check_for_code(code: str) -> str:
    """The check a verification error code belongs to."""
    if code in _CODE_TO_CHECK:
        return _CODE_TO_CHECK[code]
    if code.startswith("sd_jwt.kb_"):
        return "key_binding"
    if code.startswith(("x509.", "did.")) or code.startswith("sd_jwt_vc."):
        return "issuer_key"
    if code.startswith("status_list."):
        return "status"
    return "structure"


def checks_report(failed_code: str | None, *, status_checked: bool,
                  status_applicable: bool = True) -> list[dict[str, Any]]:
    """Every check with ``ok`` true/false, or ``None`` when it did not run.

    A credential without a status reference has no status to check: with ``--check-status`` its
    status check is ``ok`` with the code ``not_applicable`` (nothing to revoke it by)."""
    failed_at = _CHECK_NAMES.index(check_for_code(failed_code)) if failed_code else len(_CHECK_NAMES)
    report = []
    for position, name in enumerate(_CHECK_NAMES):
        if name == "status" and not status_checked and failed_code is None:
            report.append({"name": name, "ok": None, "code": "not_requested"})
        elif name == "status" and not status_applicable and failed_code is None:
            report.append({"name": name, "ok": True, "code": "not_applicable"})
        elif position < failed_at:
            report.append({"name": name, "ok": True, "code": "ok"})
        elif position == failed_at:
            report.append({"name": name, "ok": False, "code": failed_code})
        else:
            report.append({"name": name, "ok": None, "code": "not_run"})
    return report


class _SingleKeyResolver:
    """The key given on the command line, for whatever issuer the credential names."""

    def __init__(self, key: Key) -> None:
        self._pinned = key

    def resolve(self, header: dict[str, Any], payload: dict[str, Any], *, now: float) -> ResolvedIssuerKey:
        return PinnedKeyResolver({payload["iss"]: [self._pinned]}).resolve(header, payload, now=now)


def _fetch_json(url: str) -> Any:
    response = httpx.get(url, timeout=10.0, follow_redirects=False)
    response.raise_for_status()
    return json_loads(response.content)


def _build_resolver(issuer_jwk: Path | None, trust_anchors: list[Path], metadata: bool, issuers: list[str],
                    allow_http_loopback: bool) -> IssuerKeyResolver:
    if issuer_jwk is not None:
        try:
            return _SingleKeyResolver(Key.from_jwk(json_loads(issuer_jwk.read_bytes())))
        except OSError as exc:
            fail(f"cannot read {issuer_jwk}: {exc.strerror}")
        except SSIError as exc:
            fail(f"{issuer_jwk} is not a usable public JWK ({exc.code})")
    anchors = []
    for path in trust_anchors:
        try:
            anchors.extend(ssi_x509.load_pem_certificates(path.read_bytes()))
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror}")
        except SSIError as exc:
            fail(f"{path} holds no readable PEM certificate ({exc.code})")
    x5c = X5CKeyResolver(anchors) if anchors else None
    if metadata and not issuers:
        # iss comes from the unverified credential: without a list, the command would fetch whatever
        # URL the credential names and trust any issuer that publishes metadata.
        fail("--metadata needs the issuers to trust", hint="give --issuer URL (repeatable): the credential's iss "
                                                           "must be one of them")
    if issuers and not metadata:
        fail("--issuer lists the issuers whose metadata --metadata may fetch; give --metadata too")
    meta = IssuerMetadataKeyResolver(_fetch_json, allowed_issuers=issuers,
                                     allow_http_loopback=allow_http_loopback) if metadata else None
    if x5c is None and meta is None:
        fail("no way to find the issuer key", hint="give --issuer-jwk FILE, --trust-anchor CERT.pem or --metadata")
    if x5c is None and meta is not None:
        # --metadata alone: the key comes from the issuer metadata even when the credential carries x5c
        # (every Cartera credential does); with no anchor, there is nothing to check that chain against.
        return meta
    return ChainedKeyResolver(x5c, meta)


def _status_outcome(verified: Any, resolver: IssuerKeyResolver, allow_http_loopback: bool) -> str | None:
    """None when the status list says valid, else the failing code."""
    if verified.status is None:
        return None
    try:
        response = httpx.get(verified.status.uri, timeout=10.0, headers={"Accept": "application/statuslist+jwt"})
    except httpx.HTTPError:
        return "status_list.unavailable"
    if response.status_code != 200:
        return "status_list.unavailable"

    def key_for(header: dict[str, Any], _payload: dict[str, Any]) -> Key:
        return resolver.resolve(header, {"iss": verified.issuer}, now=time.time()).key

    try:
        token = verify_status_list_token(response.text.strip(), key=key_for, expected_uri=verified.status.uri)
    except SSIError as exc:
        return exc.code
    value = token.status(verified.status.idx)
    return None if value == 0 else {1: "status_list.revoked", 2: "status_list.suspended"}.get(
        value, "status_list.invalid")


@app.command("verify")
def verify(
    source: Annotated[str, typer.Argument(help="File holding the SD-JWT VC, or - for standard input.")],
    issuer_jwk: Annotated[Path | None, typer.Option(help="The issuer's public key as a JWK file.")] = None,
    trust_anchor: Annotated[list[Path] | None, typer.Option(
        help="A PEM trust anchor for the x5c chain (repeatable); the leaf must name iss.")] = None,
    metadata: Annotated[bool, typer.Option(
        help="Fetch the issuer key from its JWT VC Issuer Metadata (/.well-known/jwt-vc-issuer); needs --issuer. "
             "With --trust-anchor too, a credential carrying x5c is checked against the anchors instead.")
    ] = False,
    issuer: Annotated[list[str] | None, typer.Option(
        "--issuer", metavar="URL",
        help="With --metadata: an issuer identifier to trust (repeatable). The credential's iss must be one of "
             "them; no other issuer's metadata is fetched.")] = None,
    nonce: Annotated[str | None, typer.Option(help="The nonce the KB-JWT must carry.")] = None,
    aud: Annotated[str | None, typer.Option(help="The audience the KB-JWT must carry (the verifier's client id).")] = None,
    require_kb: Annotated[bool, typer.Option(help="Fail when no KB-JWT is presented.")] = False,
    vct: Annotated[list[str] | None, typer.Option(help="Accept only these credential types (repeatable).")] = None,
    check_status: Annotated[bool, typer.Option(
        help="Fetch the status list and fail when not valid (a credential without a status reference: "
             "status not_applicable, still valid).")] = False,
    allow_http_loopback: Annotated[bool, typer.Option(
        help="Development only: accept http:// issuer (iss), metadata and status list URLs on 127.0.0.1/localhost "
             "(such as the issuers of `cartera run`).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"valid", "claims", "checks"} as JSON.')] = False,
) -> None:
    """Verify an SD-JWT VC and print the disclosed claims and the outcome of every check.

    Exit status 0 only when the credential is valid. With a KB-JWT, give --aud and --nonce. With
    --metadata, list the issuers you trust with --issuer.
    """
    token = read_text_argument(source)
    resolver = _build_resolver(issuer_jwk, trust_anchor or [], metadata, issuer or [], allow_http_loopback)
    claims: dict[str, Any] = {}
    failed: str | None = None
    detail = ""
    status_applicable = True
    try:
        verified = verify_sd_jwt_vc(token, key_resolver=resolver, expected_vcts=vct or None,
                                    require_kb=require_kb or nonce is not None or aud is not None,
                                    expected_aud=aud, expected_nonce=nonce,
                                    allow_http_loopback=allow_http_loopback)
        claims = verified.claims
        status_applicable = verified.status is not None
        if check_status:
            failed = _status_outcome(verified, resolver, allow_http_loopback)
            detail = "the status list does not say valid" if failed else ""
    except SSIError as exc:
        failed, detail = exc.code, exc.detail
    checks = checks_report(failed, status_checked=check_status, status_applicable=status_applicable)
    valid = failed is None
    if as_json:
        print_json({"valid": valid, "claims": claims if valid else {}, "checks": checks})
    else:
        table = Table(title="Checks", show_header=True)
        table.add_column("check")
        table.add_column("outcome")
        table.add_column("code")
        marks = {True: "[green]ok[/]", False: "[red]FAILED[/]", None: "[dim]not run[/]"}
        for check in checks:
            table.add_row(check["name"], marks[check["ok"]], safe(check["code"]))
        console.print(table)
        if valid:
            console.print("[bold green]valid[/] — disclosed claims:")
            console.print_json(data=claims)
        else:
            console.print(f"[bold red]invalid[/]: {safe(failed)} — {safe(detail)}", highlight=False)
    raise typer.Exit(0 if valid else 1)


@app.command("decode")
def decode(
    source: Annotated[str, typer.Argument(help="File holding the SD-JWT (VC), or - for standard input.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the parts as JSON.")] = False,
) -> None:
    """Show the parts of an SD-JWT without verifying anything: header, payload, disclosures, KB-JWT."""
    token = read_text_argument(source)
    try:
        sd = SDJWT.parse(token)
        kb = None
        if sd.kb_jws is not None:
            kb = {"header": sd.kb_jws.header, "payload": sd.kb_jws.json_payload()}
    except (SSIError, EncodingError) as exc:
        fail(f"not a decodable SD-JWT: {exc.code} — {exc.detail}")
    disclosures = [{"path": list(path), "name": d.name, "value": d.value, "digest": d.digest}
                   for d, path in zip(sd.disclosures, sd.disclosure_paths, strict=True)]
    parts = {"header": sd.header, "payload": sd.payload, "disclosures": disclosures,
             "claims": sd.claims, "kb_jwt": kb}
    if as_json:
        print_json(parts)
        return
    console.print("[bold yellow]Not verified[/] — decoding only.")
    for title in ("header", "payload"):
        console.rule(title)
        console.print_json(data=parts[title])
    console.rule(f"disclosures ({len(disclosures)})")
    for item in disclosures:
        console.print(f"{safe('/'.join(map(str, item['path'])))}: ", end="", highlight=False)
        console.print_json(data=item["value"])
    console.rule("key binding JWT")
    console.print_json(data=kb) if kb else console.print("none")
