"""Reaching the services of an app under test (routes are given theirs; tests ask the app)."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.testclient import TestClient

from kilnbase.app import KilnbaseApp
from kilnbase.services import Services


def services_of(client: TestClient) -> Services:
    app = client.app
    assert isinstance(app, KilnbaseApp)
    return app.services


def admin_headers(client: TestClient) -> dict[str, str]:
    """The project's API key (requests run as project_admin)."""
    return {"Authorization": f"Bearer {services_of(client).core.keys.ring.current('api_key')}"}


def anon_headers(client: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {services_of(client).core.keys.ring.current('anon_key')}"}


def user_headers(client: TestClient, user_id: str, email: str) -> dict[str, str]:
    """A signed access token for a user (no stored session: for data-plane tests)."""
    token = services_of(client).core.tokens.sign({"sub": user_id, "role": "authenticated", "email": email})
    return {"Authorization": f"Bearer {token}"}


def agent_headers(
    client: TestClient, admin: dict[str, str], scopes: list[str], name: str = "agent"
) -> dict[str, str]:
    """A new agent key with `scopes`, made by the admin, as request headers."""
    body = {"name": f"{name}-{secrets.token_hex(3)}", "scopes": scopes}
    created = client.post("/api/agents/keys", headers=admin, json=body)
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['key']}"}


def mcp_request(client: TestClient, headers: dict[str, str], method: str, params: dict[str, object]) -> Any:
    """One JSON-RPC request over `/mcp`, as an MCP client sends it; its `result`."""
    response = client.post(
        "/mcp",
        headers={
            **headers,
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
    )
    assert response.status_code == 200, response.text
    return response.json()["result"]


def mcp_call(client: TestClient, headers: dict[str, str], name: str, arguments: dict[str, object]) -> str:
    """A tool call over `/mcp`; the text of its result (the tool's JSON, or its error)."""
    result = mcp_request(client, headers, "tools/call", {"name": name, "arguments": arguments})
    text: str = result["content"][0]["text"]
    return text


def mcp_tool_names(client: TestClient, headers: dict[str, str]) -> set[str]:
    """The names of the tools `/mcp` lists for a credential."""
    return {tool["name"] for tool in mcp_request(client, headers, "tools/list", {})["tools"]}
