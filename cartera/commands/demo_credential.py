"""`cartera demo-credential`: the standards library at work, in one process and without a network.

A development CA certifies a university (issuer) and a city hall (verifier). The university issues a
diploma SD-JWT VC of the built-in type to a holder key, with a Token Status List entry; the city hall
asks for two claims with a signed OpenID4VP request object and a DCQL query (its request URI shown as
a QR code); the holder checks the request, picks the disclosures DCQL selects and binds them with a
KB-JWT; the city hall verifies everything and sees only the two claims. Nothing here is a shortcut
the services do not take: each step calls the same ``ssi`` functions they use.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.panel import Panel

from cartera.console import console, fail, print_json, safe
from credential_schemas.model import load_builtin_types
from ssi import dcql, oid4vp
from ssi import x509 as ssi_x509
from ssi.encoding import json_dumps
from ssi.errors import SSIError
from ssi.jose import Key
from ssi.qr import qr_png, qr_svg, qr_terminal
from ssi.sd_jwt import SDJWT
from ssi.sd_jwt_vc import X5CKeyResolver, issue_sd_jwt_vc, verify_sd_jwt_vc
from ssi.status_list import StatusList, sign_status_list_token, status_claim, verify_status_list_token

app = typer.Typer()

ISSUER = "https://uni.example.cat/t/uni-barcelona"
VERIFIER_HOST = "seu.ajuntament.example.cat"
STATUS_URI = f"{ISSUER}/status/1"
REQUEST_URI = f"https://{VERIFIER_HOST}/v1/wallet/requests/demo"
RESPONSE_URI = f"https://{VERIFIER_HOST}/v1/wallet/responses/demo"

#: Synthetic claims, shaped as the built-in diploma type expects (validated against its schema).
DIPLOMA_CLAIMS: dict[str, Any] = {
    "name": "Núria Puig i Ferrer",
    "birthDate": "1994-03-12",
    "personalIdentifier": "12345678Z",
    "title": "Grau en Enginyeria Informàtica",
    "qualificationCode": "2500896",
    "degreeType": "bachelor",
    "eqfLevel": 6,
    "awardingBody": "Universitat de Barcelona",
    "completionDate": "2016-06-30",
    "awardingDate": "2016-11-15",
    "countryOfAward": "ES",
    "registrationNumber": "2016/004512",
}

QUERY = {"credentials": [{
    "id": "diploma",
    "format": "dc+sd-jwt",
    "meta": {"vct_values": ["https://types.cartera.example/university-diploma/v1"]},
    "claims": [{"path": ["title"]}, {"path": ["awardingBody"]}],
}]}


def _step(number: int, text: str) -> None:
    console.print(f"[bold cyan]{number}.[/] {text}", highlight=False)


def run_demo(out: Path | None, show_qr: bool, quiet: bool) -> dict[str, Any]:
    """Run every step; return what a JSON caller needs. Raises SSIError if any check fails."""
    say = (lambda *_: None) if quiet else _step
    now = int(time.time())

    ca_key, ca_cert = ssi_x509.create_ca("Cartera demo CA")
    issuer_key = Key.generate("ES256")
    issuer_cert = ssi_x509.issue_certificate(ca_key, ca_cert, issuer_key, "Universitat de Barcelona (demo)",
                                             san_uris=[ISSUER], san_dns=["uni.example.cat"])
    verifier_key = Key.generate("ES256")
    verifier_cert = ssi_x509.issue_certificate(ca_key, ca_cert, verifier_key, "Ajuntament (demo)",
                                               san_dns=[VERIFIER_HOST])
    say(1, "Development CA (marked as such) certified an issuer and a verifier.")

    diploma_type = load_builtin_types()["university-diploma"]
    problems = diploma_type.validate_claims(DIPLOMA_CLAIMS)
    if problems:
        fail("the demo claims do not fit the built-in diploma type: " + "; ".join(map(str, problems)))
    status_list = StatusList(100_000, bits=2)
    index = secrets.randbelow(100_000)
    holder_key = Key.generate("ES256")
    credential = issue_sd_jwt_vc(
        DIPLOMA_CLAIMS, vct=diploma_type.vct, issuer=ISSUER, key=issuer_key,
        holder_jwk=holder_key.public_jwk(), disclosable=diploma_type.disclosable_paths(),
        x5c=ssi_x509.x5c_from_chain([issuer_cert]), status=status_claim(index, STATUS_URI),
        iat=now, nbf=now, exp=int(diploma_type.expires_at(datetime.fromtimestamp(now, UTC)).timestamp()),
        vct_integrity=diploma_type.type_metadata_integrity())
    status_token = sign_status_list_token(status_list, uri=STATUS_URI, key=issuer_key, ttl=300,
                                          x5c=ssi_x509.x5c_from_chain([issuer_cert]))
    parsed = SDJWT.parse(credential)
    say(2, f"Issued a diploma SD-JWT VC with {len(parsed.disclosures)} disclosures "
           f"({len(credential)} bytes), status list index {index}.")

    client_id = f"x509_san_dns:{VERIFIER_HOST}"
    nonce = secrets.token_urlsafe(16)
    request_object = oid4vp.sign_request_object({
        "client_id": client_id, "response_type": "vp_token", "response_mode": "direct_post",
        "response_uri": RESPONSE_URI, "nonce": nonce, "state": secrets.token_urlsafe(8),
        "dcql_query": QUERY, "aud": "https://self-issued.me/v2",
    }, verifier_key, ssi_x509.x5c_from_chain([verifier_cert]))
    request_link = oid4vp.build_authorization_request_uri("openid4vp://", client_id, REQUEST_URI)
    say(3, "The verifier signed a request object asking for title and awarding body:")
    if not quiet:
        console.print(f"   {request_link}", highlight=False, soft_wrap=True)
        if show_qr:
            console.print(qr_terminal(request_link), highlight=False)

    request = oid4vp.verify_request_object(request_object, trust_anchors=[ca_cert], client_id=client_id)
    result = dcql.evaluate(request.query, [parsed])
    if not result.satisfiable:
        fail(f"the wallet cannot answer the query: {result.unsatisfied}")
    match = result.matches["diploma"][0]
    presentation = parsed.present(match.paths, holder_key=holder_key, aud=client_id, nonce=nonce)
    say(4, f"The wallet verified the request ({request.trust}) and presents "
           f"{len(match.paths)} of {len(parsed.disclosures)} claims with a key-binding JWT.")

    verified = verify_sd_jwt_vc(presentation, key_resolver=X5CKeyResolver([ca_cert]),
                                expected_vcts=[diploma_type.vct], require_kb=True,
                                expected_aud=client_id, expected_nonce=nonce)
    status = verify_status_list_token(
        status_token, key=lambda header, _payload: X5CKeyResolver([ca_cert]).resolve(
            header, {"iss": verified.issuer}, now=time.time()).key, expected_uri=STATUS_URI)
    if status.status(verified.status.idx) != 0:  # type: ignore[union-attr]
        fail("the status list does not say valid")
    disclosed = {k: v for k, v in verified.claims.items() if k in DIPLOMA_CLAIMS}
    problems = dcql.check_presented(request.query, {"diploma": [verified.claims]})
    if problems:
        fail(f"the presentation does not answer the query: {problems}")
    say(5, "The verifier checked signature, x5c chain, key binding, nonce, audience, validity and "
           "status, and sees only:")
    if not quiet:
        console.print(Panel(json_dumps(disclosed), title="disclosed claims", expand=False))

    if out is not None:
        files = {
            "credential.sd-jwt": credential, "presentation.sd-jwt": presentation,
            "trust-anchor.pem": ssi_x509.cert_to_pem(ca_cert).decode(),
            "issuer.jwk.json": json_dumps(issuer_key.public_jwk()),
            "request-uri.txt": request_link, "request-qr.svg": qr_svg(request_link),
        }
        try:
            out.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                (out / name).write_text(text + ("\n" if not text.endswith("\n") else ""), encoding="utf-8")
            (out / "request-qr.png").write_bytes(qr_png(request_link))
        except OSError as exc:
            fail(f"cannot write to {out}: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else ""))
        if not quiet:
            console.print(f"Files written to {safe(out)}/ — try: cartera vc verify {safe(out)}/presentation.sd-jwt "
                          f"--trust-anchor {safe(out)}/trust-anchor.pem --aud '{client_id}' --nonce {nonce}",
                          highlight=False)
    return {"valid": True, "issuer": verified.issuer, "vct": verified.vct, "request_uri": request_link,
            "client_id": client_id, "nonce": nonce, "disclosed": disclosed,
            "disclosures_presented": len(match.paths), "disclosures_total": len(parsed.disclosures)}


@app.command("demo-credential")
def demo_credential(
    out: Annotated[Path | None, typer.Option(help="Also write the credential, presentation, trust anchor, "
                                                   "issuer JWK and QR code (PNG/SVG) to this folder.")] = None,
    qr: Annotated[bool, typer.Option(help="Show the presentation request as a QR code in the terminal.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print only a JSON summary.")] = False,
) -> None:
    """Issue, present and verify an SD-JWT VC end to end with the standards library, offline."""
    if out is not None:  # before the work: the files could never be written there
        blocking = next((p for p in (out, *out.parents) if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            fail(f"cannot write to {out}: {blocking} is a file, not a folder",
                 hint="--out names a folder to write the files into")
    try:
        summary = run_demo(out, show_qr=qr and not as_json, quiet=as_json)
    except SSIError as exc:
        fail(f"a check failed: {exc.code} — {exc.detail}")
    if as_json:
        print_json(summary)
