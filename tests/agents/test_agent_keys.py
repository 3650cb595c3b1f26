"""Agent keys over HTTP: created by a person with admin rights, shown once, scoped, revocable and expiring
within moments everywhere, refused writes in read-only mode, traded for short session tokens, and named in
the audit log."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers, anon_headers

Headers = dict[str, str]


@pytest.fixture(scope="module")
def admin(client: TestClient) -> Headers:
    return admin_headers(client)


def bearer(secret: str) -> Headers:
    return {"Authorization": f"Bearer {secret}"}


def new_key(client: TestClient, admin: Headers, scopes: list[str], **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/api/agents/keys",
        headers=admin,
        json={"name": f"agent-{secrets.token_hex(3)}", "scopes": scopes, **extra},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def table_body() -> dict[str, Any]:
    return {
        "tableName": f"agent_{secrets.token_hex(4)}",
        "columns": [{"columnName": "title", "type": "string", "isNullable": True}],
    }


def eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Other processes hear of a change by NOTIFY; poll until it shows (or give up and report False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_a_key_is_shown_once_and_listed_without_its_secret(client: TestClient, admin: Headers) -> None:
    created = new_key(client, admin, ["database:read"], expiresInHours=2)
    assert created["key"].startswith("kba_") and len(created["key"]) == 68
    assert created["prefix"] == created["key"][:12]
    assert created["scopes"] == ["database:read"]
    assert created["expiresAt"] is not None
    listed = client.get("/api/agents/keys", headers=admin).json()
    [mine] = [k for k in listed if k["id"] == created["id"]]
    assert "key" not in mine
    assert created["key"] not in str(listed)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scopes": ["database:admin"]}, "scopes"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "", "scopes": ["*:read"]}, "name"),
        ({"name": "x", "scopes": ["*:read"], "expiresInHours": 0}, "expiresInHours"),
        ({"name": "x", "scopes": ["*:read"], "role": "superuser"}, "role"),
    ],
)
def test_bad_key_requests_are_400_and_create_nothing(
    client: TestClient, admin: Headers, body: dict[str, Any], field: str
) -> None:
    before = len(client.get("/api/agents/keys", headers=admin).json())
    response = client.post("/api/agents/keys", headers=admin, json=body)
    assert response.status_code == 400
    assert field in response.json()["message"]
    assert len(client.get("/api/agents/keys", headers=admin).json()) == before


def test_only_admins_who_are_not_agents_manage_keys(client: TestClient, admin: Headers) -> None:
    assert client.post("/api/agents/keys", json={"name": "x"}).status_code == 401
    assert (
        client.post("/api/agents/keys", headers=anon_headers(client), json={"name": "x"}).status_code == 401
    )
    agent = new_key(client, admin, ["*:write"])
    refused = client.post(
        "/api/agents/keys", headers=bearer(agent["key"]), json={"name": "wider", "scopes": ["*:write"]}
    )
    assert refused.status_code == 403
    assert "Agent keys cannot manage" in refused.json()["message"]
    assert (
        client.put("/api/agents/settings", headers=bearer(agent["key"]), json={"readOnly": False}).status_code
        == 403
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/agents/keys", {}),
        ("POST", "/api/agents/keys", {"name": "wider", "scopes": "*:write"}),
        ("PUT", "/api/agents/settings", {"readOnly": "no"}),
    ],
    ids=["create-empty", "create-bad-scopes", "settings-bad-type"],
)
def test_an_agents_malformed_key_request_is_refused_not_sent_to_fix_its_body(
    client: TestClient, admin: Headers, method: str, path: str, body: dict[str, Any]
) -> None:
    """An agent key may not manage agent keys or the settings whatever it sends: its request is a 403 that
    says so, not a 400 listing fields to fix (which, fixed, would only meet the 403)."""
    agent = new_key(client, admin, ["*:write"])
    refused = client.request(method, path, headers=bearer(agent["key"]), json=body)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "FORBIDDEN"
    assert "Agent keys cannot manage" in refused.json()["message"]


def test_scopes_decide_what_a_key_reaches_on_rest(client: TestClient, admin: Headers) -> None:
    reader = new_key(client, admin, ["database:read"])
    writer = new_key(client, admin, ["database:write"])
    other = new_key(client, admin, ["auth:read"])

    assert client.get("/api/database/tables", headers=bearer(reader["key"])).status_code == 200
    refused = client.post("/api/database/tables", headers=bearer(reader["key"]), json=table_body())
    assert refused.status_code == 403
    assert refused.json()["message"] == "This agent key's scopes do not reach database:write."
    assert client.get("/api/database/tables", headers=bearer(other["key"])).status_code == 403

    body = table_body()
    assert client.post("/api/database/tables", headers=bearer(writer["key"]), json=body).status_code == 201
    assert body["tableName"] in client.get("/api/database/tables", headers=admin).json()


def test_what_anyone_may_read_an_agent_key_reads_whatever_its_scopes(
    client: TestClient, admin: Headers
) -> None:
    """The auth config a sign-in page reads and the JWKS answer everyone alike: a key without `auth` in its
    scopes reaches them (the same request without the key would), and still no other auth route."""
    reader = bearer(new_key(client, admin, ["database:read"])["key"])
    for path in ("/api/auth/public-config", "/.well-known/jwks.json", "/api/.well-known/jwks.json"):
        answered = client.get(path, headers=reader)
        assert answered.status_code == 200, answered.text
        assert answered.json() == client.get(path).json()
    assert client.get("/api/auth/users", headers=reader).status_code == 403
    assert (
        client.get(
            "/api/auth/profiles/" + "0" * 8 + "-0000-0000-0000-" + "0" * 12, headers=reader
        ).status_code
        == 403
    )


def test_owner_sql_needs_its_own_scope(client: TestClient, admin: Headers) -> None:
    writer = new_key(client, admin, ["*:write"])
    refused = client.post(
        "/api/database/advance/rawsql/unrestricted", headers=bearer(writer["key"]), json={"query": "select 1"}
    )
    assert refused.status_code == 403


def test_an_agents_actions_are_audited_under_its_key(client: TestClient, admin: Headers) -> None:
    writer = new_key(client, admin, ["database:write"])
    body = table_body()
    assert client.post("/api/database/tables", headers=bearer(writer["key"]), json=body).status_code == 201
    entries = client.get(
        "/api/logs/audits", headers=admin, params={"action": "CREATE_TABLE", "limit": 200}
    ).json()
    rows = entries["data"] if isinstance(entries, dict) else entries
    [entry] = [e for e in rows if e["details"].get("table") == body["tableName"]]
    assert entry["agentKey"] == writer["id"]
    assert entry["actor"] == f"agent:{writer['name']}"


def test_a_revoked_key_stops_working(client: TestClient, admin: Headers) -> None:
    agent = new_key(client, admin, ["*:read"])
    assert client.get("/api/database/tables", headers=bearer(agent["key"])).status_code == 200
    revoked = client.delete(f"/api/agents/keys/{agent['id']}", headers=admin)
    assert revoked.status_code == 200
    assert revoked.json()["revokedAt"] is not None
    assert client.get("/api/database/tables", headers=bearer(agent["key"])).status_code == 401
    assert (
        client.delete("/api/agents/keys/00000000-0000-0000-0000-000000000000", headers=admin).status_code
        == 404
    )


def test_an_expired_key_stops_working(client: TestClient, admin: Headers, database_url: str) -> None:
    agent = new_key(client, admin, ["*:read"], expiresInHours=1)
    assert client.get("/api/database/tables", headers=bearer(agent["key"])).status_code == 200
    with psycopg.connect(database_url, autocommit=True) as conn:  # as if an hour had passed
        conn.execute(
            "update system.agent_keys set expires_at = now() - interval '1 second' where id = %s",
            (agent["id"],),
        )
    assert eventually(
        lambda: client.get("/api/database/tables", headers=bearer(agent["key"])).status_code == 401
    )


@pytest.fixture
def read_only_mode(client: TestClient, admin: Headers) -> Iterator[None]:
    assert client.put("/api/agents/settings", headers=admin, json={"readOnly": True}).json() == {
        "readOnly": True
    }
    try:
        yield
    finally:
        client.put("/api/agents/settings", headers=admin, json={"readOnly": False})


def test_read_only_mode_refuses_every_agent_write(
    client: TestClient, admin: Headers, read_only_mode: None
) -> None:
    writer = new_key(client, admin, ["*:write"])
    assert client.get("/api/agents/settings", headers=admin).json() == {"readOnly": True}
    refused = client.post("/api/database/tables", headers=bearer(writer["key"]), json=table_body())
    assert refused.status_code == 403
    assert refused.json()["error"] == "AGENT_READ_ONLY"
    assert client.get("/api/database/tables", headers=bearer(writer["key"])).status_code == 200
    assert client.post("/api/database/tables", headers=admin, json=table_body()).status_code == 201


def test_a_session_token_carries_the_keys_scopes_and_dies_with_it(client: TestClient, admin: Headers) -> None:
    agent = new_key(client, admin, ["database:read"])
    minted = client.post("/api/agents/tokens", headers=bearer(agent["key"]), json={"expiresIn": 600})
    assert minted.status_code == 201, minted.text
    token = minted.json()["accessToken"]
    assert minted.json()["expiresIn"] == 600
    assert client.get("/api/database/tables", headers=bearer(token)).status_code == 200
    assert client.post("/api/database/tables", headers=bearer(token), json=table_body()).status_code == 403
    assert client.post("/api/agents/tokens", headers=admin, json={}).status_code == 403
    assert (
        client.post("/api/agents/tokens", headers=bearer(agent["key"]), json={"expiresIn": 7200}).status_code
        == 400
    )
    client.delete(f"/api/agents/keys/{agent['id']}", headers=admin)
    assert client.get("/api/database/tables", headers=bearer(token)).status_code == 401


def test_a_session_token_cannot_mint_another_and_outlive_itself(client: TestClient, admin: Headers) -> None:
    """The token is the short-lived credential an agent hands around; only the key itself mints one, so a
    token that leaks dies when it expires instead of renewing itself for as long as the key lives."""
    agent = new_key(client, admin, ["database:read"])
    minted = client.post("/api/agents/tokens", headers=bearer(agent["key"]), json={"expiresIn": 60})
    assert minted.status_code == 201, minted.text
    token = minted.json()["accessToken"]
    renewed = client.post("/api/agents/tokens", headers=bearer(token), json={"expiresIn": 3600})
    assert renewed.status_code == 403, renewed.text
    assert renewed.json()["error"] == "FORBIDDEN" and "accessToken" not in renewed.json()
    assert client.get("/api/database/tables", headers=bearer(token)).status_code == 200  # still its own self


def test_a_forged_or_unknown_key_is_401(client: TestClient) -> None:
    for secret in ("kba_" + "0" * 64, "kba_short", "kba_" + "g" * 64):
        assert client.get("/api/database/tables", headers=bearer(secret)).status_code == 401
