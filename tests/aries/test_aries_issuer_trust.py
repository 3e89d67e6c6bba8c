"""Which DIDs the verifier's Aries channel trusts: only those of a signed issuer document whose key the
template's trust policy accepts, as for that issuer's SD-JWT VCs (no agent runs here).

Before, the verifier trusted whatever DIDs an unsigned JSON document at ``<iss>/v1/aries/issuer``
listed: whoever controls that web host chose the keys, whatever the template's anchors or
``metadata: false`` said. Stand-in issuers serve documents here; the channel's checks run against
them with the real :class:`verifier.verification.PresentationVerifier`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from aries.client import BBS, ED25519
from credential_schemas import load_builtin_types
from service_kit.errors import APIError
from ssi import x509 as ssi_x509
from ssi.jose import Key, sign_jws
from tests.support.servers import serve
from verifier.aries_channel import VerifierAriesChannel, _trust_context
from verifier.settings import VerifierSettings
from verifier.verification import PresentationVerifier

VCT = load_builtin_types()["padro"].vct
TYP = "aries-issuer+jwt"


@dataclass
class StandIn:
    """An issuer's web host: what it answers at ``/v1/aries/issuer`` and in its JWT VC Issuer Metadata."""

    document: Any = None
    jwks: list[dict[str, Any]] = field(default_factory=list)
    accepts: list[str] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/aries/issuer")
        def document(request: Request) -> Response:
            self.accepts.append(request.headers.get("accept", ""))
            if isinstance(self.document, str):
                return Response(self.document, media_type="application/aries-issuer+jwt")
            return JSONResponse(self.document)

        @app.get("/.well-known/jwt-vc-issuer")
        def metadata() -> JSONResponse:
            return JSONResponse({"issuer": self.url, "jwks": {"keys": self.jwks}})

        return app

    url: str = ""


@dataclass
class Issuer:
    """A CA the template trusts and a leaf certificate for one issuer URL."""

    ca_key: Key
    ca_cert: Any
    key: Key
    chain: list[Any]

    @classmethod
    def under(cls, ca: tuple[Key, Any], san: str) -> Issuer:
        key = Key.generate("ES256")
        return cls(ca[0], ca[1], key, [ssi_x509.issue_certificate(ca[0], ca[1], key, "Issuer", san_uris=[san])])

    def sign(self, claims: dict[str, Any], *, typ: str = TYP, x5c: bool = True) -> str:
        header: dict[str, Any] = {"typ": typ, "kid": self.key.thumbprint()}
        if x5c:
            header["x5c"] = ssi_x509.x5c_from_chain(self.chain)
        return sign_jws(header, claims, self.key)


def claims_for(iss: str, *, dids: dict[str, str] | None = None, suite: str = ED25519,
               lifetime: int = 3600) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": iss, "iat": now, "exp": now + lifetime, "dids": dids or {suite: f"did:key:z{iss[-5:]}"},
            "suites": {VCT: suite}}


@pytest.fixture
def stand_ins() -> Iterator[tuple[StandIn, StandIn]]:
    a, b = StandIn(), StandIn()
    with serve(a.app()) as url_a, serve(b.app()) as url_b:
        a.url, b.url = url_a, url_b
        yield a, b


@pytest.fixture
def anchor() -> tuple[Key, Any]:
    return ssi_x509.create_ca("Anchor the template trusts")


def run(channel_call: Any, *, anchors_pem: list[str], rules: list[dict[str, Any]], tmp: Path) -> Any:
    """Run ``channel_call(channel, trust)`` with a channel wired as at start-up (no agent)."""
    settings = VerifierSettings(database_url=f"sqlite+aiosqlite:///{tmp / 'v.db'}", dev_mode=True,
                                master_key=secrets.token_hex(32), data_dir=tmp, public_url="http://127.0.0.1:9")

    async def go() -> Any:
        async with httpx.AsyncClient(timeout=5) as client:
            channel = VerifierAriesChannel(settings, None, None)
            channel.http = client
            channel.verifier = PresentationVerifier(
                client=client, anchors=[], kb_max_age=300, leeway=60, status_default_ttl=60, metadata_ttl=60,
                max_fetch_bytes=settings.max_fetch_bytes, allow_http_loopback=True)
            return await channel_call(channel, _trust_context(rules, anchors_pem))

    return asyncio.run(go())


def pem(cert: Any) -> str:
    return ssi_x509.cert_to_pem(cert).decode()


