"""Regenerate ``tests/aries/data/presentations.json``: REAL signed presentations for the policy tests.

Run ``.venv/bin/python tests/aries/make_presentations.py`` (needs ``make acapy``). The first half runs in
the project's environment: it builds the diplomas (:func:`aries.jsonld.build_credential`) and the proof
requests (:func:`aries.presentation.build_proof_request`) exactly as the issuer and the verifier do. The
second half runs in ``.venv-acapy`` (ACA-Py 0.12 in memory, no agent process): the issuer signs, an
honest holder answers through ACA-Py's own DIF handler (``create_vp``, what the citizen's agent runs),
and crafted holders build the attacks a reviewer reproduced. Each presentation is checked with ACA-Py's
verifier code (``verify_presentation`` and the DIF constraint check ``verify_received_pres``), and its
verdict is stored beside it: the attacks are ones the agent alone accepts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "data" / "presentations.json"
BASE = "https://issuer.example/t/ub"
EVIL_CONTEXT = "https://evil.example/v1/aries/contexts/university-diploma/1.0"
ISSUED_AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CLAIMS = {
    "name": "Anna Puig i Soler", "birthDate": "1998-04-12", "personalIdentifier": "12345678Z",
    "title": "Grau en Dret", "qualificationCode": "2500001", "degreeType": "bachelor", "eqfLevel": 6,
    "awardingBody": "Universitat de Barcelona", "faculty": "Facultat de Dret", "completionDate": "2020-06-30",
    "awardingDate": "2020-09-01", "countryOfAward": "ES", "registrationNumber": "2020/000123",
}


def inputs() -> dict:
    sys.path.insert(0, str(ROOT))
    from aries.client import BBS, ED25519
    from aries.jsonld import build_credential, contexts_document, status_entry
    from aries.presentation import build_proof_request
    from credential_schemas import load_builtin_types

    diploma = load_builtin_types()["university-diploma"]
    out: dict = {"base": BASE, "contexts": contexts_document([diploma], BASE), "cases": {}}
    for name, proof_type, suite in (("bbs", BBS, "bbs"), ("ed25519", ED25519, "ed25519")):
        vc = build_credential(diploma, CLAIMS, issuer_did="to-be-set", issuer_base_url=BASE, proof_type=proof_type,
                              issued_at=ISSUED_AT, credential_id=f"urn:uuid:00000000-0000-4000-8000-00000000000{len(name)}",
                              status=status_entry(f"{BASE}/v1/aries/status/L1/{suite}", 7))
        request = build_proof_request(diploma, ["title", "awardingBody"], domain="verifier.example",
                                      proof_type=proof_type)
        out["cases"][name] = {"vc": vc, "request": dataclasses.asdict(request)}
    return out


ACAPY_SIDE = r'''
import asyncio, copy, json, sys, uuid
from aries_cloudagent.core.in_memory import InMemoryProfile
from aries_cloudagent.did.did_key import DIDKey
from aries_cloudagent.protocols.present_proof.dif.pres_exch import PresentationDefinition
from aries_cloudagent.protocols.present_proof.dif.pres_exch_handler import DIFPresExchHandler
from aries_cloudagent.vc.ld_proofs import (BbsBlsSignature2020, BbsBlsSignatureProof2020, Ed25519Signature2018,
                                           Ed25519Signature2020, WalletKeyPair, CredentialIssuancePurpose)
from aries_cloudagent.vc.ld_proofs.document_downloader import StaticCacheJsonLdDownloader
from aries_cloudagent.vc.ld_proofs.document_loader import DocumentLoader
from aries_cloudagent.vc.vc_ld.issue import issue
from aries_cloudagent.vc.vc_ld.prove import derive_credential, create_presentation, sign_presentation
from aries_cloudagent.vc.vc_ld.verify import verify_presentation
from aries_cloudagent.wallet.base import BaseWallet
from aries_cloudagent.wallet.default_verification_key_strategy import (BaseVerificationKeyStrategy,
                                                                       DefaultVerificationKeyStrategy)
from aries_cloudagent.wallet.did_method import KEY, DIDMethods
from aries_cloudagent.wallet.key_type import BLS12381G2, ED25519, KeyTypes

data = json.load(sys.stdin)
contexts = dict(data["contexts"])
static = StaticCacheJsonLdDownloader()


def swapped_context(url):
    inline = copy.deepcopy(contexts[url]["@context"])
    inline["title"], inline["awardingBody"] = inline["awardingBody"], inline["title"]
    return inline


# What a hostile holder would host: the type's context with title and awardingBody swapped.
contexts[data["evil_context"]] = {"@context": swapped_context(next(u for u in contexts if "/contexts/university" in u))}


class Loader:
    """The agent's loader: did:key documents, the pre-cached contexts, ACA-Py's static W3C contexts."""

    def __call__(self, url, options=None):
        if url.startswith("did:"):
            return {"contentType": "application/ld+json", "contextUrl": None, "documentUrl": url,
                    "document": DIDKey.from_did(url.split("#")[0]).did_doc}
        if url in contexts:
            return {"contentType": "application/ld+json", "contextUrl": None, "documentUrl": url,
                    "document": contexts[url]}
        return static.load(url, options)


loader = Loader()


async def main():
    profile = InMemoryProfile.test_profile(bind={DIDMethods: DIDMethods(), KeyTypes: KeyTypes(),
                                                 DocumentLoader: loader,
                                                 BaseVerificationKeyStrategy: DefaultVerificationKeyStrategy()})
    out = {}
    for name, key_type, issue_suite, proof_type in (
            ("bbs", BLS12381G2, BbsBlsSignature2020, BbsBlsSignature2020.signature_type),
            ("ed25519", ED25519, Ed25519Signature2020, None)):
        case = data["cases"][name]
        async with profile.session() as s:
            wallet = s.inject(BaseWallet)
            iss = await wallet.create_local_did(method=KEY, key_type=key_type)
            hol = await wallet.create_local_did(method=KEY, key_type=key_type)
        vc = copy.deepcopy(case["vc"])
        vc["issuer"] = iss.did
        vc["credentialSubject"]["id"] = hol.did
        signed = await issue(credential=vc, suite=issue_suite(
            key_pair=WalletKeyPair(profile=profile, key_type=key_type, public_key_base58=iss.verkey),
            verification_method=DIDKey.from_did(iss.did).key_id), document_loader=loader,
            purpose=CredentialIssuancePurpose())
        request = case["request"]
        pd = PresentationDefinition.deserialize(request["presentation_definition"])
        challenge, domain = request["challenge"], request["domain"]
        # As the holder's agent answers (protocols/present_proof/v2_0/formats/dif/handler.py): BBS+ when
        # the definition limits disclosure, else the handler's default; ACA-Py 0.12 signs no domain.
        handler = DIFPresExchHandler(profile, proof_type=proof_type)
        handler.is_holder = True
        honest = await handler.create_vp(credentials=[handler.create_vcrecord(copy.deepcopy(signed))], pd=pd,
                                         challenge=challenge, domain=domain)
        presentations = {"honest": honest}

        if name == "bbs":
            holder_suite = lambda: BbsBlsSignature2020(
                key_pair=WalletKeyPair(profile=profile, key_type=BLS12381G2, public_key_base58=hol.verkey),
                verification_method=DIDKey.from_did(hol.did).key_id)

            async def present(cred, descriptor_map):
                vp = await create_presentation(credentials=[cred])
                vp["@context"].append("https://w3id.org/security/bbs/v1")
                vp["presentation_submission"] = {"id": str(uuid.uuid4()), "definition_id": pd.id,
                                                 "descriptor_map": descriptor_map}
                return await sign_presentation(presentation=vp, suite=holder_suite(), document_loader=loader,
                                               challenge=challenge)

            honest_map = honest["presentation_submission"]["descriptor_map"]
            # 1. The status hidden: credentialStatus left out of the derived credential, and an empty
            #    descriptor map so that ACA-Py checks no field constraint.
            frame = {"@context": signed["@context"], "type": signed["type"], "@explicit": True,
                     "issuer": {}, "issuanceDate": {}, "expirationDate": {},
                     "credentialSubject": {"@explicit": True, "id": {}, "title": {}, "awardingBody": {}}}
            no_status = await derive_credential(credential=copy.deepcopy(signed), reveal_document=frame,
                                                suite=BbsBlsSignatureProof2020(key_pair=WalletKeyPair(
                                                    profile=profile, key_type=BLS12381G2)),
                                                document_loader=loader)
            presentations["hidden_status"] = await present(no_status, [])
            # 2. The claims swapped by an inline @context: same N-Quads, so every signature verifies.
            derived = copy.deepcopy(honest["verifiableCredential"][0])
            derived["@context"][1] = swapped_context(derived["@context"][1])
            subject = derived["credentialSubject"]
            subject["title"], subject["awardingBody"] = subject["awardingBody"], subject["title"]
            presentations["swapped_inline"] = await present(derived, honest_map)
            # 3. The same swap through a context URL on another origin (the agent would fetch it).
            derived = copy.deepcopy(honest["verifiableCredential"][0])
            derived["@context"][1] = data["evil_context"]
            subject = derived["credentialSubject"]
            subject["title"], subject["awardingBody"] = subject["awardingBody"], subject["title"]
            presentations["swapped_url"] = await present(derived, honest_map)

        suites = [BbsBlsSignature2020(key_pair=WalletKeyPair(profile=profile, key_type=BLS12381G2)),
                  BbsBlsSignatureProof2020(key_pair=WalletKeyPair(profile=profile, key_type=BLS12381G2)),
                  Ed25519Signature2018(key_pair=WalletKeyPair(profile=profile, key_type=ED25519)),
                  Ed25519Signature2020(key_pair=WalletKeyPair(profile=profile, key_type=ED25519))]
        out[name] = {"issuer": iss.did, "holder": hol.did, "presentations": {}}
        for label, vp in presentations.items():
            # As the verifier's agent does (vc/vc_ld/manager.py): the challenge only, no domain.
            result = await verify_presentation(presentation=vp, suites=suites, document_loader=loader,
                                               challenge=challenge)
            try:
                await DIFPresExchHandler(profile).verify_received_pres(pd=pd, pres=vp)
                dif = "passed"
            except Exception as exc:
                dif = f"refused: {exc}"
            out[name]["presentations"][label] = {"acapy_verified": result.verified, "acapy_dif_check": dif,
                                                 "errors": [str(e) for e in result.errors or []], "vp": vp}
    json.dump(out, sys.stdout)


asyncio.run(main())
'''


def main() -> None:
    data = inputs()
    python = ROOT / ".venv-acapy" / "bin" / "python"
    answer = subprocess.run([str(python), "-c", ACAPY_SIDE], capture_output=True, text=True,
                            input=json.dumps({**data, "evil_context": EVIL_CONTEXT}))
    if answer.returncode:
        sys.exit(f"the ACA-Py side failed:\n{answer.stderr[-4000:]}")
    signed = json.loads(answer.stdout)
    fixture = {"about": "generated by tests/aries/make_presentations.py; do not edit by hand",
               "base": BASE, "evil_context": EVIL_CONTEXT, "issued_at": ISSUED_AT.isoformat(), "cases": {}}
    for name, case in data["cases"].items():
        fixture["cases"][name] = {"request": case["request"], **signed[name]}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    for name, case in fixture["cases"].items():
        for label, p in case["presentations"].items():
            print(f"{name}/{label}: ACA-Py signatures verified={p['acapy_verified']}, DIF check {p['acapy_dif_check']}")


if __name__ == "__main__":
    main()
