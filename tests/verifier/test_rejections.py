"""Rejected presentations, each with its expected code, over real HTTP against the running verifier.

Every case builds a presentation (or a whole response) the way an attacker or a broken wallet would,
posts it to the transaction's ``response_uri`` and checks the code in the wallet's answer and, when
the transaction was ended by the answer, in the agency's result.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import update

from service_kit.db import Database
from ssi import x509 as ssi_x509
from ssi.encoding import b64url_encode, b64url_json, json_dumps
from ssi.jose import Key, sign_jws
from ssi.jwe import encrypt_jwe
from ssi.sd_jwt import SDJWT, make_disclosure, sd_hash
from ssi.sd_jwt_vc import issue_sd_jwt_vc
from ssi.status_list import StatusList
from tests.verifier.conftest import ISSUER, OTHER_ISSUER, VCT_TAX, new_request, read_result
from verifier.models import Transaction


@dataclass
class Ctx:
    http: Any
    verifier: Any
    wallet: Any
    creds: Any
    pki: Any
    status_server: Any
    request: Any = None
    created: dict | None = None

    def open(self, mode: str = "direct_post", **body: Any) -> Any:
        self.created = new_request(self.http, self.verifier, response_mode=mode, **body)
        self.request = self.wallet.fetch_request(self.created["uri"])
        return self.request

    def kb(self, prefix: str, key: Key, *, aud: str | None = None, nonce: str | None = None, iat: int | None = None,
           typ: str = "kb+jwt", digest: str | None = None) -> str:
        payload = {"iat": int(time.time()) if iat is None else iat,
                   "aud": self.request.client_id if aud is None else aud,
                   "nonce": self.request.nonce if nonce is None else nonce,
                   "sd_hash": digest or sd_hash(prefix)}
        return sign_jws({"typ": typ}, payload, key)

    def manual(self, held: Any, disclosures: list[str] | None = None, issuer_jwt: str | None = None,
               kb_key: Key | None = None, with_kb: bool = True, **kb: Any) -> str:
        """``issuer_jwt~d1~...~kb`` with the given disclosures (default: all of the credential's)."""
        sd = SDJWT.parse(held.token)
        chosen = [d.encoded for d in sd.disclosures] if disclosures is None else disclosures
        prefix = (issuer_jwt or sd.issuer_jwt) + "~" + "".join(d + "~" for d in chosen)
        return prefix + (self.kb(prefix, kb_key or held.holder_key, **kb) if with_kb else "")

    def post(self, presentation: Any, qid: str = "tax") -> Any:
        return self.wallet.post_response(self.request, {qid: [presentation]})


@pytest.fixture
def ctx(http, verifier, wallet, creds, pki, status_server) -> Ctx:
    return Ctx(http, verifier, wallet, creds, pki, status_server)


def _b64(data: dict) -> str:
    return b64url_json(data)


def _split(token: str) -> tuple[str, str, str]:
    h, p, s = token.split("~", 1)[0].split(".")
    return h, p, s


# -- cases: each returns the response to check ----------------------------------------------------

def alg_none(c: Ctx) -> Any:
    c.open()
    held = c.creds.tax()
    _h, p, _s = _split(held.token)
    forged = _b64({"alg": "none", "typ": "dc+sd-jwt", "x5c": c.pki.issuer_x5c}) + "." + p + "."
    return c.post(c.manual(held, issuer_jwt=forged))


def hmac_with_public_key(c: Ctx) -> Any:
    c.open()
    held = c.creds.tax()
    _h, p, _s = _split(held.token)
    header = _b64({"alg": "HS256", "typ": "dc+sd-jwt", "x5c": c.pki.issuer_x5c})
    secret = c.pki.issuer_key.public_key.public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    sig = b64url_encode(hmac.new(secret, f"{header}.{p}".encode(), hashlib.sha256).digest())
    return c.post(c.manual(held, issuer_jwt=f"{header}.{p}.{sig}"))


def tampered_payload(c: Ctx) -> Any:
    c.open()
    held = c.creds.tax()
    h, p, s = _split(held.token)
    payload = SDJWT.parse(held.token).payload
    payload["exp"] = payload["exp"] + 10 * 365 * 86400
    return c.post(c.manual(held, issuer_jwt=f"{h}.{_b64(payload)}.{s}"))


def tampered_disclosure(c: Ctx) -> Any:
    c.open()
    held = c.creds.tax()
    sd = SDJWT.parse(held.token)
    chosen = [d.encoded for d in sd.disclosures]
    name_disclosure = next(d for d in sd.disclosures if d.name == "name")
    chosen[chosen.index(name_disclosure.encoded)] = make_disclosure("name", "Mallory", name_disclosure.salt).encoded
    return c.post(c.manual(held, disclosures=chosen))


def extra_disclosure(c: Ctx) -> Any:
    c.open()
    held = c.creds.tax()
    chosen = [d.encoded for d in SDJWT.parse(held.token).disclosures] + [make_disclosure("admin", True).encoded]
    return c.post(c.manual(held, disclosures=chosen))


def repeated_disclosure(c: Ctx) -> Any:
    c.open()
    held = c.creds.tax()
    chosen = [d.encoded for d in SDJWT.parse(held.token).disclosures]
    return c.post(c.manual(held, disclosures=chosen + chosen[:1]))


def wrong_nonce(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax(), nonce="another-nonce"))


