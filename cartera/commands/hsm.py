"""``cartera hsm``: the PKCS#11 token that holds issuer and verifier signing keys.

The token is the one a service's settings name (``--service issuer`` reads ``CARTERA_ISSUER_PKCS11_*``,
``--service verifier`` reads ``CARTERA_VERIFIER_PKCS11_*``); ``--module``, ``--token-label`` and
``--pin-file`` override them. The PIN is never a command-line argument (it would land in the shell
history): it comes from the service's ``PKCS11_PIN``/``PKCS11_PIN_FILE`` setting or ``--pin-file``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cartera.console import fail, safe

app = typer.Typer(help="PKCS#11 token (HSM) of the issuer's and verifier's signing keys: check it, list and "
                       "generate keys (non-extractable).", no_args_is_help=True)
console = Console()

ServiceOpt = Annotated[str, typer.Option("--service", help="Whose token settings to use: issuer or verifier.")]
ModuleOpt = Annotated[Path | None, typer.Option("--module", help="PKCS#11 module (overrides the service setting).")]
TokenOpt = Annotated[str | None, typer.Option("--token-label", help="Token label (overrides the service setting).")]
PinFileOpt = Annotated[Path | None, typer.Option("--pin-file", help="File holding the user PIN (overrides the "
                                                                     "service setting).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _open(service: str, module: Path | None, token_label: str | None, pin_file: Path | None) -> Any:
    from pydantic import ValidationError

    from service_kit.pkcs11 import PKCS11Config, PKCS11Error, open_token, read_pin

    try:
        if service == "issuer":
            from issuer.settings import IssuerSettings

            settings: Any = IssuerSettings()
        elif service == "verifier":
            from verifier.settings import VerifierSettings

            settings = VerifierSettings()
        else:
            fail("--service is issuer or verifier")
    except ValidationError as exc:
        fail(f"the {service} settings are invalid: {exc.error_count()} error(s)",
             hint=f"check the CARTERA_{service.upper()}_* environment variables")
    try:
        module = module or settings.pkcs11_module
        label = token_label or settings.pkcs11_token_label
        if module is None or not label:
            fail("no PKCS#11 token is configured",
                 hint=f"set CARTERA_{service.upper()}_PKCS11_MODULE and _PKCS11_TOKEN_LABEL, or pass --module and "
                      "--token-label")
        pin = read_pin(None if pin_file else settings.pkcs11_pin, pin_file or settings.pkcs11_pin_file)
        return open_token(PKCS11Config(module=Path(module), token_label=label, pin=pin))
    except PKCS11Error as exc:
        fail(f"{exc.code}: {exc.detail}")


@app.command("check")
def check(service: ServiceOpt = "issuer", module: ModuleOpt = None, token_label: TokenOpt = None,
          pin_file: PinFileOpt = None, as_json: JsonOpt = False) -> None:
    """Open the token and log in, as the service does at start-up; print how many signing keys it holds."""
    token = _open(service, module, token_label, pin_file)
    try:
        count = len(token.list_keys())
    finally:
        token.close()
    if as_json:
        typer.echo(json.dumps({"token": token.label, "module": str(token.module), "signing_keys": count}))
    else:
        console.print(f"token [bold]{safe(token.label)}[/] ({safe(token.module)}): login ok, {count} signing key(s)",
                      highlight=False)


@app.command("keys")
def keys(service: ServiceOpt = "issuer", module: ModuleOpt = None, token_label: TokenOpt = None,
         pin_file: PinFileOpt = None, as_json: JsonOpt = False) -> None:
    """List the token's signing keys (label, id, algorithm, whether sensitive/extractable). No key material."""
    token = _open(service, module, token_label, pin_file)
    try:
        found = token.list_keys()
    finally:
        token.close()
    rows = [{"label": k.label, "id": k.key_id, "alg": k.alg, "sensitive": k.sensitive, "extractable": k.extractable}
            for k in found]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("label", "id", "alg", "sensitive", "extractable")
    for row in rows:
        table.add_row(*(safe(row[k]) for k in ("label", "id", "alg", "sensitive", "extractable")))
    console.print(table)


@app.command("generate")
def generate(label: Annotated[str, typer.Option("--label", help="Label of the new key (unique in the token).")],
             alg: Annotated[str, typer.Option("--alg", help="ES256 (default, HAIP), ES384 or EdDSA.")] = "ES256",
             service: ServiceOpt = "issuer", module: ModuleOpt = None, token_label: TokenOpt = None,
             pin_file: PinFileOpt = None, as_json: JsonOpt = False) -> None:
    """Generate a key pair in the token (sensitive, non-extractable, sign-only) and print its public JWK.

    Register it afterwards with `cartera issuer rotate-key --token-key-label LABEL` (or, for an agency,
    the verifier admin API's `token_key_label`).
    """
    from service_kit.pkcs11 import PKCS11Error

    token = _open(service, module, token_label, pin_file)
    try:
        key, ref = token.generate_key(label=label, alg=alg)
    except PKCS11Error as exc:
        fail(f"{exc.code}: {exc.detail}")
    finally:
        token.close()
    out = {"token": ref.token, "label": ref.label, "id": ref.key_id, "alg": ref.alg, "thumbprint": key.thumbprint(),
           "public_jwk": key.public_jwk()}
    if as_json:
        typer.echo(json.dumps(out))
    else:
        console.print(f"generated {safe(ref.alg)} key [bold]{safe(ref.label)}[/] in token {safe(ref.token)} "
                      f"(id {safe(ref.key_id)}, thumbprint {safe(out['thumbprint'])})", highlight=False)
