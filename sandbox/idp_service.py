"""A VÀLid-compatible identity provider for development — **synthetic citizens only**.

It speaks the AOC VÀLid flavour of OAuth 2.0 (authorization code) so that the wallet's citizen
login can be exercised end to end without the real service:

``GET /o/oauth2/auth``
    ``response_type=code``, ``client_id``, ``redirect_uri``, ``scope`` (must include
    ``autenticacio_usuari``), ``state``; PKCE ``code_challenge`` with ``code_challenge_method=S256``
    is enforced whenever sent (``plain`` is refused). Shows a login page where a person searches
    and picks a synthetic citizen and a login method. When the configuration allows it,
    ``login_hint=<identifier>`` (optionally ``login_method=``) skips the page and redirects straight
    back with a code: the non-interactive path tests and demos use.
``POST /o/oauth2/token``
    ``grant_type=authorization_code``, ``code``, ``redirect_uri``, ``code_verifier``; the client
    authenticates with ``client_id``/``client_secret`` in the form or with HTTP Basic (not both).
    Codes are single-use, short-lived and bound to the client and redirect URI; replaying a code
    also revokes the token issued for it (RFC 6749 §4.1.2).
``GET /serveis-rest/getUserInfo?AccessToken=...``
    ``identifier``, ``identifierType``, ``name``, ``surnames``, ``surname1``, ``surname2``,
    ``email``, ``method`` (idcatmobil|certificat|clave), ``assuranceLevel`` (low|substantial|high),
    plus ``status: "ok"`` and ``countryCode`` as VÀLid sends them.

Optionally (``id_token_alg``, ``cartera sandbox run --id-token-alg RS256``) it is also an OpenID
provider, so that the wallet's generic OpenID Connect login can be tried against it: a request whose
scope includes ``openid`` gets an ``id_token`` in the token answer (``iss``, ``sub`` = the identifier,
``aud`` = the client, ``nonce`` when sent, ``name``, ``given_name``, ``family_name``, ``email``,
``acr`` = the assurance level, ``amr``), signed ES256, RS256 or PS256 with a key generated at start
(RSA: 2048 bits), published with its ``kid``, ``alg`` and ``use`` at ``GET /o/oauth2/jwks``; discovery
at ``GET /.well-known/openid-configuration``. Off by default: VÀLid's plain OAuth 2.0, no ID token.

State (codes, tokens) is kept in this process's memory. That is acceptable only because this is a
single-process development stand-in: run it with one worker. The production services keep such
state in their database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import secrets
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from joserfc import jws as joserfc_jws
from joserfc.jwk import ECKey, RSAKey

from service_kit.openapi import document_error_responses
from service_kit.security import BodySizeLimitMiddleware, SecurityHeadersMiddleware

from .population import Citizen, Population, generate_population

MAX_BODY_BYTES = 65_536
# Pages carry their styles inline, and the login form posts back to a relying party's redirect.
PAGE_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' *; "
                                          "frame-ancestors 'none'; base-uri 'none'"}

SCOPE = "autenticacio_usuari"
#: Login methods VÀLid reports, with the eIDAS assurance level each gives in this sandbox.
METHODS: dict[str, tuple[str, str]] = {
    "idcatmobil": ("idCAT Mòbil", "substantial"),
    "certificat": ("Certificat digital en targeta (DNIe, TCAT)", "high"),
    "clave": ("Cl@ve", "substantial"),
    "idcatmobil_low": ("idCAT Mòbil amb registre telemàtic", "low"),
}
_PKCE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
#: Algorithms the provider can sign ID tokens with (``IdPSandboxConfig.id_token_alg``).
ID_TOKEN_ALGS = ("ES256", "RS256", "PS256")
ID_TOKEN_TTL = 300
MAX_NONCE = 500


@dataclass(frozen=True)
class RegisteredClient:
    """A relying party registered with the identity provider."""

    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]


@dataclass
class IdPSandboxConfig:
    """Configuration of the development identity provider.

    ``allow_login_hint`` enables the non-interactive ``login_hint`` path (tests, demos); keep it
    off anywhere a person might mistake this for a real login. ``id_token_alg`` (one of
    :data:`ID_TOKEN_ALGS`) makes it an OpenID provider too, whose issuer identifier is ``issuer_url``
    (required then); ``None`` keeps VÀLid's plain OAuth 2.0 without ID tokens.
    """

    clients: list[RegisteredClient]
    seed: int = 2026
    population_size: int = 1000
    allow_login_hint: bool = False
    code_ttl: int = 60
    token_ttl: int = 3600
    id_token_alg: str | None = None
    issuer_url: str = ""
    population: Population | None = field(default=None, repr=False)


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    redirect_uri_sent: bool
    identifier: str
    method: str
    scope: str
    code_challenge: str | None
    expires_at: float
    nonce: str | None = None


@dataclass
class _Token:
    identifier: str
    method: str
    client_id: str
    expires_at: float


class _Store:
    """Codes and tokens in memory (single-process development stand-in; see the module docstring)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.codes: dict[str, _Grant] = {}
        self.used_codes: dict[str, tuple[str | None, float]] = {}
        self.tokens: dict[str, _Token] = {}

    def purge(self, now: float) -> None:
        for table in (self.codes, self.tokens):
            for key in [k for k, v in table.items() if v.expires_at < now]:
                del table[key]
        for key in [k for k, (_, exp) in self.used_codes.items() if exp < now]:
            del self.used_codes[key]