def wrong_aud(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax(), aud="x509_san_dns:evil.example"))


def aud_without_prefix(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax(), aud=c.request.client_id.split(":", 1)[1]))


def stale_kb_iat(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax(), iat=int(time.time()) - 3600))


def future_kb_iat(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax(), iat=int(time.time()) + 3600))


def missing_kb(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax(), with_kb=False))


def kb_other_key(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax(), kb_key=Key.generate("ES256")))


def kb_wrong_typ(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax(), typ="JWT"))


def kb_wrong_sd_hash(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax(), digest=b64url_encode(hashlib.sha256(b"other").digest())))


def expired_credential(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax(exp=int(time.time()) - 3600)))


def not_yet_valid(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax(nbf=int(time.time()) + 3600)))


def revoked(c: Ctx) -> Any:
    c.open()
    # A list of its own, first fetched after the flip (lists are cached for their ttl).
    c.status_server.lists["revoked"] = StatusList(64, bits=2)
    held = c.creds.tax(status_list="revoked", status_idx=5)
    c.status_server.lists["revoked"].set(5, 1)
    return c.post(c.manual(held))


def suspended(c: Ctx) -> Any:
    c.open()
    # A list of its own, first fetched after the flip (lists are cached for their ttl).
    c.status_server.lists["suspended"] = StatusList(64, bits=2)
    held = c.creds.tax(status_list="suspended", status_idx=5)
    c.status_server.lists["suspended"].set(5, 2)
    return c.post(c.manual(held))


def status_undefined(c: Ctx) -> Any:
    c.open()
    # 3 in a 2-bit list: neither valid, revoked nor suspended, so not valid either.
    c.status_server.lists["undefined"] = StatusList(64, bits=2)
    held = c.creds.tax(status_list="undefined", status_idx=5)
    c.status_server.lists["undefined"].set(5, 3)
    return c.post(c.manual(held))


def status_list_unreachable(c: Ctx) -> Any:
    c.open()
    held = c.creds.tax(with_status=False)
    sd = SDJWT.parse(held.token)
    payload = dict(sd.payload)
    payload["status"] = {"status_list": {"idx": 1, "uri": c.status_server.uri("missing")}}
    # Re-issue with a status reference to a list that does not exist.
    token = issue_sd_jwt_vc({"nif": "12345678Z", "name": "Anna Puig", "complianceStatus": "POSITIVE"}, vct=VCT_TAX,
                            issuer=ISSUER, key=c.pki.issuer_key, holder_jwk=held.holder_key.public_jwk(),
                            disclosable=[("nif",), ("name",), ("complianceStatus",)], x5c=c.pki.issuer_x5c,
                            status=payload["status"], exp=int(time.time()) + 600)
    held.token = token
    return c.post(c.manual(held))


def _aki(certificate: Any) -> str:
    """The ``aki`` value naming ``certificate`` as an authority: its Subject Key Identifier."""
    return b64url_encode(certificate.extensions.get_extension_for_class(cx509.SubjectKeyIdentifier).value.digest)


def authority_query(aki: str) -> dict[str, Any]:
    return {"template": None, "purpose": {"en": "Tax check"}, "trusted_issuers": [{"vct": VCT_TAX}],
            "dcql_query": {"credentials": [{"id": "tax", "format": "dc+sd-jwt", "meta": {"vct_values": [VCT_TAX]},
                                            "claims": [{"path": ["nif"]}],
                                            "trusted_authorities": [{"type": "aki", "values": [aki]}]}]}}


