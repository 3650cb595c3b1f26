"""Every section of `/api/metadata` follows one rule: an agent key sees it only with its feature group's read
scope, in the JSON, the markdown and the MCP tool alike, and its slice refuses the key without that scope.
The API key sees everything."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.testclient import TestClient

from tests.metadata.conftest import NewName
from tests.support.app import agent_headers, mcp_call

_HEADINGS = {
    "auth": "## Auth",
    "database": "## Database",
    "storage": "## Storage",
    "functions": "## Edge functions",
    "realtime": "## Realtime",
    "ai": "## AI gateway",
    "schedules": "## Schedules",
    "databaseWebhooks": "## Database webhooks",
    "advisor": "## Advisor",
    "kv": "## Key-value store",
    "memory": "## Agent memory",
    "messaging": "## Messaging",
    "payments": "## Payments (Stripe, Razorpay)",
}


def _bucket(client: TestClient, admin: dict[str, str], name: str) -> None:
    made = client.post("/api/storage/buckets", headers=admin, json={"bucketName": name, "isPublic": False})
    assert made.status_code == 201, made.text


def test_an_agent_with_one_sections_scope_sees_that_section_alone(
    client: TestClient, admin: dict[str, str], sql: Callable[[str], Any], new_name: NewName
) -> None:
    table, bucket = new_name("hidden_table"), new_name("shown-bucket").replace("_", "-")
    sql(f"create table {table} (id int primary key)")
    _bucket(client, admin, bucket)
    storage_only = agent_headers(client, admin, ["metadata:read", "storage:read"])

    body = client.get("/api/metadata", headers=storage_only).json()
    assert set(body) == {"storage", "version", "schemaFingerprint"}
    assert bucket in {b["name"] for b in body["storage"]["buckets"]}
    assert body["schemaFingerprint"] == client.get("/api/metadata", headers=admin).json()["schemaFingerprint"]

    markdown = client.get("/api/metadata?format=markdown", headers=storage_only).text
    lines = json.loads(mcp_call(client, storage_only, "get-backend-metadata", {}))["backend"]
    for text in (markdown, "\n".join(lines)):
        assert f"{bucket} (private)" in text and table not in text
        assert [h for h in _HEADINGS.values() if f"\n{h}" in text] == ["## Storage"]
        assert "- this key's scopes do not reach: auth (auth:read), database (database:read), " in text

    # The admin sees every section, this table and bucket included.
    full = client.get("/api/metadata?format=markdown", headers=admin).text
    assert all(f"\n{h}" in full for h in _HEADINGS.values()) and "## Not shown" not in full
    assert f"### {table}" in full


def test_a_slice_or_a_table_refuses_an_agent_without_its_sections_scope(
    client: TestClient, admin: dict[str, str], sql: Callable[[str], Any], new_name: NewName
) -> None:
    table = new_name("slice_table")
    sql(f"create table {table} (id int primary key)")
    storage_only = agent_headers(client, admin, ["metadata:read", "storage:read"])
    refused = {
        "auth": "auth:read",
        "database": "database:read",
        "functions": "functions:read",
        "realtime": "realtime:read",
        table: "database:read",
    }
    for path, scope in refused.items():
        response = client.get(f"/api/metadata/{path}", headers=storage_only)
        assert response.status_code == 403, (path, response.text)
        error = response.json()
        assert error["error"] == "FORBIDDEN" and scope in error["message"] and scope in error["nextActions"]
        assert table not in response.text or path == table
    assert client.get("/api/metadata/storage", headers=storage_only).status_code == 200
    refused_tool = mcp_call(client, storage_only, "describe-table", {"table": table})
    assert refused_tool.startswith("Error executing tool describe-table:") and "database:read" in refused_tool

    reader = agent_headers(client, admin, ["metadata:read", "database:read"])
    assert client.get(f"/api/metadata/{table}", headers=reader).status_code == 200
    assert client.get("/api/metadata/storage", headers=reader).status_code == 403


def test_no_agent_key_reads_the_projects_api_key(client: TestClient, admin: dict[str, str]) -> None:
    """The API key has every right with none of an agent key's limits (scopes, approvals, read-only mode):
    `metadata:read`, or any scope, must not hand it to an agent."""
    for scopes in (["metadata:read"], ["*:read", "*:write"]):
        agent = agent_headers(client, admin, scopes)
        refused = client.get("/api/metadata/api-key", headers=agent)
        assert refused.status_code == 403, refused.text
        assert "ik_" not in refused.text
        assert refused.json()["error"] == "FORBIDDEN"
    assert client.get("/api/metadata/api-key", headers=admin).json()["apiKey"].startswith("ik_")