def documents(stand_ins: tuple[StandIn, ...], anchor_cert: Any, tmp: Path, *, metadata: bool = False) -> Any:
    urls = [s.url for s in stand_ins]
    return run(lambda channel, trust: channel.issuer_documents(urls, VCT, trust), anchors_pem=[pem(anchor_cert)],
               rules=[{"vct": VCT, "issuers": urls, "metadata": metadata}], tmp=tmp)


def test_a_document_signed_under_the_templates_anchor_for_that_issuer_is_trusted(
        stand_ins: tuple[StandIn, StandIn], anchor: tuple[Key, Any], tmp_path: Path) -> None:
    a, _ = stand_ins
    issuer = Issuer.under(anchor, a.url)
    a.document = issuer.sign(claims_for(a.url, dids={BBS: "did:key:zA"}))
    found = documents((a,), anchor[1], tmp_path)
    assert found.refused == {} and found.dids() == {"did:key:zA": a.url}
    assert found.verified[a.url]["suites"] == {VCT: ED25519}
    # The verifier asked for the signed form (the issuer keeps a plain JSON copy for people).
    assert a.accepts == ["application/aries-issuer+jwt"]


@pytest.mark.parametrize("case", ["unsigned_json", "wrong_typ", "other_anchor", "san_names_another_issuer",
                                  "replayed_from_another_issuer", "tampered", "expired",
                                  "kid_only_without_metadata_trust"])
def test_documents_the_policy_does_not_trust_contribute_no_did(
        stand_ins: tuple[StandIn, StandIn], anchor: tuple[Key, Any], tmp_path: Path, case: str) -> None:
    a, b = stand_ins
    good = Issuer.under(anchor, a.url)
    if case == "unsigned_json":  # what the verifier trusted before
        a.document, code = claims_for(a.url), "aries.issuer_document_unsigned"
    elif case == "wrong_typ":
        a.document, code = good.sign(claims_for(a.url), typ="JWT"), "aries.issuer_document_unsigned"
    elif case == "other_anchor":  # a valid chain, to a CA the template does not trust
        rogue = Issuer.under(ssi_x509.create_ca("Someone else's CA"), a.url)
        a.document, code = rogue.sign(claims_for(a.url)), "aries.issuer_document_untrusted"
    elif case == "san_names_another_issuer":  # the trusted CA, a certificate for another URL
        other = Issuer.under(anchor, b.url)
        a.document, code = other.sign(claims_for(a.url)), "aries.issuer_document_untrusted"
    elif case == "replayed_from_another_issuer":  # B's genuine document, served by A's host
        a.document, code = Issuer.under(anchor, b.url).sign(claims_for(b.url)), "aries.issuer_document_untrusted"
    elif case == "tampered":
        header, _, signature = good.sign(claims_for(a.url)).split(".")
        forged = good.sign(claims_for(a.url, dids={BBS: "did:key:zForged"})).split(".")[1]
        a.document, code = ".".join([header, forged, signature]), "aries.issuer_document_bad_signature"
    elif case == "expired":
        a.document, code = good.sign(claims_for(a.url, lifetime=-3600)), "aries.issuer_document_invalid"
    else:  # metadata: false trusts X.509 chains only, whatever the issuer's metadata lists
        a.jwks = [{**good.key.public_jwk(include_kid=False), "kid": good.key.thumbprint(), "use": "sig"}]
        a.document, code = good.sign(claims_for(a.url), x5c=False), "aries.issuer_document_untrusted"
    found = documents((a,), anchor[1], tmp_path)
    assert found.verified == {} and found.dids() == {}
    assert found.refused[a.url].code == code, found.refused[a.url].detail


def test_a_kid_only_document_is_trusted_through_metadata_where_the_rule_allows_it(
        stand_ins: tuple[StandIn, StandIn], anchor: tuple[Key, Any], tmp_path: Path) -> None:
    a, _ = stand_ins
    key = Key.generate("ES256")
    a.jwks = [{**key.public_jwk(include_kid=False), "kid": key.thumbprint(), "use": "sig"}]
    a.document = sign_jws({"typ": TYP, "kid": key.thumbprint()}, claims_for(a.url, dids={ED25519: "did:key:zM"}),
                          key)
    assert documents((a,), anchor[1], tmp_path, metadata=True).dids() == {"did:key:zM": a.url}
    assert documents((a,), anchor[1], tmp_path, metadata=False).refused[a.url].code == \
        "aries.issuer_document_untrusted"


