"""RSA is accepted for outside OpenID providers' ID tokens only (``ssi.jose.ID_TOKEN_ALGORITHMS``).

Everything a holder or an issuer signs for Cartera keeps the EC/OKP allow-list: an RS256 key proof,
DPoP proof, KB-JWT or credential, each with a genuine signature by a 2048-bit key, is refused.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest
from joserfc import jws as joserfc_jws
from joserfc.jwk import RSAKey

from ssi.dpop import DPOP_TYP, verify_dpop_proof
from ssi.encoding import b64url_encode, json_dumps
from ssi.errors import SSIError
from ssi.jose import Key, sign_jws
from ssi.oid4vci import PROOF_JWT_TYP, verify_proof_jwt
from ssi.sd_jwt import verify_sd_jwt

AUD = "https://issuer.example.cat"
HOLDER = RSAKey.generate_key(2048)
HOLDER_JWK = HOLDER.as_dict(private=False)


def _rs256(header: dict[str, Any], payload: dict[str, Any], alg: str = "RS256") -> str:
    return joserfc_jws.serialize_compact({"alg": alg, **header}, json_dumps(payload).encode(), HOLDER,
                                         algorithms=[alg])


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_rsa_key_proof_is_refused(alg: str) -> None:
    proof = _rs256({"typ": PROOF_JWT_TYP, "jwk": HOLDER_JWK}, {"aud": AUD, "iat": int(time.time())}, alg)
    with pytest.raises(SSIError) as err:
        verify_proof_jwt(proof, audience=AUD)
    assert err.value.code == "message.proof_alg_not_allowed"


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_rsa_dpop_proof_is_refused(alg: str) -> None:
    proof = _rs256({"typ": DPOP_TYP, "jwk": HOLDER_JWK},
                   {"htm": "POST", "htu": f"{AUD}/token", "iat": int(time.time()), "jti": "j-1"}, alg)
    with pytest.raises(SSIError) as err:
        verify_dpop_proof(proof, method="POST", uri=f"{AUD}/token")
    assert err.value.code == "message.dpop_alg_not_allowed"


def test_rsa_kb_jwt_is_refused() -> None:
    issuer = Key.generate("ES256")
    now = int(time.time())
    prefix = sign_jws({"typ": "dc+sd-jwt"}, {"iss": AUD, "iat": now, "cnf": {"jwk": HOLDER_JWK}}, issuer) + "~"
    kb = _rs256({"typ": "kb+jwt"}, {"iat": now, "aud": "verifier", "nonce": "n-1", "sd_hash": b64url_encode(
        hashlib.sha256(prefix.encode()).digest())})
    with pytest.raises(SSIError) as err:
        verify_sd_jwt(prefix + kb, issuer_key=issuer.public(), require_kb=True, expected_aud="verifier",
                      expected_nonce="n-1")
    assert err.value.code == "jose.alg_not_allowed"


def test_rsa_signed_credential_is_refused() -> None:
    token = _rs256({"typ": "dc+sd-jwt"}, {"iss": AUD, "iat": int(time.time())}) + "~"
    with pytest.raises(SSIError) as err:
        verify_sd_jwt(token, issuer_key=Key.from_jwk(HOLDER_JWK))
    assert err.value.code == "jose.alg_not_allowed"
