"""Data-source adapters built from configuration, not code edits.

The configuration maps credential type ids to a source: ``{type_id: {kind: ..., ...settings}}``::

    tax-compliance:
      kind: viaoberta
      endpoint: http://127.0.0.1:8004
      product: ECOT103
      signing_key_file: var/sandbox/requester-key.pem
      signing_cert_file: var/sandbox/requester-cert.pem
      platform_cert_files: [var/sandbox/platform-cert.pem]
    university-diploma:
      kind: rest
      url: https://registry.example/degrees/{identifier}
      auth: {type: bearer, token: ...}
      fields: {DatosTitulacion.DatosTitulo.NombreCarrera: degree.title}
    padro:
      kind: sql
      url: sqlite:///var/padro.sqlite
      query: SELECT * FROM residents WHERE nif = :identifier

``viaoberta`` settings: ``endpoint``, ``product``, ``signing_key_pem``/``signing_key_file``,
``signing_cert_pem``/``signing_cert_file``, ``platform_certs_pem``/``platform_cert_files``,
``variant`` (aoc|state), ``timeout`` (seconds, above 0, at most 120), ``retries`` (0 to 5),
``backoff_seconds`` (0 to 60), ``pending_retry_seconds`` (1 to 3600: when to ask again about a pending
query the emitter expects to answer within the hour, ``TiempoEstimadoRespuesta`` 0; default 30),
``specific`` (text values). PEM text is ASCII, and the signing key,
the certificates and these numbers are checked when the adapter is built, not at the first query. ``rest``: see
:class:`issuer.sources.rest.RestSource`; ``sql``: see :class:`issuer.sources.sql.SqlSource`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from ssi.urls import UnsafeURL, split_secure_url

from .base import DataSource, SourceConfigError, destination_refused

KINDS = ("viaoberta", "rest", "sql")
_REST_KEYS = frozenset({"url", "method", "headers", "auth", "fields", "product", "name", "timeout", "retries",
                        "backoff", "not_found_status"})
_SQL_KEYS = frozenset({"url", "query", "fields", "list_field", "product", "name", "timeout"})
_VO_KEYS = frozenset({"endpoint", "product", "signing_key_pem", "signing_key_file", "signing_cert_pem",
                      "signing_cert_file", "platform_certs_pem", "platform_cert_files", "variant", "timeout",
                      "retries", "backoff_seconds", "pending_retry_seconds", "specific", "name"})


def _pem_bytes(value: Any, name: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return value.encode("ascii")
        except UnicodeEncodeError:
            pass
    raise SourceConfigError(f"{name} must be PEM text (ASCII)")


def _pem(settings: dict[str, Any], inline: str, file_key: str, base_dir: Path | None) -> bytes:
    if settings.get(inline):
        return _pem_bytes(settings[inline], inline)
    if settings.get(file_key):
        path = Path(settings[file_key])
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SourceConfigError(f"cannot read {file_key} ({path.name})") from exc
    raise SourceConfigError(f"{inline} or {file_key} is required")


def _pems(settings: dict[str, Any], base_dir: Path | None) -> list[bytes]:
    inline = settings.get("platform_certs_pem") or []
    files = settings.get("platform_cert_files") or []
    if not isinstance(inline, list) or not isinstance(files, list):
        raise SourceConfigError("platform_certs_pem and platform_cert_files must be lists")
    out = [_pem_bytes(p, "platform_certs_pem") for p in inline]
    for name in files:
        out.append(_pem({"f": name}, "_", "f", base_dir))
    if not out:
        raise SourceConfigError("at least one platform certificate is required")
    return out


def build_source(config: dict[str, Any], *, http: httpx.AsyncClient | None = None,
                 base_dir: Path | None = None) -> DataSource:
    """One adapter from its settings (``kind`` plus the kind's settings); raises :class:`SourceConfigError`.

    ``http``: the client REST and Via Oberta sources call through, required for them (the issuer's is
    guarded by its outbound policy, ``service_kit.outbound``); no adapter builds an unguarded one.
    """
    if not isinstance(config, dict):
        raise SourceConfigError("a source configuration must be a mapping")
    kind = config.get("kind")
    settings = {k: v for k, v in config.items() if k != "kind"}
    if kind not in KINDS:
        raise SourceConfigError(f"kind must be one of {', '.join(KINDS)}")
    allowed = {"viaoberta": _VO_KEYS, "rest": _REST_KEYS, "sql": _SQL_KEYS}[kind]
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise SourceConfigError(f"unknown {kind} setting(s): {', '.join(unknown)}")
    if kind != "sql" and http is None:
        raise SourceConfigError(f"a {kind} source needs an HTTP client (http)")
    try:
        if kind == "sql":
            from .sql import SqlSource

            return SqlSource(**settings)
        assert http is not None
        if kind == "rest":
            from .rest import RestSource

            return RestSource(http=http, **settings)
        return _build_viaoberta(settings, http, base_dir)
    except TypeError as exc:  # a required setting missing or of the wrong kind
        raise SourceConfigError(f"invalid {kind} settings") from exc


def _build_viaoberta(settings: dict[str, Any], http: httpx.AsyncClient, base_dir: Path | None) -> DataSource:
    from viaoberta.client import ViaObertaClient
    from viaoberta.errors import ViaObertaError

    from .viaoberta import ViaObertaSource

    endpoint = settings.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
        raise SourceConfigError("endpoint must be an http(s) URL")
    if not isinstance(settings.get("product"), str):
        raise SourceConfigError("product is required (a CodigoCertificado such as ECOT103)")
    options: dict[str, Any] = {k: settings[k] for k in ("timeout", "retries", "variant", "backoff_seconds")
                               if k in settings}
    if "pending_retry_seconds" in settings:
        pending = settings["pending_retry_seconds"]
        if isinstance(pending, bool) or not isinstance(pending, int) or not 1 <= pending <= 3600:
            raise SourceConfigError("pending_retry_seconds must be an integer from 1 to 3600")
        options["pending_floor_seconds"] = pending
    try:
        client = ViaObertaClient(
            endpoint,
            signing_key_pem=_pem(settings, "signing_key_pem", "signing_key_file", base_dir),
            signing_cert_pem=_pem(settings, "signing_cert_pem", "signing_cert_file", base_dir),
            platform_certs_pem=_pems(settings, base_dir), http=http, final_error=destination_refused, **options,
        )
    except ViaObertaError as exc:
        raise SourceConfigError(f"invalid Via Oberta client settings: {exc.detail}") from exc
    specific = settings.get("specific")
    if specific is not None and (not isinstance(specific, dict)
                                 or not all(isinstance(v, str) for v in specific.values())):
        raise SourceConfigError("specific must map request field paths to text values")
    return ViaObertaSource(client, settings["product"], specific=specific, name=settings.get("name", "viaoberta"))


#: Settings that name files on the issuer's own server: an operator's sources file may use them, a
#: tenant's configuration (admin API) may not, or any tenant could have the issuer read its files.
FILE_SETTINGS = ("signing_key_file", "signing_cert_file", "platform_cert_files")


#: The setting holding the URL a source of each kind calls.
URL_SETTINGS = {"rest": "url", "viaoberta": "endpoint"}


def tenant_source_config(config: dict[str, Any], connections: Mapping[str, str], *,
                         dev_mode: bool = False) -> dict[str, Any]:
    """A tenant's source configuration, as given through the admin API, made buildable.

    A tenant chooses its source's settings, but not where on the issuer's side they lead: no file
    settings (:data:`FILE_SETTINGS`: give the PEM itself), and a SQL source names one of the
    ``connections`` the operator opened to this tenant (``connection``), never a database URL, which
    could be the issuer's own database. The URL of a REST or Via Oberta source (:data:`URL_SETTINGS`)
    must be https, as a webhook's: the query carries the source's credentials (a bearer token, a
    password) and brings back a citizen's data; http only to a loopback host in ``dev_mode``. Its
    address is checked where the connection is made (``service_kit.outbound``). Raises
    :class:`SourceConfigError`, whose detail names the setting, never the URL (it may hold a secret).
    """
    if not isinstance(config, dict):
        raise SourceConfigError("a source configuration must be a mapping")
    named_files = [key for key in FILE_SETTINGS if key in config]
    if named_files:
        raise SourceConfigError(f"{', '.join(named_files)}: a source names no file on the issuer's server; give "
                                "the PEM text itself (signing_key_pem, signing_cert_pem, platform_certs_pem)")
    url_setting = URL_SETTINGS.get(config.get("kind"))  # type: ignore[arg-type]
    if url_setting is not None and url_setting in config:
        try:
            split_secure_url(config[url_setting], allow_http_loopback=dev_mode, allow_fragment=False)
        except UnsafeURL as exc:
            rule = " (http only to a loopback host, in dev_mode)" if exc.reason == "insecure" else ""
            raise SourceConfigError(f"{url_setting}: the URL {exc}{rule}") from None
    if config.get("kind") != "sql":
        return dict(config)
    if "url" in config:
        raise SourceConfigError("a SQL source names a connection the operator configured (connection), not a URL")
    name = config.get("connection")
    if not isinstance(name, str) or name not in connections:
        raise SourceConfigError("connection must name a database the issuer's operator opened to this tenant "
                                "(settings: sql_connections)")
    return {**{k: v for k, v in config.items() if k != "connection"}, "url": connections[name]}


def build_sources(config: dict[str, Any], *, http: httpx.AsyncClient | None = None,
                  base_dir: Path | None = None) -> dict[str, DataSource]:
    """Adapters by credential type id from ``{type_id: {kind, ...}}``; every entry is checked."""
    if not isinstance(config, dict):
        raise SourceConfigError("the sources configuration must map type ids to settings")
    out: dict[str, DataSource] = {}
    for type_id, settings in config.items():
        try:
            out[str(type_id)] = build_source(settings, http=http, base_dir=base_dir)
        except SourceConfigError as exc:
            raise SourceConfigError(f"{type_id}: {exc.detail}") from exc
    return out


def load_sources_config(path: str | Path, *, http: httpx.AsyncClient | None = None) -> dict[str, DataSource]:
    """Read a YAML sources file and build its adapters (relative file settings resolve from its folder);
    ``http`` as for :func:`build_source`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SourceConfigError(f"cannot read sources file {path.name}") from exc
    return build_sources(data or {}, http=http, base_dir=path.parent)
