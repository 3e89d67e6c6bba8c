"""Agency API: authorization and isolation between agencies, templates CRUD, QR codes, bad input."""

from __future__ import annotations

import time

import pytest
import zxingcpp
from PIL import Image

from ssi.status_list import StatusList
from tests.verifier.conftest import VCT_TAX, new_request, read_result

OTHER = "uni-admissions"


def test_result_needs_the_agency_key(http, verifier):
    created = new_request(http, verifier)
    url = f"{verifier.url}/v1/requests/{created['id']}"
    assert http.get(url).status_code == 401
    assert http.get(url, headers={"Authorization": "Bearer ck_wrong"}).status_code == 401
    assert http.get(url, headers={"Authorization": "Basic abc"}).status_code == 401
    assert http.get(url, headers=verifier.headers()).status_code == 200


def test_one_agency_cannot_see_anothers_requests(http, verifier, wallet, creds):
    created = new_request(http, verifier)
    wallet.present(created["uri"], [creds.tax()])
    base = f"{verifier.url}/v1/requests/{created['id']}"
    for suffix in ("", "/qr.png", "/qr.svg"):
        response = http.get(base + suffix, headers=verifier.headers(OTHER))
        assert response.status_code == 404, suffix
        assert "Anna" not in response.text
    exchange = http.post(base + "/exchange", json={"response_code": "x" * 20}, headers=verifier.headers(OTHER))
    assert exchange.status_code == 404
    # Templates are per agency too.
    assert http.get(f"{verifier.url}/v1/templates/grant-application", headers=verifier.headers(OTHER)).status_code == 404
    names = [t["name"] for t in http.get(f"{verifier.url}/v1/templates", headers=verifier.headers(OTHER)).json()]
    assert "job-application" in names and "grant-application" not in names
    other_request = http.post(f"{verifier.url}/v1/requests", json={"template": "grant-application"},
                              headers=verifier.headers(OTHER))
    assert other_request.status_code == 404


def test_events_need_the_watch_token(http, verifier):
    created = new_request(http, verifier)
    bad = f"{verifier.url}/v1/requests/{created['id']}/events?watch=wrong-token-value"
    assert http.get(bad).status_code == 404


def _template(name: str) -> dict:
    return {
        "name": name,
        "dcql_query": {"credentials": [{"id": "tax", "format": "dc+sd-jwt", "meta": {"vct_values": [VCT_TAX]},
                                        "claims": [{"path": ["nif"]}]}]},
        "purpose": {"en": "Testing", "ca": "Proves"},
        "trusted_issuers": [{"vct": VCT_TAX}],
        "retention_seconds": 0,
        "response_mode": "direct_post",
    }


def test_template_crud(http, verifier, wallet, creds):
    h = verifier.headers()
    url = f"{verifier.url}/v1/templates"
    name = f"crud-{time.time_ns()}"
    created = http.post(url, json=_template(name), headers=h)
    assert created.status_code == 201, created.text
    assert http.post(url, json=_template(name), headers=h).status_code == 409
    changed = _template(name) | {"purpose": {"es": "Pruebas"}}
    assert http.put(f"{url}/{name}", json=changed, headers=h).json()["purpose"] == {"es": "Pruebas"}
    assert http.put(f"{url}/{name}", json=_template("other-name"), headers=h).status_code == 400
    # Retention 0: the claims are gone as soon as the answer is recorded; the record stays.
    request = new_request(http, verifier, template=name)
    assert wallet.present(request["uri"], [creds.tax()]).status_code == 200
    result = read_result(http, verifier, request["id"])
    assert result["status"] == "verified"
    assert result["claims"] == {} and result["claims_deleted"] is True
    assert result["record"]["tax"][0]["vct"] == VCT_TAX
    assert http.delete(f"{url}/{name}", headers=h).status_code == 204
    assert http.get(f"{url}/{name}", headers=h).status_code == 404


