"""Shared route dependencies: app services and agency authentication."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from cryptography import x509 as cx509
from fastapi import Depends, Request
from sqlalchemy import Row
from sqlalchemy.sql import Executable

from service_kit.crypto import SecretBox, hash_api_key
from service_kit.db import Database
from service_kit.errors import APIError
from ssi.jose import Key
from verifier.agencies import SigningKeys, agency_for_api_key
from verifier.models import Agency
from verifier.request_objects import RequestObjectCache
from verifier.settings import VerifierSettings
from verifier.verification import PresentationVerifier
from verifier.worker import BackgroundWorker


@dataclass(frozen=True, slots=True)
class Services:
    """What routes need, built once per app (``app.state.services``)."""

    settings: VerifierSettings
    db: Database
    box: SecretBox
    keys: SigningKeys
    verifier: PresentationVerifier
    worker: BackgroundWorker
    #: The relying-party CA (key, certificate) when the verifier certifies agencies itself.
    rp_ca: tuple[Key, cx509.Certificate] | None = None
    #: Request objects signed for ``GET`` fetches, answered again until their transaction expires.
    request_objects: RequestObjectCache = field(default_factory=RequestObjectCache)

    @property
    def public_url(self) -> str:
        return self.settings.public_url


def services(request: Request) -> Services:
    return request.app.state.services


async def services_dependency(request: Request) -> Services:
    """:func:`services` as a dependency; ``async`` because FastAPI runs a plain ``def`` dependency in
    the thread pool, a thread hop on every request."""
    return request.app.state.services


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="cartera-verifier"'}


async def authenticated_row(request: Request, statement: Executable, params: dict[str, Any]) -> Row[Any]:
    """Authenticate the ``Authorization: Bearer`` API key and read what the route needs in the same
    query: ``statement`` joins ``api_keys`` on ``:key_hash`` to the route's data and returns no row
    for an unknown key (401 here, exactly as :func:`current_agency`)."""
    token = bearer_token(request)
    if token is None:
        raise APIError(401, "unauthorized", "an agency API key is needed (Authorization: Bearer)", UNAUTHORIZED)
    row = None
    if len(token) <= 200:
        async with services(request).db.statement_connection() as conn:
            row = (await conn.execute(statement, {**params, "key_hash": hash_api_key(token)})).first()
    if row is None:
        raise APIError(401, "unauthorized", "the API key is not valid", UNAUTHORIZED)
    return row


async def current_agency(request: Request) -> Agency:
    """The agency whose API key is in ``Authorization: Bearer``; 401 otherwise."""
    token = bearer_token(request)
    if token is None:
        raise APIError(401, "unauthorized", "an agency API key is needed (Authorization: Bearer)", UNAUTHORIZED)
    svc = services(request)
    async with svc.db.statement_connection() as conn:
        agency = await agency_for_api_key(conn, token)
    if agency is None:
        raise APIError(401, "unauthorized", "the API key is not valid", UNAUTHORIZED)
    return agency


#: Route parameter types: ``svc: Svc`` (the app's services), ``agency: AgencyDep`` (authenticated).
Svc = Annotated[Services, Depends(services_dependency)]
AgencyDep = Annotated[Agency, Depends(current_agency)]
