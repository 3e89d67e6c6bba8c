"""Metadata documents: OpenID4VCI Credential Issuer, OAuth 2.0 Authorization Server, JWT VC Issuer."""

from __future__ import annotations

from typing import Any

from ssi.jose import DEFAULT_ALGORITHMS
from ssi.oid4vci import AUTHORIZATION_CODE_GRANT, PRE_AUTHORIZED_CODE_GRANT

from .context import IssuerContext
from .registry import RegisteredType
from .tenancy import TenantRef

SD_JWT_VC_FORMAT = "dc+sd-jwt"


def credential_configuration(reg: RegisteredType, signing_algorithms: list[str]) -> dict[str, Any]:
    """One entry of ``credential_configurations_supported`` for a registered type; ``signing_algorithms``:
    those of the tenant's published keys (``keys.signing_algorithms``)."""
    ctype = reg.ctype
    display = []
    for entry in ctype.display:
        item: dict[str, Any] = {"name": entry["name"], "locale": entry["locale"]}
        if entry.get("description"):
            item["description"] = entry["description"]
        simple = (entry.get("rendering") or {}).get("simple") or {}
        for member in ("background_color", "text_color"):
            if simple.get(member):
                item[member] = simple[member]
        if isinstance(simple.get("logo"), dict) and simple["logo"].get("uri"):
            item["logo"] = {"uri": simple["logo"]["uri"], **({"alt_text": simple["logo"]["alt_text"]}
                                                              if simple["logo"].get("alt_text") else {})}
        display.append(item)
    claims = []
    for claim in ctype.claims:
        entry_claim: dict[str, Any] = {"path": list(claim.path)}
        if claim.mandatory:
            entry_claim["mandatory"] = True
        entry_claim["display"] = [{"name": d.get("label", ""), "locale": d["locale"]} for d in claim.display]
        claims.append(entry_claim)
    return {
        "format": SD_JWT_VC_FORMAT,
        "scope": reg.type_id,
        "vct": ctype.vct,
        "cryptographic_binding_methods_supported": ["jwk"],
        "credential_signing_alg_values_supported": list(signing_algorithms),
        "proof_types_supported": {"jwt": {"proof_signing_alg_values_supported": list(DEFAULT_ALGORITHMS)}},
        "credential_metadata": {"display": display, "claims": claims},
    }


def issuer_metadata(ctx: IssuerContext, tenant: TenantRef, types: dict[str, RegisteredType],
                    signing_algorithms: list[str]) -> dict[str, Any]:
    """``/.well-known/openid-credential-issuer/t/<slug>``: the issuer is its own authorization server.
    ``signing_algorithms``: those of the tenant's published keys, the active key's first."""
    base = ctx.issuer_url(tenant.slug)
    doc: dict[str, Any] = {
        "credential_issuer": base,
        "credential_endpoint": f"{base}/credential",
        "nonce_endpoint": f"{base}/nonce",
        "deferred_credential_endpoint": f"{base}/deferred_credential",
        "notification_endpoint": f"{base}/notification",
        "batch_credential_issuance": {"batch_size": ctx.settings.batch_size},
        "credential_configurations_supported": {
            tid: credential_configuration(reg, signing_algorithms) for tid, reg in sorted(types.items())},
    }
    display = tenant.display or [{"name": tenant.name, "locale": loc} for loc in ("ca", "es", "en")]
    doc["display"] = display
    return doc


def authorization_server_metadata(ctx: IssuerContext, tenant: TenantRef, types: dict[str, RegisteredType]) -> dict[str, Any]:
    """``/.well-known/oauth-authorization-server/t/<slug>`` (RFC 8414 with OpenID4VCI members)."""
    base = ctx.issuer_url(tenant.slug)
    if not ctx.settings.authorization_code_flow:
        # No wallet may use it (no registered client outside dev_mode): not advertised, so a wallet
        # takes the pre-authorized grant instead of meeting unauthorized_client.
        return {"issuer": base, "token_endpoint": f"{base}/token", "grant_types_supported": [PRE_AUTHORIZED_CODE_GRANT],
                "dpop_signing_alg_values_supported": list(DEFAULT_ALGORITHMS),
                "token_endpoint_auth_methods_supported": ["none"],
                "pre-authorized_grant_anonymous_access_supported": True}
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}/authorize",
        "token_endpoint": f"{base}/token",
        "pushed_authorization_request_endpoint": f"{base}/par",
        "require_pushed_authorization_requests": ctx.settings.require_par,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": [AUTHORIZATION_CODE_GRANT, PRE_AUTHORIZED_CODE_GRANT],
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": list(DEFAULT_ALGORITHMS),
        "token_endpoint_auth_methods_supported": ["none"],
        "pre-authorized_grant_anonymous_access_supported": True,
        "authorization_details_types_supported": ["openid_credential"],
        "scopes_supported": sorted(types),
        "authorization_response_iss_parameter_supported": True,
    }