@pytest.mark.parametrize("body", [
    {"name": "x"},
    _template("bad") | {"dcql_query": {"credentials": []}},
    _template("bad") | {"dcql_query": {"credentials": [{"id": "a", "format": "dc+sd-jwt", "claims": [{"path": []}]}]}},
    _template("bad") | {"purpose": {"fr": "non"}},
    _template("bad") | {"trusted_issuers": [{"vct": VCT_TAX, "metadata": True}]},
    _template("bad") | {"anchors_pem": ["not a certificate"]},
    _template("bad name!"),
    _template("bad") | {"unexpected": 1},
])
def test_bad_templates_are_refused(http, verifier, body):
    response = http.post(f"{verifier.url}/v1/templates", json=body, headers=verifier.headers())
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("content", [b"{", b"[]", b"null", b'{"template": 5}', b'{"template": "a", "dcql_query": {}}',
                                     b'{"dcql_query": {"credentials": []}}', b'{"template": "grant-application", '
                                     b'"webhook_url": "ftp://x"}', b'{"template": "grant-application", "expires_in": 1}'])
def test_bad_request_bodies(http, verifier, content):
    response = http.post(f"{verifier.url}/v1/requests", content=content,
                         headers={**verifier.headers(), "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert set(response.json()) >= {"error", "error_description"}


@pytest.mark.parametrize("extra", [{"purpose": {"en": "Something else"}}, {"retention_seconds": 0},
                                   {"anchors_pem": []}, {"trusted_issuers": [{"vct": VCT_TAX, "issuers": []}]}])
def test_ad_hoc_options_beside_a_template_are_refused_not_ignored(http, verifier, extra):
    # The template's values apply: the agency must not believe its own purpose or retention was used.
    response = http.post(f"{verifier.url}/v1/requests", json={"template": "grant-application", **extra},
                         headers=verifier.headers())
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert next(iter(extra)) in body["error_description"] and "template" in body["error_description"]


def test_redirect_uri_prefix_and_unknown_template(http, verifier):
    response = http.post(f"{verifier.url}/v1/requests", json={"template": "nope"}, headers=verifier.headers())
    assert response.status_code == 404


def read_qr_codes(path) -> list[str]:
    # QR codes only, as a wallet's scanner reads them: with every format on, zxing now and then finds a
    # linear barcode (once "6106") in the QR's own modules.
    return [d.text for d in zxingcpp.read_barcodes(Image.open(path), formats=zxingcpp.BarcodeFormat.QRCode)]


def test_qr_codes_decode_to_the_uri(http, verifier, tmp_path):
    created = new_request(http, verifier)
    png = http.get(created["qr_png_url"], headers=verifier.headers())
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    path = tmp_path / "qr.png"
    path.write_bytes(png.content)
    assert read_qr_codes(path) == [created["uri"]]
    haip = http.get(created["qr_png_url"] + "?scheme=haip-vp", headers=verifier.headers())
    path.write_bytes(haip.content)
    assert read_qr_codes(path) == [created["haip_uri"]]
    svg = http.get(created["qr_svg_url"], headers=verifier.headers())
    assert svg.status_code == 200 and svg.text.lstrip().startswith("<")
    assert http.get(created["qr_png_url"] + "?scheme=javascript", headers=verifier.headers()).status_code == 400


def test_whoami_and_openapi(http, verifier):
    me = http.get(f"{verifier.url}/v1/agency", headers=verifier.headers()).json()
    assert me["slug"] == "ajuntament-barcelona"
    assert me["client_ids"]["x509_san_dns"] == "x509_san_dns:127.0.0.1"
    schema = http.get(f"{verifier.url}/openapi.json").json()
    for path in ("/v1/templates", "/v1/requests", "/v1/requests/{tx_id}", "/v1/wallet/requests/{tx_id}",
                 "/v1/wallet/responses/{tx_id}"):
        assert path in schema["paths"]


def test_status_list_is_cached_for_its_ttl_and_fetched_again(http, verifier, wallet, creds, status_server):
    status_server.lists["ttl"] = StatusList(64, bits=2)
    status_server.ttls["ttl"] = 1
    before = status_server.fetches
    for _ in range(2):
        request = new_request(http, verifier)
        assert wallet.present(request["uri"], [creds.tax(status_list="ttl", status_idx=3)]).status_code == 200
    assert status_server.fetches == before + 1
    time.sleep(1.1)
    status_server.lists["ttl"].set(3, 1)
    request = new_request(http, verifier)
    response = wallet.present(request["uri"], [creds.tax(status_list="ttl", status_idx=3)])
    assert response.status_code == 400
    assert [e["code"] for e in response.json()["errors"]] == ["verifier.revoked"]
    assert status_server.fetches == before + 2
