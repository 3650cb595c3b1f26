"""Agent keys reach the config by the scopes of its sections: reading needs `auth:read` / `storage:read` for
the sections shown or named; applying a change needs the changed section's write scope (as
`PUT /api/auth/config` and the bucket routes ask); a dry run needs only the read scopes. The MCP tools are
the same calls, refused the same way; read-only mode refuses an agent's change."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.config.conftest import apply, bucket_names, live
from tests.support.app import agent_headers, mcp_call, mcp_tool_names


def test_reading_shows_the_sections_the_key_may_read(client: TestClient, admin: dict[str, str]) -> None:
    storage_only = agent_headers(client, admin, ["storage:read"])
    assert set(live(client, storage_only)) == {"storage"}
    auth_only = agent_headers(client, admin, ["auth:write"])
    assert set(live(client, auth_only)) == {"auth"}
    assert set(live(client, agent_headers(client, admin, ["*:read"]))) == {"auth", "storage"}
    neither = agent_headers(client, admin, ["database:read"])
    refused = client.get("/api/config", headers=neither)
    assert refused.status_code == 403
    assert "auth:read" in refused.json()["message"]


def test_a_dry_run_needs_only_read_scopes(
    client: TestClient, admin: dict[str, str], name: Callable[[str], str]
) -> None:
    reader = agent_headers(client, admin, ["auth:read", "storage:read"])
    bucket = name("dry")
    file = {"storage": {"buckets": {bucket: {}}}, "auth": {"enable_signup": True}}
    answer = apply(client, reader, file, dry_run=True)
    assert answer.status_code == 200, answer.text
    assert answer.json()["applied"] is False
    refused = apply(client, reader, file)
    assert refused.status_code == 403
    assert refused.json()["message"] == "This agent key's scopes do not reach storage:write."
    assert bucket not in bucket_names(client, admin)


def test_each_changed_section_needs_its_write_scope(
    client: TestClient, admin: dict[str, str], name: Callable[[str], str]
) -> None:
    storage_writer = agent_headers(client, admin, ["storage:write", "auth:read"])
    bucket = name("agent")
    made = apply(client, storage_writer, {"storage": {"buckets": {bucket: {"public": True}}}})
    assert made.status_code == 200, made.text
    assert bucket in bucket_names(client, admin)

    signup = live(client, admin)["auth"]["enable_signup"]
    refused = apply(client, storage_writer, {"auth": {"enable_signup": not signup}})
    assert refused.status_code == 403
    assert "auth:write" in refused.json()["message"]
    assert live(client, admin)["auth"]["enable_signup"] is signup
    # A section it names but does not change needs only reading.
    assert apply(client, storage_writer, {"auth": {"enable_signup": signup}}).status_code == 200

    no_auth = agent_headers(client, admin, ["storage:write"])
    unread = apply(client, no_auth, {"auth": {"enable_signup": signup}}, dry_run=True)
    assert unread.status_code == 403
    assert "auth:read" in unread.json()["message"]


@pytest.fixture
def read_only_mode(client: TestClient, admin: dict[str, str]) -> Iterator[None]:
    assert client.put("/api/agents/settings", headers=admin, json={"readOnly": True}).status_code == 200
    try:
        yield
    finally:
        client.put("/api/agents/settings", headers=admin, json={"readOnly": False})


def test_read_only_mode_refuses_an_agent_s_change_not_its_dry_run(
    client: TestClient, admin: dict[str, str], name: Callable[[str], str], read_only_mode: None
) -> None:
    writer = agent_headers(client, admin, ["*:write"])
    file: dict[str, Any] = {"storage": {"buckets": {name("frozen"): {}}}}
    refused = apply(client, writer, file)
    assert refused.status_code == 403
    assert refused.json()["error"] == "AGENT_READ_ONLY"
    assert apply(client, writer, file, dry_run=True).status_code == 200
    assert apply(client, admin, file, dry_run=True).json()["plan"]["summary"]["add"] == 1


def test_mcp_tools_are_the_same_calls(
    client: TestClient, admin: dict[str, str], name: Callable[[str], str]
) -> None:
    """An agent key with the sections' scopes, and no `config` scope, sees and uses both tools."""
    agent = agent_headers(client, admin, ["auth:read", "storage:write"])
    shown = json.loads(mcp_call(client, agent, "get-config", {}))
    assert shown["config"] == live(client, admin)

    bucket = name("tool")
    file = {"storage": {"buckets": {bucket: {"public": True}}}}
    planned = json.loads(mcp_call(client, agent, "apply-config", {"config": file, "dry_run": True}))
    assert planned["applied"] is False and planned["plan"]["summary"]["add"] == 1
    assert bucket not in bucket_names(client, admin)
    applied = json.loads(mcp_call(client, agent, "apply-config", {"config": file}))
    assert applied["applied"] is True
    assert live(client, admin)["storage"]["buckets"][bucket] == {"public": True}

    signup = live(client, admin)["auth"]["enable_signup"]
    refused = mcp_call(client, agent, "apply-config", {"config": {"auth": {"enable_signup": not signup}}})
    assert "auth:write" in refused
    invalid = mcp_call(client, agent, "apply-config", {"config": {"auth": {"site_url": "https://x.example"}}})
    assert "config.auth.site_url: is not supported by Kilnbase" in invalid


def test_mcp_tools_are_shown_to_keys_that_read_a_section(client: TestClient, admin: dict[str, str]) -> None:
    for scopes, shown in ((["storage:read"], True), (["auth:write"], True), (["tool:list-tables"], False)):
        agent = agent_headers(client, admin, scopes)
        names = mcp_tool_names(client, agent)
        assert ({"get-config", "apply-config"} <= names) is shown, scopes
        assert not shown or "list-tables" not in names
    hidden = mcp_call(client, agent_headers(client, admin, ["database:read"]), "get-config", {})
    assert "do not reach" in hidden
