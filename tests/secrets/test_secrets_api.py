"""`/api/secrets`: InsForge's routes over the real database, with encryption at rest and the audit trail."""

from __future__ import annotations

import secrets

import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers, agent_headers, anon_headers


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


def new_key() -> str:
    return f"TEST_{secrets.token_hex(4).upper()}"


def _row(client: TestClient, key: str) -> dict[str, object] | None:
    rows = client.get("/api/secrets", headers=admin_headers(client)).json()["secrets"]
    return next((row for row in rows if row["key"] == key), None)


def _audit_actions(client: TestClient, key: str) -> list[tuple[str, str]]:
    body = client.get(
        "/api/logs/audits", params={"module": "SECRETS", "limit": 1000}, headers=admin_headers(client)
    ).json()
    return [(row["action"], row["outcome"]) for row in body if row["details"].get("key") == key]


def test_create_get_list_update_delete(client: TestClient, admin: dict[str, str]) -> None:
    key = new_key()
    created = client.post("/api/secrets", json={"key": key, "value": "s3cret"}, headers=admin)
    assert created.status_code == 201
    assert created.json()["success"] is True
    assert created.json()["id"]

    assert client.get(f"/api/secrets/{key}", headers=admin).json() == {"key": key, "value": "s3cret"}
    listed = _row(client, key)
    assert listed is not None
    assert listed["isActive"] is True
    assert listed["isReserved"] is False
    assert listed["lastUsedAt"] is not None  # the read above counts as a use
    assert "value" not in listed

    updated = client.put(f"/api/secrets/{key}", json={"value": "rotated"}, headers=admin)
    assert updated.status_code == 200
    assert client.get(f"/api/secrets/{key}", headers=admin).json()["value"] == "rotated"

    assert client.delete(f"/api/secrets/{key}", headers=admin).status_code == 200
    assert client.get(f"/api/secrets/{key}", headers=admin).status_code == 404
    row = _row(client, key)
    assert row is not None
    assert row["isActive"] is False  # soft delete: the row stays

    revived = client.post("/api/secrets", json={"key": key, "value": "again"}, headers=admin)
    assert revived.status_code == 201
    assert client.get(f"/api/secrets/{key}", headers=admin).json()["value"] == "again"
    actions = _audit_actions(client, key)
    for action in ("CREATE_SECRET", "GET_SECRET", "UPDATE_SECRET", "DELETE_SECRET"):
        assert (action, "success") in actions


def test_value_is_encrypted_at_rest(client: TestClient, admin: dict[str, str]) -> None:
    key = new_key()
    client.post("/api/secrets", json={"key": key, "value": "plain-text-value"}, headers=admin)
    admin_sql = client.post(
        "/api/database/advance/rawsql/unrestricted",
        json={"query": "select value_ciphertext from system.secrets where key = $1", "params": [key]},
        headers=admin,
    )
    assert admin_sql.status_code == 200, admin_sql.text
    stored = admin_sql.json()["rows"][0]["value_ciphertext"]
    assert "plain-text-value" not in stored
    assert stored.startswith("v1:")


def test_duplicate_is_409_and_bad_input_400(client: TestClient, admin: dict[str, str]) -> None:
    key = new_key()
    assert client.post("/api/secrets", json={"key": key, "value": "a"}, headers=admin).status_code == 201
    duplicate = client.post("/api/secrets", json={"key": key, "value": "b"}, headers=admin)
    assert duplicate.status_code == 409
    assert duplicate.json()["error"] == "SECRET_ALREADY_EXISTS"
    for body in ({"key": "lower_case", "value": "x"}, {"key": key + "X"}, {"value": "x"}, {"key": 5}):
        response = client.post("/api/secrets", json=body, headers=admin)
        assert response.status_code == 400, body
        assert response.json()["statusCode"] == 400
    bad_expiry = client.post(
        "/api/secrets", json={"key": new_key(), "value": "x", "expiresAt": "soon"}, headers=admin
    )
    assert bad_expiry.status_code == 400
    assert client.put(f"/api/secrets/{key}", json={}, headers=admin).status_code == 400
    assert client.put(f"/api/secrets/{new_key()}", json={"value": "x"}, headers=admin).status_code == 404
    assert client.delete(f"/api/secrets/{new_key()}", headers=admin).status_code == 404


