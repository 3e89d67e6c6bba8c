"""``cartera issuer``: offers, credentials (revoke, suspend, reinstate), types and keys over the admin API.

Where to connect, in order: ``--url``/``--api-key`` options, the ``CARTERA_ISSUER_URL`` /
``CARTERA_ISSUER_API_KEY`` environment variables, then the development file written by provisioning
(``var/cartera-dev.json``, or ``CARTERA_DEV_FILE``), whose ``issuer`` member is what
``issuer.provisioning.provision_demo`` returns::

    {"issuer": {"issuer_url": "http://127.0.0.1:8001",
                "tenants": {"uni-barcelona": {"api_key": "ck_...", "types": ["university-diploma"], ...},
                            "aoc-tax": {...}, "ajuntament-girona": {...}}}}

``--tenant`` picks the tenant in that file; without it, ``offer`` picks the tenant that issues the
requested type, and other commands the first tenant.

``share-vct``, ``unshare-vct`` and ``shared-vcts`` are the operator's, not a tenant's: they need the
issuer's platform admin key (``--admin-key``, ``CARTERA_ISSUER_ADMIN_API_KEY`` — the issuer's own
setting —, or the development file's ``issuer.admin_api_key``), and ``--tenant`` there names the
tenant the ``vct`` is shared with, any tenant of the issuer.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cartera.console import fail, print_listing, safe
from cartera.http_api import call_api, dev_section, path_segment
from ssi.qr import qr_png, qr_svg, qr_terminal

app = typer.Typer(help="Issuer: create credential offers, revoke or suspend credentials, list types and records.",
                  no_args_is_help=True)
console = Console()

DEFAULT_URL = "http://127.0.0.1:8001"

UrlOpt = Annotated[str | None, typer.Option("--url", help="Issuer base URL \\[env CARTERA_ISSUER_URL].")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", help="Tenant admin API key \\[env CARTERA_ISSUER_API_KEY].")]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="Tenant slug in the development file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]






def _connection(url: str | None, api_key: str | None, tenant: str | None, type_id: str | None = None) -> tuple[str, str]:
    dev = dev_section("issuer")
    url = url or os.environ.get("CARTERA_ISSUER_URL") or dev.get("issuer_url") or dev.get("url") or DEFAULT_URL
    api_key = api_key or os.environ.get("CARTERA_ISSUER_API_KEY")
    if not api_key:
        tenants: dict[str, Any] = dev.get("tenants") or {}
        if tenant is not None and tenant not in tenants:
            fail(f"tenant {tenant!r} is not in the development file")
        entry = tenants.get(tenant) if tenant else None
        if entry is None and type_id is not None:
            entry = next((t for t in tenants.values() if type_id in (t.get("types") or [])), None)
        if entry is None and tenant is None:
            entry = next(iter(tenants.values()), None)
        api_key = (entry or {}).get("api_key")
    if not api_key:
        fail("no API key: give --api-key, set CARTERA_ISSUER_API_KEY, or run `cartera run` to provision")
    return str(url).rstrip("/"), str(api_key)




class _Output:
    """A file ``offer --png/--svg`` will write, opened before the offer is created: a path that cannot
    be written fails at once, not after the offer's URI and transaction code were made and lost."""

    def __init__(self, path: Path, force: bool) -> None:
        self.path = path
        existed = os.path.lexists(path)
        # Never through a symbolic link; an existing file only with --force. O_NONBLOCK: opening a FIFO
        # must not hang (it is refused below, with any other file that is not a regular file).
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (0 if force else os.O_EXCL)
        try:
            fd = os.open(path, flags, 0o644)
        except FileExistsError:
            if os.path.islink(path):
                fail(f"{path} is a symbolic link: not writing through it")
            fail(f"{path} already exists", hint="choose another file, or give --force to overwrite it")
        except OSError as exc:
            if exc.errno == errno.ELOOP or (existed and os.path.islink(path)):
                fail(f"{path} is a symbolic link: not writing through it")
            if exc.errno == errno.ENXIO:
                fail(f"{path} is not a regular file")
            fail(f"cannot write {path}: {exc.strerror or exc}")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            fail(f"{path} is not a regular file")
        self.created = not existed
        self.handle: IO[bytes] = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self.handle.truncate(0)
        self.handle.write(data)
        self.handle.close()

    def discard(self) -> None:
        """Close the file and remove it if this command created it (the offer was not made)."""
        self.handle.close()
        if self.created:
            with contextlib.suppress(OSError):
                self.path.unlink()