class IdTokenSigner:
    """The provider's ID-token key, generated at start and never stored, and its public JWKS.

    joserfc signs: an implementation other than ``ssi.jose``, which verifies the tokens in the wallet."""

    def __init__(self, alg: str) -> None:
        if alg not in ID_TOKEN_ALGS:
            raise ValueError(f"id_token_alg must be one of {', '.join(ID_TOKEN_ALGS)}")
        parameters: Any = {"alg": alg, "use": "sig"}
        self.alg = alg
        self.key: ECKey | RSAKey = (ECKey.generate_key("P-256", parameters=parameters) if alg == "ES256"
                                    else RSAKey.generate_key(2048, parameters=parameters))
        self.key.ensure_kid()  # the RFC 7638 thumbprint
        self.kid = str(self.key.kid)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"alg": self.alg, "kid": self.kid, "typ": "JWT"}
        payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return joserfc_jws.serialize_compact(header, payload, self.key, algorithms=[self.alg])


def id_token_claims(citizen: Citizen, method: str, *, issuer: str, client_id: str, nonce: str | None,
                    now: float) -> dict[str, Any]:
    """The claims of the ID token for ``citizen`` logged in with ``method`` (as ``getUserInfo`` says them)."""
    info = user_info_document(citizen, method)
    claims: dict[str, Any] = {
        "iss": issuer, "sub": citizen.identifier, "aud": client_id, "iat": int(now), "exp": int(now) + ID_TOKEN_TTL,
        "name": citizen.full_name, "given_name": citizen.name, "family_name": citizen.surnames,
        "email": citizen.email, "acr": info["assuranceLevel"], "amr": [info["method"]]}
    if nonce:
        claims["nonce"] = nonce
    return claims


class _AuthError(Exception):
    """An error in an authorization request: redirected to the client when the redirect URI is trusted."""

    def __init__(self, error: str, description: str, redirectable: bool = True) -> None:
        self.error = error
        self.description = description
        self.redirectable = redirectable
        super().__init__(description)


def _fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text.casefold()) if not unicodedata.combining(c))


