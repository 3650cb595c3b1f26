"""Each credential kind, sent over HTTP, gets the access it should: an admin-only endpoint as the probe."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from kilnbase.capability import Core
from tests.support.app import services_of

AUDITS = "/api/logs/audits"


@pytest.fixture(scope="module")
def core(client: TestClient) -> Core:
    return services_of(client).core


def test_admin_key_as_bearer_and_as_x_api_key(client: TestClient, core: Core) -> None:
    assert client.get(AUDITS, headers={"Authorization": f"Bearer {core.keys.api_key}"}).status_code == 200
    assert client.get(AUDITS, headers={"x-api-key": core.keys.api_key}).status_code == 200


def test_admin_jwt_is_admin(client: TestClient, core: Core) -> None:
    token = core.tokens.sign({"sub": "root", "role": "project_admin", "email": "admin"})
    assert client.get(AUDITS, headers={"Authorization": f"Bearer {token}"}).status_code == 200


# Callers who are no admin: tests/security/test_admin_refusals.py.


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer ik_" + "0" * 64},
        {"x-api-key": "ik_" + "0" * 64},
        {"Authorization": "Bearer anon_" + "0" * 64},
        {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJyb2xlIjoicHJvamVjdF9hZG1pbiJ9."},
        {"Authorization": "Token abc"},
    ],
)
def test_invalid_credentials_are_401_never_anon(client: TestClient, headers: dict[str, str]) -> None:
    response = client.get(AUDITS, headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert body["statusCode"] == 401 and body["nextActions"]
    for value in headers.values():
        assert value.split(" ")[-1] not in response.text


def test_tampered_and_expired_jwts_are_401(client: TestClient, core: Core) -> None:
    good = core.tokens.sign({"sub": "root", "role": "project_admin"})
    header, payload, signature = good.split(".")
    tampered = f"{header}.{payload}.{signature[:-3]}{'AAA' if not signature.endswith('AAA') else 'BBB'}"
    expired = core.tokens.sign({"sub": "root", "role": "project_admin"}, expires_in=-10)
    for token in (tampered, expired):
        assert client.get(AUDITS, headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_public_routes_answer_even_with_a_bad_credential(client: TestClient) -> None:
    response = client.get("/api/health", headers={"Authorization": "Bearer ik_" + "0" * 64})
    assert response.status_code == 200


def test_audit_listing_validates_its_parameters(client: TestClient, core: Core) -> None:
    headers = {"x-api-key": core.keys.api_key}
    for query in ("limit=0", "limit=abc", "offset=-1", "start_date=yesterday"):
        response = client.get(f"{AUDITS}?{query}", headers=headers)
        assert response.status_code == 400, query
        assert response.json()["error"] == "INVALID_INPUT"
    empty = client.get(f"{AUDITS}?limit=5&module=none", headers=headers)
    assert empty.json() == [] and empty.headers["content-range"] == "*/0"