def test_an_answer_from_no_trusted_did_names_the_refused_document(
        stand_ins: tuple[StandIn, StandIn], anchor: tuple[Key, Any], tmp_path: Path) -> None:
    from aries.errors import VerificationFailed

    a, _ = stand_ins
    a.document = claims_for(a.url)
    found = documents((a,), anchor[1], tmp_path)
    untrusted = VerificationFailed("untrusted_issuer", "the credential's issuer is not trusted for this type")
    assert found.explain(untrusted).code == "aries.issuer_document_unsigned"
    other = VerificationFailed("revoked", "revoked")
    assert found.explain(other) is other


def test_an_answer_from_no_trusted_did_while_an_issuer_is_unreachable_says_so(
        stand_ins: tuple[StandIn, StandIn], anchor: tuple[Key, Any], tmp_path: Path) -> None:
    """A trusted issuer whose document could not be fetched has DIDs the verifier does not know, not
    DIDs it refuses: the answer was reported as ``aries.untrusted_issuer`` (permanent), where OpenID4VP
    reports an issuer's unreachable metadata as ``sd_jwt_vc.metadata_unavailable``."""
    from aries.errors import VerificationFailed

    a, _ = stand_ins
    a.document = Issuer.under(anchor, a.url).sign(claims_for(a.url))
    gone = "http://127.0.0.1:9"
    found = run(lambda channel, trust: channel.issuer_documents([a.url, gone], VCT, trust),
                anchors_pem=[pem(anchor[1])], rules=[{"vct": VCT, "issuers": [a.url, gone], "metadata": False}],
                tmp=tmp_path)
    assert found.unreachable == [gone] and not found.refused
    untrusted = VerificationFailed("untrusted_issuer", "the credential's issuer is not trusted for this type")
    explained = found.explain(untrusted)
    assert explained.code == "aries.issuer_document_unavailable" and gone in explained.detail
    other = VerificationFailed("revoked", "revoked")
    assert found.explain(other) is other


def _suite(stand_ins: tuple[StandIn, ...], anchor_cert: Any, tmp: Path, extra: tuple[str, ...] = ()) -> Any:
    urls = [s.url for s in stand_ins] + list(extra)

    async def call(channel: VerifierAriesChannel, trust: Any) -> Any:
        try:
            return await channel.issuers_suite(urls, VCT, trust)
        except APIError as exc:
            return exc

    return run(call, anchors_pem=[pem(anchor_cert)], rules=[{"vct": VCT, "issuers": urls, "metadata": False}],
               tmp=tmp)


def test_the_suite_asked_is_read_from_verified_documents_only(
        stand_ins: tuple[StandIn, StandIn], anchor: tuple[Key, Any], tmp_path: Path) -> None:
    a, b = stand_ins
    a.document = Issuer.under(anchor, a.url).sign(claims_for(a.url, suite=ED25519))
    b.document = claims_for(b.url, suite=BBS)  # unsigned: its suite does not count
    assert _suite((a, b), anchor[1], tmp_path) == ED25519
    b.document = Issuer.under(anchor, b.url).sign(claims_for(b.url, suite=BBS))
    disagree = _suite((a, b), anchor[1], tmp_path)
    assert disagree.status_code == 400 and "pin one" in disagree.error_description
    # Every issuer answering a document we refuse: a 400 naming why, not a request nobody can answer.
    a.document, b.document = claims_for(a.url), claims_for(b.url)
    refused = _suite((a, b), anchor[1], tmp_path)
    assert refused.status_code == 400 and refused.extra["code"] == "aries.issuer_document_unsigned"
    # One may answer shortly: 503, as when none answers.
    unreachable = _suite((a,), anchor[1], tmp_path, extra=("http://127.0.0.1:9",))
    assert unreachable.status_code == 503
    # A verified document that publishes no suite for the vct: the default suite, not a refusal.
    silent = claims_for(a.url)
    silent["suites"] = {}
    a.document = Issuer.under(anchor, a.url).sign(silent)
    assert _suite((a,), anchor[1], tmp_path) == BBS
    # One trusted issuer unreachable, another answering: its suite.
    a.document = Issuer.under(anchor, a.url).sign(claims_for(a.url, suite=ED25519))
    assert _suite((a,), anchor[1], tmp_path, extra=("http://127.0.0.1:9",)) == ED25519
