"""`cartera sandbox`: the development stand-ins (simulated Via Oberta, VÀLid-compatible identity provider).

``run`` starts both in one process; ``citizens`` lists the synthetic citizens to log in as.
Everything here is for development and demos: the keys are generated, the citizens synthetic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from cartera.console import safe

app = typer.Typer(
    help="Development stand-ins for the outside world: a simulated Via Oberta and a VÀLid-compatible "
         "identity provider, sharing one synthetic population. Not for production.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)

# The wallet API's own callback (wallet_api.auth): what `cartera run` registers too.
DEFAULT_REDIRECT_URIS = ("http://127.0.0.1:8003/v1/auth/callback",)
DEFAULT_DATA_DIR = Path("var/sandbox")


def _write_private(path: Path, data: bytes) -> None:
    # Private keys are created 0600 from the start, never chmod-ed after being readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: make it private too
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def ensure_sandbox_files(data_dir: Path, viaoberta_url: str, redirect_uris: list[str]) -> dict[str, Any]:
    """Create (first start) or read the development keys, certificates and client registrations.

    Files under ``data_dir``: ``platform-key.pem``/``platform-cert.pem`` (the simulated platform's
    WS-Security identity), ``requester-key.pem``/``requester-cert.pem`` (the issuer's identity as a
    requesting body, registered with the simulated platform), ``idp-clients.yaml`` (relying parties
    of the identity provider, with their secrets) and ``sources.yaml`` (an ``issuer.sources``
    configuration pointing the four built-in types at the simulated Via Oberta).
    """
    from viaoberta.credentials import generate_identity

    data_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    for role, common_name in (("platform", "Simulated Via Oberta platform (DEVELOPMENT)"),
                              ("requester", "Cartera issuer as requesting body (DEVELOPMENT)")):
        key_path, cert_path = data_dir / f"{role}-key.pem", data_dir / f"{role}-cert.pem"
        if not (key_path.exists() and cert_path.exists()):
            identity = generate_identity(common_name, days=3650)
            _write_private(key_path, identity.key_pem)
            cert_path.write_bytes(identity.cert_pem)
        out[f"{role}_key"], out[f"{role}_cert"] = key_path.read_bytes(), cert_path.read_bytes()
    clients_path = data_dir / "idp-clients.yaml"
    if not clients_path.exists():
        clients = {"clients": [{"client_id": "cartera-wallet", "client_secret": secrets.token_urlsafe(24),
                                "redirect_uris": list(redirect_uris)}]}
        _write_private(clients_path, yaml.safe_dump(clients, sort_keys=False).encode("utf-8"))
    out["clients"] = yaml.safe_load(clients_path.read_text(encoding="utf-8")).get("clients", [])
    sources_path = data_dir / "sources.yaml"
    if not sources_path.exists():
        common = {"kind": "viaoberta", "endpoint": viaoberta_url, "signing_key_file": "requester-key.pem",
                  "signing_cert_file": "requester-cert.pem", "platform_cert_files": ["platform-cert.pem"]}
        sources = {type_id: {**common, "product": product} for type_id, product in (
            ("tax-compliance", "ECOT103"), ("university-diploma", "TITOLS_UNIVERSITARIS"),
            ("padro", "RESIDENT"), ("working-life", "VIDA_LABORAL"))}
        sources_path.write_text(yaml.safe_dump(sources, sort_keys=False), encoding="utf-8")
    out["sources_path"] = sources_path
    return out


def advertised_host(host: str, public_host: str | None = None) -> str:
    """The host put in the stand-ins' URLs: ``public_host``, else the listening ``host`` unless it means
    every interface (0.0.0.0, ::), which is no address to connect to: then loopback."""
    import ipaddress

    if public_host:
        return public_host
    try:
        wildcard = not host or ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        wildcard = False
    if wildcard:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@app.command("run")
def run(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (keep loopback for development)."),
    public_host: Annotated[str | None, typer.Option(
        help="Host name the others reach the stand-ins at, in the URLs they are given (the issuer sources' "
             "Via Oberta endpoint): the compose service name, say. Default: --host, or 127.0.0.1 when "
             "--host is a wildcard (0.0.0.0, ::), which is no address to connect to.")] = None,
    viaoberta_port: int = typer.Option(8004, help="Port of the simulated Via Oberta."),
    idp_port: int = typer.Option(8005, help="Port of the development identity provider."),
    seed: int = typer.Option(2026, help="Seed of the synthetic population (same seed, same citizens)."),
    size: int = typer.Option(1000, min=5, max=100_000, help="Number of synthetic citizens."),
    data_dir: Annotated[Path, typer.Option(help="Where development keys and client registrations live.")]
    = DEFAULT_DATA_DIR,
    redirect_uri: Annotated[list[str] | None, typer.Option(
        help="Redirect URI of the default identity-provider client (first start only; repeatable). "
             f"Default: {DEFAULT_REDIRECT_URIS[0]}")] = None,
    allow_login_hint: bool = typer.Option(False, help="Accept login_hint=<NIF> to skip the login page (tests, demos)."),
    id_token_alg: Annotated[str | None, typer.Option(
        help="Also act as an OpenID provider: sign ID tokens (scope openid) with ES256, RS256 or PS256, with a "
             "key generated at start and published at /o/oauth2/jwks, discovery at "
             "/.well-known/openid-configuration. Default: none, VÀLid's plain OAuth 2.0.")] = None,
) -> None:
    """Start the simulated Via Oberta and the development identity provider in one process (Ctrl-C stops)."""
    import uvicorn

    from sandbox.idp_service import ID_TOKEN_ALGS, IdPSandboxConfig, RegisteredClient
    from sandbox.idp_service import create_app as create_idp
    from sandbox.population import generate_population
    from sandbox.viaoberta_service import ViaObertaSandboxConfig
    from sandbox.viaoberta_service import create_app as create_viaoberta

    if id_token_alg is not None and id_token_alg not in ID_TOKEN_ALGS:
        err_console.print(f"[red]--id-token-alg must be one of {', '.join(ID_TOKEN_ALGS)}[/red]", highlight=False)
        raise typer.Exit(2)
    advertised = advertised_host(host, public_host)
    viaoberta_url = f"http://{advertised}:{viaoberta_port}"
    idp_url = f"http://{advertised}:{idp_port}"
    try:
        files = ensure_sandbox_files(data_dir, viaoberta_url, redirect_uri or list(DEFAULT_REDIRECT_URIS))
        clients = [RegisteredClient(c["client_id"], c["client_secret"], tuple(c["redirect_uris"]))
                   for c in files["clients"]]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        err_console.print(f"[red]Cannot prepare {safe(data_dir)}: {safe(exc)}[/red]", highlight=False)
        raise typer.Exit(2) from exc
    population = generate_population(seed=seed, size=size)
    viaoberta_app = create_viaoberta(ViaObertaSandboxConfig(
        signing_key_pem=files["platform_key"], signing_cert_pem=files["platform_cert"],
        registered_certs_pem=[files["requester_cert"]], population_seed=seed, population_size=size))
    idp_app = create_idp(IdPSandboxConfig(clients=clients, seed=seed, population_size=size,
                                          allow_login_hint=allow_login_hint, population=population,
                                          id_token_alg=id_token_alg, issuer_url=idp_url))

    table = Table(title="Cartera sandbox — DEVELOPMENT STAND-INS, synthetic citizens only")
    table.add_column("service")
    table.add_column("URL")
    table.add_column("notes")
    table.add_row("Simulated Via Oberta", viaoberta_url, f"SCSP v3 over SOAP; {size} citizens (seed {seed})")
    table.add_row("Identity provider (VÀLid-like)", idp_url + "/o/oauth2/auth",
                  "login_hint " + ("enabled" if allow_login_hint else "disabled")
                  + (f"; {id_token_alg} ID tokens (scope openid), discovery at "
                     f"{idp_url}/.well-known/openid-configuration" if id_token_alg else ""))
    table.add_row("Keys and client secrets", str(data_dir), f"issuer sources: {files['sources_path']}")
    console.print(table)
    console.print("Try logging in as [bold]12345678Z[/bold] (all registries), [bold]23456789D[/bold] "
                  "(tax NEGATIVE), [bold]45678901G[/bold] (pending answers). "
                  "`cartera sandbox citizens` lists everyone.")

    class _Server(uvicorn.Server):
        # uvicorn captures SIGINT/SIGTERM per server; with two servers in one loop the last one
        # would win, so signals are handled once below and stop both.
        def install_signal_handlers(self) -> None:
            pass

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    servers = [_Server(uvicorn.Config(a, host=host, port=p, log_level="warning", lifespan="on"))
               for a, p in ((viaoberta_app, viaoberta_port), (idp_app, idp_port))]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: [setattr(s, "should_exit", True) for s in servers])
        await asyncio.gather(*(s.serve() for s in servers))

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    console.print("Sandbox stopped.")


def citizen_summary(citizen: Any) -> dict[str, Any]:
    """One citizen as listed by ``citizens --json`` (no secrets exist here: everything is synthetic)."""
    tax = citizen.tax
    return {
        "identifier": citizen.identifier,
        "identifierType": citizen.identifier_type,
        "name": citizen.full_name,
        "birthDate": citizen.birth_date.isoformat(),
        "email": citizen.email,
        "products": list(citizen.products),
        "tax_status": None if tax is None else ("POSITIVE" if tax.status == "POSITIVO" else "NEGATIVE"),
        "degrees": len(citizen.degrees),
        "municipality": None if citizen.padro is None else citizen.padro.municipality_name,
        "pending": list(citizen.pending),
    }


@app.command("citizens")
def citizens(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    limit: int = typer.Option(0, min=0, help="Show at most N citizens (0: all with --json, 50 in the table)."),
    product: str | None = typer.Option(None, help="Only citizens holding data for this product "
                                                  "(ECOT103, TITOLS_UNIVERSITARIS, RESIDENT, VIDA_LABORAL or a key)."),
    seed: int = typer.Option(2026, help="Seed of the synthetic population."),
    size: int = typer.Option(1000, min=5, max=100_000, help="Number of synthetic citizens."),
) -> None:
    """List the synthetic citizens and which registries hold data for each, so you know whom to log in as."""
    from sandbox.population import generate_population
    from viaoberta.products import get_product

    selected = generate_population(seed=seed, size=size).citizens
    if product is not None:
        found = get_product(product)
        if found is None:
            err_console.print(f"[red]Unknown product {safe(repr(product))}.[/red] Use ECOT103, TITOLS_UNIVERSITARIS, "
                              "RESIDENT or VIDA_LABORAL.", highlight=False)
            raise typer.Exit(2)
        selected = [c for c in selected if found.codigo_certificado in c.products]
    shown = selected[:limit] if limit else (selected if as_json else selected[:50])
    if as_json:
        typer.echo(json.dumps([citizen_summary(c) for c in shown], ensure_ascii=False, indent=1))
        return
    table = Table(title=f"Synthetic citizens ({len(shown)} of {len(selected)}) — development only")
    for column in ("NIF/NIE", "name", "registries with data", "tax", "notes"):
        table.add_column(column)
    for citizen in shown:
        summary = citizen_summary(citizen)
        notes = "pending answers" if summary["pending"] else ""
        table.add_row(summary["identifier"], summary["name"], ", ".join(summary["products"]) or "—",
                      summary["tax_status"] or "—", notes)
    console.print(table)