def not_from_the_trusted_authority(c: Ctx) -> Any:
    # The issuer is trusted for the type, but the query asks for credentials under another CA.
    c.open(**authority_query(_aki(c.pki.rp_ca)))
    return c.post(c.manual(c.creds.tax()))


def untrusted_issuer(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax(key=c.pki.rogue_key, x5c=c.pki.rogue_x5c)))


def issuer_not_trusted_for_vct(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax(key=c.pki.other_issuer_key, x5c=c.pki.other_issuer_x5c, issuer=OTHER_ISSUER)))


def iss_not_in_certificate(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax(key=c.pki.other_issuer_key, x5c=c.pki.other_issuer_x5c, issuer=ISSUER)))


def another_issuer_on_the_same_host(c: Ctx) -> Any:
    """A key certified for another issuer on the trusted issuer's host (``/t/uni``), also naming the
    shared host as a DNS SAN: an ``https`` ``iss`` binds to a SAN URI only."""
    key = Key.generate("ES256")
    leaf = ssi_x509.issue_certificate(c.pki.issuer_ca_key, c.pki.issuer_ca, key, "Another tenant",
                                      san_uris=[f"{ISSUER}/t/uni"], san_dns=[urlsplit(ISSUER).hostname])
    c.open()
    return c.post(c.manual(c.creds.tax(key=key, x5c=ssi_x509.x5c_from_chain([leaf]), issuer=ISSUER)))


def signed_by_other_key(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax(key=c.pki.other_issuer_key, x5c=c.pki.issuer_x5c)))


def wrong_vct(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.diploma()))


def values_not_satisfied(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax(status="NEGATIVE")))


def missing_required_claim(c: Ctx) -> Any:
    c.open()
    held = c.creds.tax()
    chosen = [d.encoded for d in SDJWT.parse(held.token).disclosures if d.name != "name"]
    return c.post(c.manual(held, disclosures=chosen))


def unknown_query_id(c: Ctx) -> Any:
    c.open()
    return c.post(c.manual(c.creds.tax()), qid="other")


def presentation_not_a_string(c: Ctx) -> Any:
    c.open()
    return c.wallet.post_response(c.request, {"tax": [{"credential": "x"}]})


def no_cnf_credential(c: Ctx) -> Any:
    c.open()
    held = c.creds.tax()
    token = issue_sd_jwt_vc({"nif": "12345678Z", "name": "Anna Puig", "complianceStatus": "POSITIVE"}, vct=VCT_TAX,
                            issuer=ISSUER, key=c.pki.issuer_key, holder_jwk=None,
                            disclosable=[("nif",), ("name",), ("complianceStatus",)], x5c=c.pki.issuer_x5c,
                            exp=int(time.time()) + 600)
    held.token = token
    return c.post(c.manual(held))


def replayed_vp_token(c: Ctx) -> Any:
    c.open()
    presentation = c.manual(c.creds.tax())
    first = c.post(presentation)
    assert first.status_code == 200, first.text
    c.open()
    return c.post(presentation)


