"""Provisioning for the composition root (``cartera run``) and tests: agencies, keys, templates.

:func:`provision_demo` is idempotent: an agency that exists keeps its key; a new API key is made each
run only when asked (the old ones stay valid), since only hashes are stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptography import x509 as cx509
from sqlalchemy import select

from service_kit.crypto import SecretBox, load_master_key
from service_kit.db import Database
from service_kit.migrations import run_migrations_async
from service_kit.pkcs11 import PKCS11Config, open_token
from ssi import x509 as ssi_x509
from ssi.jose import Key
from verifier.agencies import add_api_key, create_agency, verifier_host
from verifier.app import MIGRATIONS
from verifier.models import Agency, Template
from verifier.settings import VerifierSettings
from verifier.transactions import utcnow

#: The ``vct`` of the built-in credential types (``credential_schemas/types``), by short name.
DEMO_VCTS = {
    "tax": "https://types.cartera.example/tax-compliance/v1",
    "diploma": "https://types.cartera.example/university-diploma/v1",
    "padro": "https://types.cartera.example/padro/v1",
}


def demo_templates(vcts: dict[str, str], issuers: dict[str, list[str] | None]) -> dict[str, list[dict[str, Any]]]:
    """The demo templates per agency slug, for the given ``vct`` URLs (keys ``tax``, ``diploma``, ``padro``)."""

    def rule(kind: str) -> list[dict[str, Any]]:
        return [{"vct": vcts[kind], "issuers": issuers.get(kind), "metadata": False}]

    grant = {
        "name": "grant-application",
        "dcql_query": {"credentials": [{
            "id": "tax", "format": "dc+sd-jwt", "meta": {"vct_values": [vcts["tax"]]},
            "claims": [{"path": ["nif"]}, {"path": ["name"]}, {"path": ["complianceStatus"], "values": ["POSITIVE"]}],
        }]},
        "purpose": {"ca": "Sol·licitud de subvenció: estar al corrent de les obligacions tributàries",
                    "es": "Solicitud de subvención: estar al corriente de las obligaciones tributarias",
                    "en": "Grant application: being up to date with tax obligations"},
        "trusted_issuers": rule("tax"), "retention_seconds": 7 * 86_400, "response_mode": "direct_post.jwt",
    }
    residence = {
        "name": "residence",
        "dcql_query": {"credentials": [{
            "id": "padro", "format": "dc+sd-jwt", "meta": {"vct_values": [vcts["padro"]]},
            "claims": [{"path": ["municipality"]}, {"path": ["registeredSince"]}],
        }]},
        "purpose": {"ca": "Acreditar la residència al municipi", "es": "Acreditar la residencia en el municipio",
                    "en": "Proof of residence in the municipality"},
        "trusted_issuers": rule("padro"), "retention_seconds": 86_400, "response_mode": "direct_post.jwt",
    }
    job = {
        "name": "job-application",
        "dcql_query": {"credentials": [{
            "id": "diploma", "format": "dc+sd-jwt", "meta": {"vct_values": [vcts["diploma"]]},
            "claims": [{"path": ["title"]}, {"path": ["awardingBody"]}],
        }]},
        "purpose": {"ca": "Sol·licitud de feina: titulació universitària", "es": "Solicitud de empleo: titulación "
                    "universitaria", "en": "Job application: university degree"},
        "trusted_issuers": rule("diploma"), "retention_seconds": 30 * 86_400, "response_mode": "direct_post.jwt",
    }
    return {"ajuntament-barcelona": [grant, residence], "uni-admissions": [job, residence]}


DEMO_AGENCIES = {"ajuntament-barcelona": "Ajuntament de Barcelona", "uni-admissions": "University Admissions Office"}


async def provision_demo(settings: VerifierSettings, *, ca_key: Key, ca_cert: cx509.Certificate,
                         trusted_issuer_anchors: Sequence[cx509.Certificate] = (),
                         vcts: dict[str, str] | None = None, issuers: dict[str, list[str] | None] | None = None,
                         new_api_keys: bool = True) -> dict[str, Any]:
    """Create (idempotently) the two demo agencies with keys, certificates from ``ca_key``/``ca_cert``
    (the relying-party CA: the development CA in the embedded default) and their templates.

    ``vcts`` maps ``tax``/``diploma``/``padro`` to the issuer's ``vct`` URLs; ``issuers`` lists the
    accepted ``iss`` per kind. Outside ``dev_mode`` every kind needs its list (``ValueError``
    otherwise); in ``dev_mode`` a kind left out trusts any issuer chaining to the anchors, which one
    issuers CA certifying every tenant of an issuer service makes any of them (docs/verifier.md).
    ``trusted_issuer_anchors`` are written into each template's ``anchors_pem``. Returns
    ``{"url", "agencies": {slug: {"id", "name", "api_key", "webhook_secret", "templates"}}}``; an API
    key and webhook secret appear only for agencies created now, or (API key) with ``new_api_keys``.
    """
    missing = sorted(kind for kind in DEMO_VCTS if not (issuers or {}).get(kind))
    if missing and not settings.dev_mode:
        raise ValueError(f"outside dev_mode the demo templates need the issuers accepted for {', '.join(missing)}")
    await run_migrations_async(MIGRATIONS, settings.database_url)
    db = Database(settings.database_url)
    box = SecretBox(load_master_key(settings))
    config = PKCS11Config.from_settings(settings)
    token = open_token(config) if config is not None else None  # agency keys in the token when configured
    vcts = {**DEMO_VCTS, **(vcts or {})}
    anchors_pem = [ssi_x509.cert_to_pem(c).decode() for c in trusted_issuer_anchors]
    out: dict[str, Any] = {"url": settings.public_url, "desk_url": f"{settings.public_url}/desk", "agencies": {}}
    try:
        templates = demo_templates(vcts, issuers or {})
        for slug, name in DEMO_AGENCIES.items():
            entry: dict[str, Any] = {"name": name, "templates": []}
            async with db.session() as session:
                agency = await session.scalar(select(Agency).where(Agency.slug == slug))
                if agency is None:
                    created = await create_agency(session, box, slug=slug, name=name, ca_key=ca_key, ca_cert=ca_cert,
                                                  host=verifier_host(settings.public_url),
                                                  key_backend=settings.key_backend, hsm=token)
                    entry.update(id=created.id, api_key=created.api_key, webhook_secret=created.webhook_secret)
                    agency_id = created.id
                else:
                    agency_id = agency.id
                    entry["id"] = agency_id
                    if new_api_keys:
                        entry["api_key"] = await add_api_key(session, agency_id, label="provisioning")
            async with db.session() as session:
                for spec in templates[slug]:
                    existing = await session.scalar(select(Template).where(Template.agency_id == agency_id,
                                                                           Template.name == spec["name"]))
                    now = utcnow()
                    if existing is None:
                        import uuid

                        session.add(Template(id=str(uuid.uuid4()), agency_id=agency_id, anchors_pem=anchors_pem,
                                             created_at=now, updated_at=now, **spec))
                    else:
                        for field, value in spec.items():
                            setattr(existing, field, value)
                        existing.anchors_pem = anchors_pem
                        existing.updated_at = now
                    entry["templates"].append(spec["name"])
            out["agencies"][slug] = entry
    finally:
        if token is not None:
            token.close()
        await db.dispose()
    return out
