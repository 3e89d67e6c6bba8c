"""Shared pieces for the Via Oberta tests: development identities, requests, a served sandbox."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from sandbox.viaoberta_service import ViaObertaSandboxConfig, create_app
from tests.support.outbound import guarded_client
from tests.support.servers import serve
from viaoberta.client import ViaObertaClient
from viaoberta.credentials import SigningIdentity, generate_identity
from viaoberta.messages import QueryRequest


@functools.cache
def identity(name: str, key_type: str = "rsa") -> SigningIdentity:
    """One identity per name for the whole test session (RSA key generation is the slow part)."""
    return generate_identity(name, key_type=key_type)


def issuer() -> SigningIdentity:
    return identity("Cartera issuer (requesting body)")


def platform() -> SigningIdentity:
    return identity("Simulated Via Oberta platform")


def make_request(identifier: str, product: str, **overrides: Any) -> QueryRequest:
    request = QueryRequest(
        product=product, subject_document=identifier, subject_document_type="NIE" if identifier[0] in "XYZ" else "NIF",
        subject_name="Titular de prova", purpose="Emissió de credencial verificable", procedure="CARTERA-EMISSIO",
        consent="Si", requester_id="L01080193", requester_name="Ajuntament de Barcelona",
        official_name="Anna Martí Roca", official_nif="11111111H",
    )
    return replace(request, **overrides) if overrides else request


def sandbox_config(**overrides: Any) -> ViaObertaSandboxConfig:
    config = ViaObertaSandboxConfig(
        signing_key_pem=platform().key_pem, signing_cert_pem=platform().cert_pem,
        registered_certs_pem=[issuer().cert_pem], latency_seconds=1.0,
    )
    return replace(config, **overrides) if overrides else config


@contextlib.contextmanager
def running_sandbox(**overrides: Any) -> Iterator[str]:
    with serve(create_app(sandbox_config(**overrides)), ready_path="/healthz") as base_url:
        yield base_url


def make_client(base_url: str, **overrides: Any) -> ViaObertaClient:
    options: dict[str, Any] = dict(
        signing_key_pem=issuer().key_pem, signing_cert_pem=issuer().cert_pem,
        platform_certs_pem=[platform().cert_pem], timeout=5.0, retries=2, backoff_seconds=0.01,
    )
    options.update(overrides)
    if "http" not in options:
        options["http"] = guarded_client()
    return ViaObertaClient(base_url, **options)