@app.command("offer")
def offer(type_id: Annotated[str, typer.Option("--type", "-t", help="Credential type id (configuration id).")],
          subject: Annotated[str, typer.Option("--subject", "-s", help="The citizen's NIF/NIE.")],
          name: Annotated[str, typer.Option(help="The citizen's full name (needed by some types).")] = "",
          tx_code: Annotated[bool, typer.Option("--tx-code/--no-tx-code", help="Protect with a transaction code.")] = True,
          by_value: Annotated[bool, typer.Option("--by-value", help="Put the offer in the link, not a URI.")] = False,
          selector: Annotated[str | None, typer.Option(help="Pick one record, e.g. a degree's NumTitulo.")] = None,
          png: Annotated[Path | None, typer.Option(help="Also write the QR code as PNG to this new file.")] = None,
          svg: Annotated[Path | None, typer.Option(help="Also write the QR code as SVG to this new file.")] = None,
          force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --png/--svg file (never "
                                                             "through a symbolic link).")] = False,
          url: UrlOpt = None, api_key: KeyOpt = None, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Create a credential offer for a citizen: prints the offer URI, the transaction code and a QR code.

    The --png/--svg files are checked before the offer is made: an existing file (without --force), a
    symbolic link or a path that cannot be written stops the command first.
    """
    base, key = _connection(url, api_key, tenant, type_id)
    body: dict[str, Any] = {"credential_configuration_ids": [type_id],
                            "subject": {"identifier": subject.strip().upper(), "name": name},
                            "tx_code": tx_code, "by_reference": not by_value}
    if selector:
        body["selector"] = selector
    outputs: list[tuple[_Output, str]] = []
    try:
        if png is not None:
            outputs.append((_Output(png, force), "png"))
        if svg is not None:
            outputs.append((_Output(svg, force), "svg"))
        created = call_api("issuer", "POST", base, key, "/v1/offers", json=body)
    except BaseException:
        for output, _ in outputs:
            output.discard()
        raise
    write_error = None
    for output, kind in outputs:
        try:
            output.write(qr_png(created["offer_uri"]) if kind == "png" else
                         qr_svg(created["offer_uri"]).encode("utf-8"))
        except OSError as exc:
            write_error = write_error or f"cannot write {output.path}: {exc.strerror or exc}"
    _print_offer(created, type_id, as_json)
    if write_error:
        fail(write_error, hint="the offer above was created all the same")


def _print_offer(created: dict[str, Any], type_id: str, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"offer_uri": created["offer_uri"], "tx_code": created["tx_code"],
                               "credential_id": created["credential_ids"].get(type_id),
                               "credential_ids": created["credential_ids"], "offer_id": created["offer_id"],
                               "credential_offer_uri": created["credential_offer_uri"],
                               "expires_at": created["expires_at"]}))
        return
    typer.echo(qr_terminal(created["offer_uri"]))
    console.print(safe(created["offer_uri"]), soft_wrap=True, highlight=False)
    if created["tx_code"]:
        console.print(f"[bold]Transaction code:[/bold] {safe(created['tx_code'])}  (give it to the citizen "
                      "separately)", highlight=False)
    console.print(f"Credential id: {safe(created['credential_ids'].get(type_id))}   expires "
                  f"{safe(created['expires_at'])}", highlight=False)


def _status_command(action: str, credential_id: str, url: str | None, api_key: str | None, tenant: str | None,
                    as_json: bool) -> None:
    base, key = _connection(url, api_key, tenant)
    record = call_api("issuer", "POST", base, key,
                      f"/v1/credentials/{path_segment(credential_id, 'credential id')}/{action}")
    if as_json:
        typer.echo(json.dumps(record, ensure_ascii=False))
    else:
        console.print(f"{safe(record['credential_id'])}: {safe(record['status'])} ({safe(record['copies'])} copies "
                      "in the status list)", highlight=False)


@app.command("revoke")
def revoke(credential_id: Annotated[str, typer.Argument(help="The credential id (from `offer` or `credentials`).")],
           url: UrlOpt = None, api_key: KeyOpt = None, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke a credential for good (every copy of a batch)."""
    _status_command("revoke", credential_id, url, api_key, tenant, as_json)


