"""The gateway's money controls are a person's: an agent key with `ai:write` (which it needs to call models at
all) cannot lift its own model budget or the project's caps, make a model cost nothing, open the policy, or
set where prompts go and whose account pays. It may still lower a limit. People keep every route as before."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.security.conftest import OwnerSql, assert_forbidden
from tests.support.app import mcp_call

LIMITS = "/api/ai/limits"


def agent_key(client: TestClient, admin: dict[str, str], name: str) -> tuple[dict[str, str], str]:
    """A new agent key with `ai:write`: its headers and its id."""
    body = {"name": f"{name}-{secrets.token_hex(3)}", "scopes": ["ai:write"]}
    created = client.post("/api/agents/keys", headers=admin, json=body)
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['key']}"}, created.json()["id"]


def limits_of(client: TestClient, admin: dict[str, str]) -> list[dict[str, Any]]:
    listed = client.get(LIMITS, headers=admin)
    assert listed.status_code == 200, listed.text
    rows: list[dict[str, Any]] = listed.json()
    return rows


def refused_outcomes(owner_sql: OwnerSql, action: str, agent: str) -> list[object]:
    rows = owner_sql(
        "select outcome from system.audit_logs where action = %s and actor like %s order by id",
        action,
        f"agent:{agent}-%",
    )
    return [row["outcome"] for row in rows]


def assert_refused(response: Any, words: str) -> None:
    assert_forbidden(response, words, "person")


@pytest.fixture
def budgets(client: TestClient, admin: dict[str, str]) -> None:
    """Each agent key's budget ($1 a day, 10 requests a minute) and the project's cap ($50 a month), set by
    a person."""
    for path, body in (
        (f"{LIMITS}/agent/*", {"usdPerDay": 1, "rpm": 10}),
        (f"{LIMITS}/project/*", {"usdPerMonth": 50}),
    ):
        assert client.put(path, headers=admin, json=body).status_code == 200


@pytest.mark.usefixtures("budgets")
def test_an_agent_cannot_lift_its_own_budget_or_the_project_cap(
    client: TestClient, admin: dict[str, str], owner_sql: OwnerSql
) -> None:
    agent, agent_id = agent_key(client, admin, "lifter")
    before = limits_of(client, admin)
    attempts = [
        client.put(f"{LIMITS}/agent/{agent_id}", headers=agent, json={"usdPerDay": 100, "rpm": 10}),
        client.put(f"{LIMITS}/agent/{agent_id}", headers=agent, json={}),  # its own row, with no limit
        client.put(f"{LIMITS}/agent/*", headers=agent, json={"usdPerDay": 1}),  # rpm gone
        client.put(f"{LIMITS}/project/*", headers=agent, json={"usdPerMonth": 500}),
    ]
    for refused in attempts:
        assert_refused(refused, "cannot raise or remove")
    assert "usdPerDay of agent/" in attempts[0].json()["message"]
    for removed in (
        client.delete(f"{LIMITS}/agent/*", headers=agent),
        client.delete(f"{LIMITS}/project/*", headers=agent),
    ):
        assert_refused(removed, "cannot raise or remove")
    tool = mcp_call(client, agent, "put-ai-limits", {"scope": "project", "subject": "*", "usdPerMonth": 5000})
    assert "cannot raise or remove" in tool
    assert limits_of(client, admin) == before
    assert refused_outcomes(owner_sql, "SET_AI_LIMITS", "lifter") == ["refused"] * 5
    assert refused_outcomes(owner_sql, "DELETE_AI_LIMITS", "lifter") == ["refused"] * 2


@pytest.mark.usefixtures("budgets")
def test_an_agent_may_lower_a_limit_and_a_person_may_raise_it(
    client: TestClient, admin: dict[str, str]
) -> None:
    """Lower is compared with what applies now: the agent's own row, else each agent key's budget."""
    agent, agent_id = agent_key(client, admin, "saver")
    lowered = client.put(f"{LIMITS}/agent/{agent_id}", headers=agent, json={"usdPerDay": 0.5, "rpm": 10})
    assert lowered.status_code == 200, lowered.text
    raised_back = client.put(f"{LIMITS}/agent/{agent_id}", headers=agent, json={"usdPerDay": 0.75, "rpm": 10})
    assert_refused(raised_back, "from 0.5 to 0.75")
    capped = client.put(f"{LIMITS}/project/*", headers=agent, json={"usdPerMonth": 20, "tpm": 1000})
    assert capped.status_code == 200, capped.text
    rows = {(row["scope"], row["subject"]): row for row in limits_of(client, admin)}
    assert rows[("agent", agent_id)]["usdPerDay"] == 0.5
    assert rows[("project", "*")]["usdPerMonth"] == 20 and rows[("project", "*")]["tpm"] == 1000

    by_person = client.put(f"{LIMITS}/project/*", headers=admin, json={"usdPerMonth": 500})
    assert by_person.status_code == 200, by_person.text
    assert client.delete(f"{LIMITS}/agent/{agent_id}", headers=admin).status_code == 200


def test_an_agent_cannot_change_prices_policy_credentials_or_providers(
    client: TestClient, admin: dict[str, str], owner_sql: OwnerSql
) -> None:
    agent, _ = agent_key(client, admin, "rewirer")
    price = {"inputPrice": 3, "outputPrice": 15}
    assert client.put("/api/ai/prices/house/model", headers=admin, json=price).status_code == 200
    assert (
        client.put(
            "/api/ai/providers/house", headers=admin, json={"baseUrl": "https://a.example/v1"}
        ).status_code
        == 200
    )
    policy = client.get("/api/ai/policy", headers=admin).json()
    prices, providers = (
        client.get(f"/api/ai/{what}", headers=admin).json() for what in ("prices", "providers")
    )

    key = "sk-or-v1-" + "a" * 40
    cases = [
        (client.put("/api/ai/prices/house/model", headers=agent, json={"inputPrice": 0}), "model prices"),
        (client.put("/api/ai/prices/other/model", headers=agent, json={"inputPrice": 0}), "model prices"),
        (client.delete("/api/ai/prices/house/model", headers=agent), "model prices"),
        (client.put("/api/ai/policy", headers=agent, json={"anonAccess": True}), "gateway policy"),
        (client.post("/api/ai/gateway/config", headers=agent, json={"apiKey": key}), "credentials"),
        (client.delete("/api/ai/gateway/config", headers=agent), "credentials"),
        (client.put("/api/ai/config", headers=agent, json={"managementKey": key}), "credentials"),
        (
            client.put("/api/ai/providers/house", headers=agent, json={"baseUrl": "https://evil.example/v1"}),
            "providers",
        ),
        (client.delete("/api/ai/providers/house", headers=agent), "providers"),
    ]
    for refused, words in cases:
        assert_refused(refused, words)
        assert key not in refused.text
    assert client.get("/api/ai/policy", headers=admin).json() == policy
    assert client.get("/api/ai/prices", headers=admin).json() == prices
    assert client.get("/api/ai/providers", headers=admin).json() == providers
    details = owner_sql(
        "select action, outcome, details::text as details from system.audit_logs where actor like %s",
        "agent:rewirer-%",
    )
    assert len(details) == len(cases) and {row["outcome"] for row in details} == {"refused"}
    assert all(key not in row["details"] for row in details)

    # People, and the agent's reads, as before.
    assert client.put("/api/ai/prices/house/model", headers=admin, json={"inputPrice": 1}).status_code == 200
    assert client.delete("/api/ai/providers/house", headers=admin).status_code == 200
    assert client.put("/api/ai/policy", headers=admin, json=policy).status_code == 200
    for what in ("prices", "providers", "policy", "limits"):
        assert client.get(f"/api/ai/{what}", headers=agent).status_code == 200