def _oauth_error(error: str, description: str, status: int = 400, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status,
                        headers={"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})})


def _redirect(uri: str, params: dict[str, str]) -> RedirectResponse:
    sep = "&" if urlsplit(uri).query else "?"
    return RedirectResponse(uri + sep + urlencode(params), status_code=303)


# The authorization and login endpoints answer the browser: the login page, or an error page when the
# client or redirect_uri cannot be trusted with a redirect.
_PAGES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The login page.", "content": {"text/html": {}}},
    "4XX": {"description": "An error page (the request cannot be redirected back to the client).",
            "content": {"text/html": {}}},
}

def create_app(config: IdPSandboxConfig) -> FastAPI:
    """The identity provider as an ASGI app (run it with a single worker)."""
    population = config.population or generate_population(seed=config.seed, size=config.population_size)
    clients = {c.client_id: c for c in config.clients}
    signer: IdTokenSigner | None = None
    if config.id_token_alg is not None:
        if not config.issuer_url:
            raise ValueError("an identity provider signing ID tokens needs its issuer_url")
        signer = IdTokenSigner(config.id_token_alg)
    issuer = config.issuer_url
    store = _Store()
    app = FastAPI(title="Cartera development identity provider (VÀLid-compatible, synthetic citizens only)",
                  docs_url=None, redoc_url=None)
    # Its errors are OAuth 2.0 error bodies like the services': document them the same way.
    document_error_responses(app)
    # Same hardening as the services: security headers on every page, and small bodies (login forms).
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(SecurityHeadersMiddleware)
    app.state.population = population

    def check_client(params: dict[str, str]) -> tuple[RegisteredClient, str, bool]:
        """Check client and redirect URI first: only then may errors be redirected to the client."""
        client = clients.get(params.get("client_id", ""))
        if client is None:
            raise _AuthError("invalid_client", "unknown client_id", redirectable=False)
        redirect_uri = params.get("redirect_uri", "")
        sent = bool(redirect_uri)
        if not redirect_uri:
            if len(client.redirect_uris) != 1:
                raise _AuthError("invalid_request", "redirect_uri is required", redirectable=False)
            redirect_uri = client.redirect_uris[0]
        elif redirect_uri not in client.redirect_uris:
            raise _AuthError("invalid_request", "redirect_uri is not registered for this client", redirectable=False)
        return client, redirect_uri, sent

    def check_request(params: dict[str, str]) -> None:
        """The rest of the request, once the redirect URI is trusted (errors go back to the client)."""
        if params.get("response_type") != "code":
            raise _AuthError("unsupported_response_type", "only response_type=code is supported")
        if SCOPE not in params.get("scope", "").split():
            raise _AuthError("invalid_scope", f"scope must include {SCOPE}")
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        if challenge is not None or method is not None:
            if method != "S256":
                raise _AuthError("invalid_request", "code_challenge_method must be S256")
            if not challenge or not _PKCE.match(challenge):
                raise _AuthError("invalid_request", "code_challenge is malformed")
        if len(params.get("nonce", "")) > MAX_NONCE:
            raise _AuthError("invalid_request", "nonce is too long")

    def issue_code(params: dict[str, str], client: RegisteredClient, redirect_uri: str, sent: bool,
                   citizen: Citizen, method: str) -> RedirectResponse:
        code = secrets.token_urlsafe(32)
        now = time.time()
        with store.lock:
            store.purge(now)
            store.codes[code] = _Grant(client.client_id, redirect_uri, sent, citizen.identifier, method,
                                       params.get("scope", SCOPE), params.get("code_challenge"),
                                       now + config.code_ttl, params.get("nonce") or None)
        out = {"code": code}
        if params.get("state"):
            out["state"] = params["state"]
        return _redirect(redirect_uri, out)

    def error_response(exc: _AuthError, params: dict[str, str], redirect_uri: str | None) -> Response:
        if exc.redirectable and redirect_uri:
            out = {"error": exc.error, "error_description": exc.description}
            if params.get("state"):
                out["state"] = params["state"]
            return _redirect(redirect_uri, out)
        return HTMLResponse(_page("Error", f"<p role='alert'><strong>{html.escape(exc.error)}</strong>: "
                                           f"{html.escape(exc.description)}</p>"), status_code=400,
                            headers=PAGE_HEADERS)

    @app.get("/o/oauth2/auth", response_model=None, responses=_PAGES)
    async def authorize(request: Request) -> Response:
        params = {k: v for k, v in request.query_params.items()}
        try:
            client, redirect_uri, sent = check_client(params)
        except _AuthError as exc:
            return error_response(exc, params, None)
        try:
            check_request(params)
            hint = params.get("login_hint")
            if hint and config.allow_login_hint:
                citizen = population.get(hint)
                if citizen is None:
                    raise _AuthError("access_denied", "no synthetic citizen has that identifier")
                method = params.get("login_method", "idcatmobil")
                if method not in METHODS:
                    raise _AuthError("invalid_request", "unknown login_method")
                return issue_code(params, client, redirect_uri, sent, citizen, method)
        except _AuthError as exc:
            return error_response(exc, params, redirect_uri)
        return HTMLResponse(_login_page(params, population, params.get("q", "")), headers=PAGE_HEADERS)

    @app.post("/o/oauth2/login", response_model=None, responses=_PAGES)
    async def login(request: Request) -> Response:
        form = await request.form()
        params = {k: str(v) for k, v in form.items()}
        try:
            client, redirect_uri, sent = check_client(params)
        except _AuthError as exc:
            return error_response(exc, params, None)
        try:
            check_request(params)
            if params.get("action") == "cancel":
                raise _AuthError("access_denied", "the person cancelled the login")
            citizen = population.get(params.get("identifier", ""))
            method = params.get("login_method", "")
            if citizen is None or method not in METHODS:
                return HTMLResponse(_login_page(params, population, params.get("q", ""),
                                                error="Choose a citizen and a login method."), status_code=400,
                                    headers=PAGE_HEADERS)
            return issue_code(params, client, redirect_uri, sent, citizen, method)
        except _AuthError as exc:
            return error_response(exc, params, redirect_uri)

    @app.post("/o/oauth2/token", response_model=None)
    async def token(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        client_id, secret, used_basic = form.get("client_id"), form.get("client_secret"), False
        authz = request.headers.get("authorization", "")
        if authz.lower().startswith("basic "):
            if secret is not None:
                return _oauth_error("invalid_request", "use one client authentication method, not two")
            try:
                decoded = base64.b64decode(authz[6:].strip(), validate=True).decode("utf-8")
                basic_id, _, secret = decoded.partition(":")
            except ValueError:  # not base64 (binascii.Error), not ASCII (a header's obs-text), not UTF-8
                return _oauth_error("invalid_client", "malformed Basic credentials", 401,
                                    {"WWW-Authenticate": 'Basic realm="idp"'})
            if client_id is not None and client_id != basic_id:
                return _oauth_error("invalid_request", "client_id differs from the authenticated client")
            client_id, used_basic = basic_id, True
        client = clients.get(client_id or "")
        if client is None or secret is None or not hmac.compare_digest(
                client.client_secret.encode("utf-8"), secret.encode("utf-8")):
            return _oauth_error("invalid_client", "client authentication failed", 401,
                                {"WWW-Authenticate": 'Basic realm="idp"'} if used_basic else None)
        if form.get("grant_type") != "authorization_code":
            return _oauth_error("unsupported_grant_type", "only authorization_code is supported")
        code = form.get("code", "")
        now = time.time()
        with store.lock:
            store.purge(now)
            grant = store.codes.pop(code, None)
            if grant is None:
                replay = store.used_codes.get(code)
                if replay is not None and replay[0] is not None:
                    store.tokens.pop(replay[0], None)  # a replayed code revokes what it bought
                return _oauth_error("invalid_grant", "the code is unknown, expired or already used")
            store.used_codes[code] = (None, now + config.token_ttl)
        if grant.client_id != client.client_id:
            return _oauth_error("invalid_grant", "the code was issued to another client")
        redirect_uri = form.get("redirect_uri")
        if (grant.redirect_uri_sent or redirect_uri is not None) and redirect_uri != grant.redirect_uri:
            return _oauth_error("invalid_grant", "redirect_uri does not match the authorization request")
        verifier = form.get("code_verifier")
        if grant.code_challenge is not None:
            if not verifier or not _PKCE.match(verifier):
                return _oauth_error("invalid_grant", "code_verifier is missing or malformed")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=")
            if not hmac.compare_digest(digest, grant.code_challenge.encode("ascii")):
                return _oauth_error("invalid_grant", "code_verifier does not match the code_challenge")
        elif verifier is not None:
            return _oauth_error("invalid_grant", "code_verifier sent but no code_challenge was")
        access_token = secrets.token_urlsafe(32)
        with store.lock:
            store.tokens[access_token] = _Token(grant.identifier, grant.method, client.client_id, now + config.token_ttl)
            store.used_codes[code] = (access_token, now + config.token_ttl)
        answer: dict[str, Any] = {"access_token": access_token, "token_type": "Bearer",
                                  "expires_in": config.token_ttl, "scope": grant.scope}
        citizen = population.get(grant.identifier)
        if signer is not None and "openid" in grant.scope.split() and citizen is not None:
            answer["id_token"] = signer.sign(id_token_claims(citizen, grant.method, issuer=issuer,
                                                             client_id=client.client_id, nonce=grant.nonce, now=now))
        return JSONResponse(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    @app.get("/serveis-rest/getUserInfo", response_model=None)
    async def user_info(request: Request) -> Response:
        access_token = request.query_params.get("AccessToken")
        authz = request.headers.get("authorization", "")
        if not access_token and authz.lower().startswith("bearer "):
            access_token = authz[7:].strip()
        with store.lock:
            entry = store.tokens.get(access_token or "")
        if entry is None or entry.expires_at < time.time():
            return JSONResponse({"status": "ko", "error": "invalid_token",
                                 "error_description": "the access token is unknown or expired"},
                                status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        citizen = population.get(entry.identifier)
        if citizen is None:  # the population is fixed for the process, so this cannot normally happen
            return JSONResponse({"status": "ko", "error": "invalid_token"}, status_code=401)
        return JSONResponse(user_info_document(citizen, entry.method), headers={"Cache-Control": "no-store"})

    if signer is not None:
        published: IdTokenSigner = signer

        @app.get("/.well-known/openid-configuration")
        async def discovery() -> JSONResponse:
            return JSONResponse({
                "issuer": issuer, "authorization_endpoint": f"{issuer}/o/oauth2/auth",
                "token_endpoint": f"{issuer}/o/oauth2/token", "jwks_uri": f"{issuer}/o/oauth2/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "scopes_supported": ["openid", SCOPE], "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "id_token_signing_alg_values_supported": [published.alg]})

        @app.get("/o/oauth2/jwks")
        async def jwks() -> JSONResponse:
            return JSONResponse(published.jwks())

    @app.get("/", response_class=HTMLResponse)
    async def home() -> HTMLResponse:
        return HTMLResponse(_page("Development identity provider",
                                  "<p>This service stands in for VÀLid during development. Relying parties start at "
                                  "<code>/o/oauth2/auth</code>.</p>"), headers=PAGE_HEADERS)

    @app.get("/healthz")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def user_info_document(citizen: Citizen, method: str) -> dict[str, Any]:
    """What ``getUserInfo`` returns for ``citizen`` logged in with ``method``."""
    reported = "idcatmobil" if method == "idcatmobil_low" else method
    return {
        "status": "ok",
        "identifier": citizen.identifier,
        "identifierType": citizen.identifier_type,
        "name": citizen.name,
        "surnames": citizen.surnames,
        "surname1": citizen.surname1,
        "surname2": citizen.surname2 or "",
        "email": citizen.email,
        "countryCode": "ES",
        "method": reported,
        "assuranceLevel": METHODS[method][1],
    }


# ----------------------------------------------------------------------------------- pages

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f6f6f6;color:#111}
.banner{background:#b00020;color:#fff;padding:1rem;font-size:1.4rem;font-weight:700;text-align:center}
main{max-width:46rem;margin:1rem auto;padding:1rem;background:#fff;border-radius:.5rem}
label{display:block;margin:.4rem 0}
fieldset{border:1px solid #ccc;margin:1rem 0}
button{font-size:1rem;padding:.5rem 1rem;margin:.3rem}
.error{color:#b00020;font-weight:700}
table{border-collapse:collapse;width:100%}td,th{padding:.2rem .4rem;border-bottom:1px solid #eee;text-align:left}
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)} — DEVELOPMENT IDENTITY PROVIDER</title><style>{_STYLE}</style></head>"
            f"<body><div class='banner' role='banner'>DEVELOPMENT IDENTITY PROVIDER — synthetic citizens only</div>"
            f"<main><h1>{html.escape(title)}</h1>{body}</main></body></html>")


_CARRIED = ("response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge",
            "code_challenge_method")


def _hidden(params: dict[str, str]) -> str:
    return "".join(f"<input type='hidden' name='{k}' value='{html.escape(params[k], quote=True)}'>"
                   for k in _CARRIED if k in params)


def _login_page(params: dict[str, str], population: Population, query: str, error: str = "") -> str:
    folded = _fold(query.strip())
    if folded:
        matches = [c for c in population.citizens
                   if folded in _fold(c.identifier) or folded in _fold(c.full_name)][:25]
    else:
        matches = population.citizens[:15]
    rows = []
    for i, c in enumerate(matches):
        checked = " checked" if i == 0 else ""
        rows.append(
            f"<tr><td><input type='radio' id='c{i}' name='identifier' value='{html.escape(c.identifier, quote=True)}'"
            f"{checked}></td><td><label for='c{i}'>{html.escape(c.full_name)}</label></td>"
            f"<td>{html.escape(c.identifier)}</td><td>{html.escape(', '.join(c.products) or '—')}</td></tr>")
    methods = "".join(
        f"<label><input type='radio' name='login_method' value='{m}'{' checked' if m == 'idcatmobil' else ''}> "
        f"{html.escape(label)} (assurance: {level})</label>" for m, (label, level) in METHODS.items())
    search = (f"<form method='get' action='/o/oauth2/auth' role='search'>{_hidden(params)}"
              f"<label for='q'>Search a synthetic citizen by name or NIF/NIE</label>"
              f"<input id='q' name='q' type='search' value='{html.escape(query, quote=True)}'>"
              f"<button type='submit'>Search</button></form>")
    table = ("<table><caption>Synthetic citizens</caption><thead><tr><th scope='col'>Pick</th><th scope='col'>Name</th>"
             "<th scope='col'>NIF/NIE</th><th scope='col'>Registries with data</th></tr></thead><tbody>"
             + ("".join(rows) or "<tr><td colspan='4'>No citizen matches.</td></tr>") + "</tbody></table>")
    form = (f"<form method='post' action='/o/oauth2/login'>{_hidden(params)}"
            f"<input type='hidden' name='q' value='{html.escape(query, quote=True)}'>"
            f"<fieldset><legend>Citizen</legend>{table}</fieldset>"
            f"<fieldset><legend>Login method</legend>{methods}</fieldset>"
            f"<button type='submit' name='action' value='login'>Log in as this citizen</button>"
            f"<button type='submit' name='action' value='cancel'>Cancel</button></form>")
    notice = f"<p class='error' role='alert'>{html.escape(error)}</p>" if error else ""
    client = html.escape(params.get("client_id", ""))
    return _page("Log in", f"{notice}<p>The application <strong>{client}</strong> asks who you are. Pick one of "
                           f"the generated citizens; nobody here is a real person.</p>{search}{form}")
