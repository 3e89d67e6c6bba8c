"""The issuer serves the Aries channel's JSON-LD contexts at the URL the credentials carry."""

from __future__ import annotations

import httpx

from aries.jsonld import context_url, generate_context, status_context_url
from credential_schemas import load_builtin_types

from .conftest import IssuerEnv


def test_type_context_is_served_at_the_versioned_url(issuer_env: IssuerEnv) -> None:
    issuer = issuer_env.issuer("uni-barcelona")
    metadata = httpx.get(f"{issuer}/types/university-diploma").json()
    answer = httpx.get(context_url(issuer, load_builtin_types()["university-diploma"]))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/ld+json")
    context = answer.json()["@context"]
    # Every claim of the type published by this issuer is a defined term of its context.
    for claim in metadata["claims"]:
        assert claim["path"][0] in context
    assert "UniversityDiplomaCredential" in context and "BitstringStatusListEntry" in context
    assert httpx.get(status_context_url(issuer)).json()["@context"]["BitstringStatusList"]


def test_unknown_types_and_versions_are_404_in_the_error_shape(issuer_env: IssuerEnv) -> None:
    issuer = issuer_env.issuer("uni-barcelona")
    for path in ("no-such-type/1.0", "university-diploma/9.9"):
        answer = httpx.get(f"{issuer}/v1/aries/contexts/{path}")
        assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    assert generate_context(load_builtin_types()["padro"])  # the generator accepts every built-in type
