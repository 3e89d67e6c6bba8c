"""Agency routes authenticate before anything else, including where the key check and the route's
read share one query (creating a request from a template, reading a result)."""

from __future__ import annotations

import pytest

from tests.verifier.conftest import new_request

OTHER = "uni-admissions"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer ck_not_a_key"}, {"Authorization": "Basic x"},
                                     {"Authorization": "Bearer " + "k" * 300}])
@pytest.mark.parametrize("body", [b'{"template": 5}', b'{"template": "grant-application"}', b"[]", b'{"x": 1}'])
def test_create_request_is_401_before_any_body_error(http, verifier, headers, body):
    # (Bytes that are not JSON at all are refused by the framework with 400 before any route code.)
    response = http.post(f"{verifier.url}/v1/requests", content=body,
                         headers={**headers, "Content-Type": "application/json"})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_templates_and_results_of_another_agency_look_missing(http, verifier):
    # uni-admissions has no grant-application template; its key must not reach Barcelona's.
    response = http.post(f"{verifier.url}/v1/requests", json={"template": "grant-application"},
                         headers=verifier.headers(OTHER))
    assert response.status_code == 404
    created = new_request(http, verifier)
    url = f"{verifier.url}/v1/requests/{created['id']}"
    assert http.get(url, headers=verifier.headers(OTHER)).status_code == 404
    assert http.get(url, headers={"Authorization": "Bearer ck_wrong"}).status_code == 401
    assert http.get(url + "x", headers=verifier.headers()).status_code == 404
    assert http.get(url, headers=verifier.headers()).json()["status"] == "pending"