# Cases ending the transaction as rejected: (builder, expected code).
REJECTED: list[tuple[Callable[[Ctx], Any], str]] = [
    (alg_none, "jose.alg_not_allowed"),
    (hmac_with_public_key, "jose.alg_not_allowed"),
    (tampered_payload, "jose.bad_signature"),
    (tampered_disclosure, "sd_jwt.unreferenced_disclosure"),
    (extra_disclosure, "sd_jwt.unreferenced_disclosure"),
    (repeated_disclosure, "sd_jwt.duplicate_disclosure"),
    (wrong_nonce, "sd_jwt.kb_wrong_nonce"),
    (wrong_aud, "sd_jwt.kb_wrong_aud"),
    (aud_without_prefix, "sd_jwt.kb_wrong_aud"),
    (stale_kb_iat, "sd_jwt.kb_stale"),
    (future_kb_iat, "sd_jwt.kb_stale"),
    (missing_kb, "sd_jwt.kb_missing"),
    (kb_other_key, "sd_jwt.kb_bad_signature"),
    (kb_wrong_typ, "sd_jwt.kb_bad_typ"),
    (kb_wrong_sd_hash, "sd_jwt.kb_bad_sd_hash"),
    (expired_credential, "sd_jwt.expired"),
    (not_yet_valid, "sd_jwt.not_yet_valid"),
    (revoked, "verifier.revoked"),
    (suspended, "verifier.suspended"),
    (status_undefined, "verifier.status_invalid"),
    (status_list_unreachable, "verifier.status_unavailable"),
    (untrusted_issuer, "verifier.untrusted_issuer"),
    (not_from_the_trusted_authority, "dcql.untrusted_authority"),
    (issuer_not_trusted_for_vct, "verifier.issuer_not_trusted_for_vct"),
    (iss_not_in_certificate, "sd_jwt_vc.iss_san_mismatch"),
    (another_issuer_on_the_same_host, "sd_jwt_vc.iss_san_mismatch"),
    (signed_by_other_key, "jose.bad_signature"),
    (wrong_vct, "sd_jwt_vc.unexpected_vct"),
    (values_not_satisfied, "dcql.value_mismatch"),
    (missing_required_claim, "dcql.missing_claim"),
    (unknown_query_id, "dcql.unknown_query_id"),
    (presentation_not_a_string, "verifier.bad_presentation"),
    (no_cnf_credential, "sd_jwt.kb_no_cnf"),
    (replayed_vp_token, "verifier.replayed_vp_token"),
]


@pytest.mark.parametrize(("build", "code"), REJECTED, ids=[b.__name__ for b, _ in REJECTED])
def test_rejected_presentation(ctx, build, code, status_server):
    response = build(ctx)
    assert response.status_code == 400, response.text
    codes = [e["code"] for e in response.json()["errors"]]
    assert code in codes, codes
    result = read_result(ctx.http, ctx.verifier, ctx.created["id"])
    assert result["status"] == "rejected"
    assert code in [e["code"] for e in result["errors"]]
    assert result["claims"] == {}
    assert result["credentials"] == {}


# -- refusals before any check (the transaction stays open unless said otherwise) -----------------

def _code(response: Any) -> str:
    return response.json().get("code", response.json().get("error"))


def test_unknown_transaction(ctx):
    ctx.open()
    response = ctx.http.post(f"{ctx.verifier.url}/v1/wallet/responses/no-such-transaction",
                             data={"vp_token": "{}", "state": "x"})
    assert response.status_code == 404
    assert _code(response) == "verifier.unknown_transaction"
    assert ctx.http.get(f"{ctx.verifier.url}/v1/wallet/requests/no-such-transaction").status_code == 404