def test_reserved_secret_cannot_change_or_go(client: TestClient, admin: dict[str, str]) -> None:
    key = new_key()
    client.post("/api/secrets", json={"key": key, "value": "pinned", "isReserved": True}, headers=admin)
    put = client.put(f"/api/secrets/{key}", json={"value": "changed"}, headers=admin)
    assert put.status_code == 403
    assert put.json()["message"] == f"Cannot update reserved secret: {key}"
    assert client.delete(f"/api/secrets/{key}", headers=admin).status_code == 403
    assert client.get(f"/api/secrets/{key}", headers=admin).json()["value"] == "pinned"
    assert ("UPDATE_SECRET", "refused") in _audit_actions(client, key)


def test_platform_names_are_refused(client: TestClient, admin: dict[str, str]) -> None:
    for key in ("JWT_SECRET", "ANON_KEY", "INSFORGE_BASE_URL"):
        response = client.post("/api/secrets", json={"key": key, "value": "x"}, headers=admin)
        assert response.status_code == 403


def test_expired_secret_reads_as_absent(client: TestClient, admin: dict[str, str]) -> None:
    key = new_key()
    client.post(
        "/api/secrets", json={"key": key, "value": "old", "expiresAt": "2020-01-01T00:00:00Z"}, headers=admin
    )
    assert client.get(f"/api/secrets/{key}", headers=admin).status_code == 404
    row = _row(client, key)
    assert row is not None
    assert row["expiresAt"] == "2020-01-01T00:00:00.000Z"
    later = client.put(f"/api/secrets/{key}", json={"expiresAt": "2999-01-01T00:00:00Z"}, headers=admin)
    assert later.status_code == 200
    assert client.get(f"/api/secrets/{key}", headers=admin).json()["value"] == "old"


def test_needs_admin(client: TestClient) -> None:
    anon = anon_headers(client)
    assert client.get("/api/secrets", headers=anon).status_code == 401
    assert client.post("/api/secrets", json={"key": new_key(), "value": "x"}, headers=anon).status_code == 401
    assert client.get("/api/secrets").status_code == 401
    assert client.get("/api/secrets/ANY_KEY").status_code == 401
    assert client.post("/api/secrets", json={"key": new_key(), "value": "x"}).status_code == 401


def test_rotation_routes_still_match(client: TestClient, admin: dict[str, str]) -> None:
    # `/api/secrets/{key}` must not swallow the rotation endpoints.
    response = client.post("/api/secrets/anon-key/rotate", json={"gracePeriodHours": 1}, headers=admin)
    assert response.status_code == 200
    assert response.json()["anonKey"].startswith("anon_")


@pytest.mark.parametrize("path", ["/api/secrets/api-key/rotate", "/api/secrets/anon-key/rotate"])
def test_no_agent_key_rotates_the_project_keys(client: TestClient, admin: dict[str, str], path: str) -> None:
    """A rotation answers the new key: the API key passes every scope, approval and read-only mode, so an
    agent key, whatever its scopes, must not mint one (nor cut the apps off by rotating the anon key)."""
    agent = agent_headers(client, admin, ["*:write"])
    # Both keys, since each path rotates its own: comparing the API key alone proves nothing of the anon key.
    keys = ("/api/metadata/api-key", "/api/metadata/anon-key")
    before = [client.get(key, headers=admin).json() for key in keys]
    refused = client.post(path, json={"gracePeriodHours": 0}, headers=agent)
    assert refused.status_code == 403, refused.text
    assert "ik_" not in refused.text and "anon_" not in refused.text
    assert [client.get(key, headers=admin).json() for key in keys] == before
    audits = client.get("/api/logs/audits", params={"module": "SECRETS", "limit": 50}, headers=admin).json()
    assert any(row["action"].startswith("ROTATE_") and row["outcome"] == "refused" for row in audits)
