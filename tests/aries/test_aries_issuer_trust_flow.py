"""The Aries issuer document end to end, with real agents (the services and the citizen's wallet of
``tests/aries/test_services.py``): the issuer serves it signed, the verifier trusts the DIDs of the
signed one only, and a presentation whose issuer's host serves anything else is refused with a code
that says so.

``job-application`` trusts the ``uni-barcelona`` identifier with ``metadata: false`` and the issuer's
CA in ``anchors_pem``: trust by X.509 chain only, as the reviewer's agency kept it.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import issuer.routes.aries as issuer_routes
from ssi import x509 as ssi_x509
from ssi.jose import parse_jws

from . import test_services
from .harness import wait_for
from .test_services import World, _poll, _receive_diploma, _wallet

#: test_services' world (module scoped: this module gets its own services and agents).
world = test_services.world

JWT = "application/aries-issuer+jwt"


def _serve_instead(monkeypatch: pytest.MonkeyPatch, document: Callable[[Any], str]) -> None:
    """Make the issuer's host answer ``document(tenant)`` where the signed document was (whoever controls
    the host can)."""
    async def replaced(ctx: Any, tenant: Any, info: Any) -> str:
        return document(info)

    monkeypatch.setattr(issuer_routes, "_signed_issuer_document", replaced)


def _present(world: World, vc_id: str, *, before_answer: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """A request for the diploma, created while the issuer's document is sound; ``before_answer`` runs
    before the citizen's wallet answers; the verifier's result."""
    created = httpx.post(f"{world.verifier_url}/v1/aries/requests", headers=world.agency_headers(),
                         json={"template": "job-application"})
    assert created.status_code == 201, created.text
    body = created.json()
    invitation = httpx.get(body["short_url"], headers={"Accept": "application/json"}).json()
    before_answer()

    async def wallet_side() -> None:
        async with _wallet(world) as w:
            before = {r["pres_ex_id"] for r in await w.pres_records()}
            await w.receive_invitation(invitation)
            records = await wait_for(w.pres_records, lambda rs: any(
                r["state"] == "request-received" and r["pres_ex_id"] not in before for r in rs), timeout=30)
            record = next(r for r in records if r["pres_ex_id"] not in before)
            chosen = [m["record_id"] for m in await w.matching_credentials(record["pres_ex_id"])
                      if m.get("id") == vc_id]
            assert chosen, "the diploma does not match the verifier's request"
            descriptor = record["by_format"]["pres_request"]["dif"]["presentation_definition"]["input_descriptors"][0]
            await w.send_presentation(record["pres_ex_id"], {descriptor["id"]: chosen[:1]})

    asyncio.run(wallet_side())
    return _poll(lambda: httpx.get(body["status_url"], headers=world.agency_headers()).json(),
                 lambda r: r["status"] != "pending")


def test_the_issuer_serves_its_dids_signed_with_the_tenants_key(world: World) -> None:
    signed = httpx.get(f"{world.tenant_url}/v1/aries/issuer", headers={"Accept": JWT})
    assert signed.status_code == 200 and signed.headers["content-type"].startswith(JWT)
    jws = parse_jws(signed.text)
    claims = jws.json_payload()
    assert jws.header["typ"] == "aries-issuer+jwt" and jws.header["x5c"]
    leaf = ssi_x509.load_der_certificate(base64.b64decode(jws.header["x5c"][0]))
    assert ssi_x509.san_matches(leaf, world.tenant_url)
    assert claims["iss"] == world.tenant_url and claims["exp"] > claims["iat"]
    plain = httpx.get(f"{world.tenant_url}/v1/aries/issuer").json()  # for people: the same content
    assert plain == {"issuer": world.tenant_url, "dids": claims["dids"], "suites": claims["suites"]}


def test_a_diploma_whose_issuers_host_serves_an_unsigned_or_foreign_document_is_refused(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _, vc_id = _receive_diploma(world)
    assert _present(world, vc_id)["status"] == "verified"  # the sound document: the demo flow

    # The host serves the DIDs as plain JSON (what verifiers trusted before): not trusted any more.
    unsigned = _present(world, vc_id, before_answer=lambda: _serve_instead(
        monkeypatch, lambda info: info.model_dump_json()))
    assert unsigned["status"] == "rejected" and unsigned["claims"] == {}
    assert [e["code"] for e in unsigned["errors"]] == ["aries.issuer_document_unsigned"]

    # Another issuer's genuine document (same CA, its own identifier in the certificate) served there.
    monkeypatch.undo()
    foreign = httpx.get(f"{world.issuer_url}/t/aoc-tax/v1/aries/issuer", headers={"Accept": JWT}).text
    assert parse_jws(foreign).json_payload()["iss"] == f"{world.issuer_url}/t/aoc-tax"
    replayed = _present(world, vc_id, before_answer=lambda: _serve_instead(monkeypatch, lambda info: foreign))
    assert replayed["status"] == "rejected"
    assert [e["code"] for e in replayed["errors"]] == ["aries.issuer_document_untrusted"]

    # A new request while the host serves it: refused at once, with the same code.
    refused = httpx.post(f"{world.verifier_url}/v1/aries/requests", headers=world.agency_headers(),
                         json={"template": "job-application"})
    assert refused.status_code == 400 and refused.json()["code"] == "aries.issuer_document_untrusted"
    monkeypatch.undo()
    assert _present(world, vc_id)["status"] == "verified"