def _expire(verifier: Any, tx_id: str) -> None:
    async def run() -> None:
        db = Database(verifier.settings.database_url)
        try:
            async with db.session() as session:
                await session.execute(update(Transaction).where(Transaction.id == tx_id).values(
                    expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
        finally:
            await db.dispose()

    asyncio.run(run())


def test_expired_transaction_refuses_answers(ctx):
    ctx.open()
    presentation = ctx.manual(ctx.creds.tax())
    _expire(ctx.verifier, ctx.created["id"])
    response = ctx.post(presentation)
    assert response.status_code == 400
    assert _code(response) == "verifier.expired_transaction"
    assert read_result(ctx.http, ctx.verifier, ctx.created["id"])["status"] == "expired"
    assert ctx.http.get(ctx.created["request_uri"]).status_code == 400


def test_second_answer_to_same_transaction(ctx):
    ctx.open()
    held = ctx.creds.tax()
    assert ctx.post(ctx.manual(held)).status_code == 200
    response = ctx.post(ctx.manual(held))
    assert response.status_code == 400
    assert _code(response) == "verifier.already_answered"
    assert read_result(ctx.http, ctx.verifier, ctx.created["id"])["status"] == "verified"


@pytest.mark.parametrize("form", [
    {"vp_token": "not json", "state": "x"},
    {"vp_token": "[1, 2]"},
    {"state": "only-state"},
    {},
    {"vp_token": '{"tax": []}'},
    {"vp_token": '{"tax": ["a"], "tax": ["b"]}'},
], ids=["not-json", "array", "no-token", "empty", "empty-list", "duplicate-member"])
def test_malformed_forms(ctx, form):
    ctx.open()
    if "state" in form and form["state"] == "x":
        form = {**form, "state": ctx.request.state}
    response = ctx.http.post(ctx.request.response_uri, data=form)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert read_result(ctx.http, ctx.verifier, ctx.created["id"])["status"] == "pending"


def test_wrong_content_type_and_repeated_fields(ctx):
    ctx.open()
    as_json = ctx.http.post(ctx.request.response_uri, json={"vp_token": {}, "state": ctx.request.state})
    assert as_json.status_code == 400 and _code(as_json) == "verifier.bad_form"
    repeated = ctx.http.post(ctx.request.response_uri, content=b"state=a&state=b",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert repeated.status_code == 400 and _code(repeated) == "verifier.bad_form"
    garbage = ctx.http.post(ctx.request.response_uri, content=b"\xff\xfe%%%=&&=",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert garbage.status_code == 400


def test_state_mismatch(ctx):
    ctx.open()
    response = ctx.wallet.post_response(ctx.request, {"tax": [ctx.manual(ctx.creds.tax())]}, state="other-state")
    assert response.status_code == 400 and _code(response) == "verifier.state_mismatch"


def test_oversized_body(ctx):
    ctx.open()
    response = ctx.http.post(ctx.request.response_uri, data={"vp_token": "x" * 1_100_000, "state": "s"})
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"


def test_garbage_jwe(ctx):
    ctx.open("direct_post.jwt")
    response = ctx.http.post(ctx.request.response_uri, data={"response": "not.a.jwe.at.all"})
    assert response.status_code == 400 and _code(response) == "jose.bad_jwe"


def test_jwe_for_another_key(ctx):
    ctx.open("direct_post.jwt")
    other = Key.generate("ES256").public_jwk()
    other = {k: other[k] for k in ("kty", "crv", "x", "y")}
    response = ctx.wallet.post_response(ctx.request, {"tax": [ctx.manual(ctx.creds.tax())]}, recipient=other)
    assert response.status_code == 400 and _code(response) == "jose.jwe_decrypt_failed"


def test_jwe_with_disallowed_enc(ctx):
    ctx.open("direct_post.jwt")
    key = ctx.request.client_metadata.encryption_key()
    jwe = encrypt_jwe({"vp_token": {"tax": ["x"]}, "state": ctx.request.state}, key, enc="A256GCM")
    header, *rest = jwe.split(".")
    # Flip enc in the protected header: the tag no longer verifies, or the enc is not allowed.
    forged = _b64({"alg": "ECDH-ES", "enc": "A192GCM", "epk": {"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}})
    response = ctx.http.post(ctx.request.response_uri, data={"response": ".".join([forged, *rest])})
    assert response.status_code == 400 and _code(response).startswith("jose.")


def test_unencrypted_answer_to_encrypted_request(ctx):
    ctx.open("direct_post.jwt")
    response = ctx.http.post(ctx.request.response_uri, data={
        "vp_token": json_dumps({"tax": [ctx.manual(ctx.creds.tax())]}), "state": ctx.request.state})
    assert response.status_code == 400 and _code(response) == "message.unencrypted_response"


def test_encrypted_answer_to_plain_request(ctx):
    ctx.open("direct_post")
    response = ctx.http.post(ctx.request.response_uri, data={"response": "a.b.c.d.e"})
    assert response.status_code == 400 and _code(response) == "verifier.unexpected_jwe"


def test_a_credential_under_the_trusted_authority_is_accepted(ctx):
    ctx.open(**authority_query(_aki(ctx.pki.issuer_ca)))
    response = ctx.post(ctx.manual(ctx.creds.tax()))
    assert response.status_code == 200, response.text
    assert read_result(ctx.http, ctx.verifier, ctx.created["id"])["status"] == "verified"


@pytest.mark.parametrize(("authority", "detail"), [
    ({"type": "etsi_tl", "values": ["https://tl.example.eu/tl.xml"]}, "other than 'aki'"),
    ({"type": "openid_federation", "values": ["https://ta.example.eu"]}, "other than 'aki'"),
    ({"type": "aki", "values": ["not base64url!"]}, "dcql_query is not valid (encoding."),
])
def test_trusted_authorities_the_verifier_cannot_enforce_are_refused(ctx, authority, detail):
    body = authority_query("x")
    body["dcql_query"]["credentials"][0]["trusted_authorities"] = [authority]
    response = ctx.http.post(f"{ctx.verifier.url}/v1/requests", json=body, headers=ctx.verifier.headers())
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert detail in response.json()["error_description"]
