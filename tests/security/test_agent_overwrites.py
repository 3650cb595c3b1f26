"""No door around approvals by overwriting: what an agent key cannot delete without a person, it cannot lose
by writing over it either (a stored file, a secret's value, every row of a table), and it cannot mint a
credential that spends the project's money."""

from __future__ import annotations

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
