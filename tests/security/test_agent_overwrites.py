"""No door around approvals by overwriting: what an agent key cannot delete without a person, it cannot lose
by writing over it either (a stored file, a secret's value, every row of a table), and it cannot mint a
credential that spends the project's money."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from starlette.testclient import TestClient

from tests.security.conftest import OwnerSql
from tests.support.app import agent_headers, mcp_call


def audited(owner_sql: OwnerSql, action: str, agent: str) -> list[dict[str, object]]:
    """The audit entries of `action` by agent keys named like `agent`."""
    return owner_sql(
        "select outcome, details from system.audit_logs where action = %s and actor like %s order by id",
        action,
        f"agent:{agent}-%",
    )


def test_an_agent_cannot_mint_a_gateway_key(
    client: TestClient, admin: dict[str, str], owner_sql: OwnerSql
) -> None:
    """A gateway key spends the project's money and outlives the agent key that made it, as a session token
    minted from a session token would; `ai:write` (which an agent needs to call models at all) does not
    reach it, over REST or `/mcp`. A person still mints keys, and the agent may list and revoke them."""
    agent = agent_headers(client, admin, ["ai:write"], "spender")
    refused = client.post("/api/ai/gateway/keys", headers=agent, json={"name": "mine"})
    assert refused.status_code == 403, refused.text
    body = refused.json()
    assert body["error"] == "FORBIDDEN" and "cannot create gateway keys" in body["message"]
    assert "person" in body["nextActions"]
    tool = mcp_call(client, agent, "create-gateway-key", {"name": "mine-too"})
    assert "cannot create gateway keys" in tool and "kbk_" not in tool
    names = [key["name"] for key in client.get("/api/ai/gateway/keys", headers=admin).json()]
    assert "mine" not in names and "mine-too" not in names
    refusals = audited(owner_sql, "CREATE_GATEWAY_KEY", "spender")
    assert [entry["outcome"] for entry in refusals] == ["refused", "refused"]

    made = client.post("/api/ai/gateway/keys", headers=admin, json={"name": "app"})
    assert made.status_code == 201, made.text  # a person's key, as before
    listed = client.get("/api/ai/gateway/keys", headers=agent)
    assert listed.status_code == 200 and "app" in [key["name"] for key in listed.json()]
    revoked = client.delete(f"/api/ai/gateway/keys/{made.json()['id']}", headers=agent)
    assert revoked.status_code == 200, revoked.text


def secret_value(client: TestClient, admin: dict[str, str], key: str) -> object:
    return client.get(f"/api/secrets/{key}", headers=admin).json().get("value")


def test_an_agent_cannot_overwrite_a_secrets_value(
    client: TestClient, admin: dict[str, str], owner_sql: OwnerSql
) -> None:
    """Switching a secret off is refused to an agent (deleting it waits for a person); writing a new value
    over it loses more, the old value for good, and is refused too, whether by `PUT` or by creating a
    deleted secret's key again (which would revive it with the new value). A new key still works."""
    agent = agent_headers(client, admin, ["secrets:write"], "rotator")
    key = f"KEEP_{secrets.token_hex(4).upper()}"
    assert client.post("/api/secrets", headers=admin, json={"key": key, "value": "v1"}).status_code == 201

    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    for change in ({"value": "v2"}, {"value": "v2", "expiresAt": later}):
        refused = client.put(f"/api/secrets/{key}", headers=agent, json=change)
        assert refused.status_code == 403, refused.text
        body = refused.json()
        assert body["error"] == "FORBIDDEN" and "overwrite a secret's value" in body["message"]
        assert "POST /api/secrets" in body["nextActions"]
    assert secret_value(client, admin, key) == "v1"
    listed = client.get("/api/secrets", headers=admin).json()["secrets"]
    assert [s["expiresAt"] for s in listed if s["key"] == key] == [None]  # nothing of the PUT ran

    assert client.delete(f"/api/secrets/{key}", headers=admin).status_code == 200  # a person's soft delete
    revived = client.post("/api/secrets", headers=agent, json={"key": key, "value": "v3"})
    assert revived.status_code == 403, revived.text
    assert "keeps its old value" in revived.json()["message"]
    tool = mcp_call(client, agent, "create-secret", {"key": key, "secretValue": "v4"})
    assert "keeps its old value" in tool
    switched_on = client.put(f"/api/secrets/{key}", headers=admin, json={"isActive": True})
    assert switched_on.status_code == 200, switched_on.text
    assert secret_value(client, admin, key) == "v1"  # the kept value, untouched

    refusals = audited(owner_sql, "UPDATE_SECRET", "rotator") + audited(owner_sql, "CREATE_SECRET", "rotator")
    assert [entry["outcome"] for entry in refusals] == ["refused"] * 4

    fresh = f"NEW_{secrets.token_hex(4).upper()}"
    made = client.post("/api/secrets", headers=agent, json={"key": fresh, "value": "v2"})
    assert made.status_code == 201, made.text  # the lossless way: the new value under a new key
    assert client.put(f"/api/secrets/{key}", headers=admin, json={"value": "v2"}).status_code == 200
    assert secret_value(client, admin, key) == "v2"  # a person overwrites, as before
