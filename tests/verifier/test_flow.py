"""End-to-end presentation flows over real HTTP with the test wallet, both response modes."""

from __future__ import annotations

import pytest

from tests.verifier.conftest import ISSUER, VCT_TAX, new_request, read_result


@pytest.mark.parametrize("mode", ["direct_post", "direct_post.jwt"])
@pytest.mark.parametrize("prefix", ["x509_san_dns", "x509_hash"])
def test_verified_presentation(http, verifier, wallet, creds, mode, prefix):
    created = new_request(http, verifier, response_mode=mode, client_id_prefix=prefix)
    assert created["uri"].startswith("openid4vp://?client_id=")
    assert created["haip_uri"].startswith("haip-vp://")
    assert created["client_id"].startswith(prefix + ":")
    assert read_result(http, verifier, created["id"])["status"] == "pending"
    request = wallet.fetch_request(created["uri"])
    assert request.trust == "trusted"
    assert request.response_mode == mode
    response = wallet.post_response(request, wallet.build_vp_token(request, [creds.tax()]))
    assert response.status_code == 200, response.text
    result = read_result(http, verifier, created["id"])
    assert result["status"] == "verified", result["errors"]
    assert result["claims"] == {"tax": {"nif": "12345678Z", "name": "Anna Puig", "complianceStatus": "POSITIVE"}}
    # Not asked for, so not reported even if disclosed.
    assert "purpose" not in result["claims"]["tax"]
    entry = result["credentials"]["tax"][0]
    assert entry["issuer"] == ISSUER and entry["vct"] == VCT_TAX and entry["valid_until"]
    assert result["errors"] == []


def test_request_uri_post_with_wallet_nonce(http, verifier, wallet, creds):
    created = new_request(http, verifier)
    request = wallet.fetch_request(created["uri"], method="post")
    assert request.wallet_nonce
    response = wallet.post_response(request, wallet.build_vp_token(request, [creds.tax()]))
    assert response.status_code == 200, response.text
    assert read_result(http, verifier, created["id"])["status"] == "verified"


def test_wallet_error_declines(http, verifier, wallet):
    created = new_request(http, verifier)
    request = wallet.fetch_request(created["uri"])
    response = wallet.post_response(request, error="access_denied")
    assert response.status_code == 200
    result = read_result(http, verifier, created["id"])
    assert result["status"] == "declined"
    assert result["errors"][0]["code"] == "wallet.access_denied"
    assert result["claims"] == {}