@app.command("suspend")
def suspend(credential_id: Annotated[str, typer.Argument(help="The credential id.")],
            url: UrlOpt = None, api_key: KeyOpt = None, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Suspend a credential (can be reinstated)."""
    _status_command("suspend", credential_id, url, api_key, tenant, as_json)


@app.command("reinstate")
def reinstate(credential_id: Annotated[str, typer.Argument(help="The credential id.")],
              url: UrlOpt = None, api_key: KeyOpt = None, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Reinstate a suspended credential."""
    _status_command("reinstate", credential_id, url, api_key, tenant, as_json)


@app.command("types")
def types(url: UrlOpt = None, api_key: KeyOpt = None, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """List the tenant's credential types, their versions and data sources."""
    base, key = _connection(url, api_key, tenant)
    print_listing(call_api("issuer", "GET", base, key, "/v1/types"), as_json=as_json,
                  columns=("id", "version", "name", "source", "vct"),
                  row=lambda t: (t["id"], t["version"], t["name"], t["source_kind"] or "-", t["vct"]))


@app.command("register-type")
def register_type(builtin: Annotated[str | None, typer.Option(help="Id of a built-in type.")] = None,
                  file: Annotated[Path | None, typer.Option(help="A type definition (YAML or JSON).")] = None,
                  url: UrlOpt = None, api_key: KeyOpt = None, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Register a credential type (or a new version of one)."""
    if (builtin is None) == (file is None):
        fail("give exactly one of --builtin and --file")
    body: dict[str, Any] = {"builtin": builtin}
    if file is not None:
        import yaml

        try:
            body = {"definition": yaml.safe_load(file.read_text(encoding="utf-8"))}
        except UnicodeDecodeError:
            fail(f"{file} is not a text file (UTF-8): a type definition is YAML or JSON")
        except OSError as exc:
            fail(f"cannot read {file}: {exc.strerror or exc}")
        except yaml.YAMLError:
            fail(f"cannot read {file}: not valid YAML or JSON")
    base, key = _connection(url, api_key, tenant)
    created = call_api("issuer", "POST", base, key, "/v1/types", json=body)
    typer.echo(json.dumps(created, ensure_ascii=False) if as_json else f"registered {created['id']} {created['version']}")


@app.command("credentials")
def credentials(subject: Annotated[str | None, typer.Option(help="Only this citizen's credentials.")] = None,
                type_id: Annotated[str | None, typer.Option("--type", help="Only this type.")] = None,
                limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
                url: UrlOpt = None, api_key: KeyOpt = None, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """List issuance records (evidence, never claim values)."""
    base, key = _connection(url, api_key, tenant)
    params: dict[str, Any] = {"limit": limit}
    if subject:
        params["subject"] = subject
    if type_id:
        params["type"] = type_id
    page = call_api("issuer", "GET", base, key, "/v1/credentials", params=params)
    if as_json:
        typer.echo(json.dumps(page, ensure_ascii=False))
        return
    table = Table("credential id", "type", "subject", "status", "issued", "valid until")
    for r in page["items"]:
        table.add_row(*(safe(v) for v in (r["credential_id"], r["type_id"], r["subject_identifier"], r["status"],
                                          r["issued_at"][:19], r["valid_until"][:10])))
    console.print(table)
    console.print(f"{safe(page['total'])} in total", highlight=False)


@app.command("show")
def show(credential_id: Annotated[str, typer.Argument(help="The credential id.")],
         url: UrlOpt = None, api_key: KeyOpt = None, tenant: TenantOpt = None) -> None:
    """Print one issuance record as JSON (evidence of the source query and of the login)."""
    base, key = _connection(url, api_key, tenant)
    typer.echo(json.dumps(call_api("issuer", "GET", base, key,
                                   f"/v1/credentials/{path_segment(credential_id, 'credential id')}"),
                          indent=2, ensure_ascii=False))


@app.command("rotate-key")
def rotate_key(url: UrlOpt = None, api_key: KeyOpt = None, tenant: TenantOpt = None, as_json: JsonOpt = False,
               backend: Annotated[str | None, typer.Option(
                   "--backend", help="Where the new key is made: software, or pkcs11 (in the issuer's configured "
                                     "token, non-extractable). Default: the issuer's key_backend setting.")] = None,
               token_key_label: Annotated[str | None, typer.Option(
                   "--token-key-label", help="Register this existing key of the issuer's PKCS#11 token instead "
                                             "of generating one (see `cartera hsm generate`).")] = None) -> None:
    """Rotate the tenant's signing key (needs the issuer's CA; old credentials keep verifying)."""
    if backend not in (None, "software", "pkcs11"):
        fail("--backend is software or pkcs11")
    base, key = _connection(url, api_key, tenant)
    body: dict[str, Any] = {}
    if backend:
        body["backend"] = backend
    if token_key_label:
        body["token_key_label"] = token_key_label
    info = call_api("issuer", "POST", base, key, "/v1/keys/rotate", json=body)
    where = f" in token {info['token_key']['token']} as {info['token_key']['label']}" if info.get("token_key") else ""
    typer.echo(json.dumps(info) if as_json else
               f"new signing key {info['kid']}{where} (certificate until {info['not_after']})")


api_keys_app = typer.Typer(help="The tenant's admin API keys: list them, revoke one (e.g. a leaked key).",
                           no_args_is_help=True)
app.add_typer(api_keys_app, name="api-keys")


@api_keys_app.command("list")
def api_keys_list(url: UrlOpt = None, api_key: KeyOpt = None, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """List the tenant's admin API keys (ids and dates: never the keys)."""
    base, key = _connection(url, api_key, tenant)
    def row(k: dict[str, Any]) -> tuple[Any, ...]:
        state = "revoked" if k["revoked"] else "valid" + (" (this one)" if k.get("current") else "")
        return k["key_id"], k["label"], k["created_at"][:19], state

    print_listing(call_api("issuer", "GET", base, key, "/v1/tenant/api-keys"), as_json=as_json,
                  columns=("key id", "label", "created", "state"), row=row)


@api_keys_app.command("revoke")
def api_keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (from `api-keys list`), not the key.")],
                    url: UrlOpt = None, api_key: KeyOpt = None, tenant: TenantOpt = None,
                    as_json: JsonOpt = False) -> None:
    """Revoke an admin API key: refused at once by this issuer worker, by every worker within seconds."""
    base, key = _connection(url, api_key, tenant)
    info = call_api("issuer", "DELETE", base, key, f"/v1/tenant/api-keys/{path_segment(key_id, 'key id')}")
    if as_json:
        typer.echo(json.dumps(info, ensure_ascii=False))
    else:
        console.print(f"API key {safe(info['key_id'])} revoked", highlight=False)


# -- vcts shared with tenants (the operator's platform admin key) ----------------------------------

AdminKeyOpt = Annotated[str | None, typer.Option(
    "--admin-key", help="The issuer's platform admin key \\[env CARTERA_ISSUER_ADMIN_API_KEY, the issuer's own "
                        "setting; else the development file's issuer.admin_api_key]. A tenant's API key is refused.")]
SharedTenantOpt = Annotated[str, typer.Option(
    "--tenant", help="Slug of the tenant (any tenant of the issuer, not only the development file's).")]
VctArg = Annotated[str, typer.Argument(help="The vct, e.g. https://types.cartera.example/padro/v1 (see `cartera "
                                            "issuer types` of its owner).")]


def _platform_connection(url: str | None, admin_key: str | None) -> tuple[str, str]:
    dev = dev_section("issuer")
    url = url or os.environ.get("CARTERA_ISSUER_URL") or dev.get("issuer_url") or dev.get("url") or DEFAULT_URL
    admin_key = admin_key or os.environ.get("CARTERA_ISSUER_ADMIN_API_KEY") or dev.get("admin_api_key")
    if not admin_key:
        fail("no platform admin key: give --admin-key or set CARTERA_ISSUER_ADMIN_API_KEY",
             hint="it is the issuer's own CARTERA_ISSUER_ADMIN_API_KEY setting (an issuer without one has no "
                  "platform admin API): start `make run` / `cartera run` with the variable set, and set it here too")
    return str(url).rstrip("/"), str(admin_key)


def _shares_path(tenant: str) -> str:
    return f"/v1/tenants/{path_segment(tenant, 'tenant slug')}/shared-vcts"


@app.command("share-vct")
def share_vct(vct: VctArg, tenant: SharedTenantOpt, url: UrlOpt = None, admin_key: AdminKeyOpt = None,
              as_json: JsonOpt = False) -> None:
    """Let a tenant register types under a vct another tenant owns (platform admin key).

    A vct belongs to the tenant of this issuer that registered it first; the
    others are refused (409 vct_taken), so that a town council cannot issue
    the tax agency's certificates. For several councils hosted here to issue
    the one built-in padró type, the first to register it keeps it, and each
    other council is given it with this command, then registers the type as
    usual (`cartera issuer register-type --builtin padro`), with the owner's
    Type Metadata. Verifiers list the councils they accept for the vct.

    Only a vct some tenant registered can be shared. Sharing again is harmless.
    """
    base, key = _platform_connection(url, admin_key)
    share = call_api("issuer", "POST", base, key, _shares_path(tenant), json={"vct": vct})
    if as_json:
        typer.echo(json.dumps(share, ensure_ascii=False))
    else:
        console.print(f"{safe(share['vct'])} shared with {safe(share['tenant'])} (owner: {safe(share['owner'])})",
                      highlight=False)


@app.command("unshare-vct")
def unshare_vct(vct: VctArg, tenant: SharedTenantOpt, url: UrlOpt = None, admin_key: AdminKeyOpt = None,
                as_json: JsonOpt = False) -> None:
    """Withdraw a vct shared with a tenant (platform admin key).

    From then on the tenant can register no new type or version under it.
    Nothing is undone: the versions it registered stay (it can still make
    offers of them), and credentials it issued stay valid. Revoke those with
    `cartera issuer revoke` and the tenant's key if they must go; verifiers
    that should stop accepting them drop the tenant from their issuer list.
    """
    base, key = _platform_connection(url, admin_key)
    call_api("issuer", "DELETE", base, key, _shares_path(tenant), params={"vct": vct})
    if as_json:
        typer.echo(json.dumps({"vct": vct, "tenant": tenant, "withdrawn": True}, ensure_ascii=False))
    else:
        console.print(f"{safe(vct)} no longer shared with {safe(tenant)}", highlight=False)


@app.command("shared-vcts")
def shared_vcts(tenant: SharedTenantOpt, url: UrlOpt = None, admin_key: AdminKeyOpt = None,
                as_json: JsonOpt = False) -> None:
    """List the vcts shared with a tenant, and their owners (platform admin key)."""
    base, key = _platform_connection(url, admin_key)
    shares = call_api("issuer", "GET", base, key, _shares_path(tenant))
    if as_json:
        typer.echo(json.dumps(shares, ensure_ascii=False))
        return
    table = Table("owner", "shared")
    # Folded, never cut short: the vct is what `unshare-vct` needs.
    table.add_column("vct", overflow="fold")
    for share in shares:
        table.add_row(safe(share["owner"]), safe(share["shared_at"][:19]), safe(share["vct"]))
    console.print(table)
