"""A received credential is the credential issuer's own: its ``iss`` must be the issuer the wallet asked.

The ``x5c`` path binds ``iss`` to the certificate (a SAN URI), but any trusted issuer's certificate
passes it: an issuer handing on a credential another issuer signed would have it stored, shown and
recorded as its own. The wallet's own verification (``verify_received``) on a real wallet context
whose trust anchor is a test CA.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ssi.jose import Key
from ssi.sd_jwt_vc import issue_sd_jwt_vc
from ssi.x509 import cert_to_pem, create_ca, issue_certificate, x5c_from_chain
from tests.wallet_api.conftest import offline_wallet
from wallet_api.receiving import IssuanceError, verify_received

pytestmark = pytest.mark.anyio

ASKED = "https://issuer.example/t/uni"
OTHER = "https://issuer.example/t/tax"
VCT = "https://issuer.example/types/diploma"


def _credential(ca: tuple[Key, object], iss: str, holder: Key) -> str:
    ca_key, ca_cert = ca
    signer = Key.generate()
    leaf = issue_certificate(ca_key, ca_cert, signer, iss, san_uris=[iss])  # type: ignore[arg-type]
    return issue_sd_jwt_vc({"name": "x"}, vct=VCT, issuer=iss, key=signer, holder_jwk=holder.public_jwk(),
                           disclosable=[("name",)], x5c=x5c_from_chain([leaf]))


async def test_a_credential_signed_by_another_trusted_issuer_is_refused(tmp_path: Path) -> None:
    ca = create_ca("Test CA")
    anchor = tmp_path / "anchor.pem"
    anchor.write_bytes(cert_to_pem(ca[1]))
    holder = Key.generate()
    async with offline_wallet(tmp_path, issuer_anchor_files=[anchor], trust_issuer_metadata=False) as ctx:
        own = await verify_received(ctx, _credential(ca, ASKED, holder), credential_issuer=ASKED,
                                    expected_vct=VCT, holder_key=holder)
        with pytest.raises(IssuanceError) as refused:
            await verify_received(ctx, _credential(ca, OTHER, holder), credential_issuer=ASKED,
                                  expected_vct=VCT, holder_key=holder)
    assert own.issuer == ASKED
    assert refused.value.error == "invalid_credential" and "iss" in refused.value.detail
