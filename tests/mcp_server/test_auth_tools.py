"""`update-auth-config`: what an agent may change of the auth settings over `/mcp`, under the rules of
`PUT /api/auth/config` (the same checks, the same audit entry, the same agent-key scope, read-only mode)."""

from __future__ import annotations

import httpx
import pytest

from tests.mcp_server.test_mcp_server import agent_key, call, error_of, http_client
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.anyio


async def test_an_admin_changes_only_the_settings_it_names_and_the_change_is_audited(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    async with http_client(live_server, live_keys["apiKey"]) as client:
        before = await call(client, "get-auth-config", {})
        try:
            changed = await call(
                client,
                "update-auth-config",
                {"passwordMinLength": 12, "allowedRedirectUrls": ["https://app.example.com/*"]},
            )
            after = await call(client, "get-auth-config", {})
            audit = await call(
                client, "search-audit-logs", {"action": "UPDATE_AUTH_CONFIG", "module": "AUTH", "limit": 200}
            )
        finally:  # (the server is shared: other tests sign up with its password rules)
            restored = {key: before[key] for key in ("passwordMinLength", "allowedRedirectUrls")}
            await call(client, "update-auth-config", restored)
    assert changed["passwordMinLength"] == 12 == after["passwordMinLength"]
    assert after["allowedRedirectUrls"] == ["https://app.example.com/*"]
    assert after["requireNumber"] == before["requireNumber"]
    # (other tests change other settings of the shared server through the same tool)
    mine = [
        entry
        for entry in audit["data"]
        if entry["details"].get("updatedFields") == ["allowedRedirectUrls", "passwordMinLength"]
    ]
    assert [entry["tool"] for entry in mine] == ["update-auth-config"]


async def test_a_change_the_route_refuses_is_refused_in_its_words(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """No SMTP server here: requiring verification would lock every new user out, as on REST."""
    async with http_client(live_server, live_keys["apiKey"]) as client:
        verification = await client.call_tool("update-auth-config", {"requireEmailVerification": True})
        redirect = await client.call_tool("update-auth-config", {"allowedRedirectUrls": ["javascript:x"]})
        nothing = await client.call_tool("update-auth-config", {})
        config = await call(client, "get-auth-config", {})
    assert error_of(verification)["error"] == "EMAIL_PROVIDER_NOT_CONFIGURED"
    assert "SMTP" in error_of(verification)["nextActions"]
    assert error_of(redirect)["error"] == "INVALID_INPUT"
    assert "allowedRedirectUrls" in error_of(redirect)["message"]
    assert error_of(nothing)["statusCode"] == 400
    assert "passwordMinLength" in error_of(nothing)["nextActions"]
    assert config["requireEmailVerification"] is False


async def test_an_agent_key_needs_auth_write_as_on_rest_and_read_only_mode_refuses_it(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    reader = agent_key(live_server, live_keys["apiKey"], ["auth:read"])
    writer = agent_key(live_server, live_keys["apiKey"], ["auth:write"])
    async with http_client(live_server, reader) as client:
        refused = await client.call_tool("update-auth-config", {"disableSignup": True})
    rest = httpx.put(
        f"{live_server.url}/api/auth/config",
        json={"disableSignup": True},
        headers={"Authorization": f"Bearer {reader}"},
    )
    settings = f"{live_server.url}/api/agents/settings"
    auth_config = f"{live_server.url}/api/auth/config"
    admin = {"Authorization": f"Bearer {live_keys['apiKey']}"}
    try:
        async with http_client(live_server, writer) as client:
            allowed = await call(client, "update-auth-config", {"disableSignup": True})
        assert httpx.put(settings, headers=admin, json={"readOnly": True}).status_code == 200
        try:
            async with http_client(live_server, writer) as client:
                read_only = await client.call_tool("update-auth-config", {"disableSignup": False})
        finally:
            assert httpx.put(settings, headers=admin, json={"readOnly": False}).status_code == 200
    finally:  # (the server is shared: other tests sign users up)
        reopened = httpx.put(auth_config, headers=admin, json={"disableSignup": False})
        assert reopened.status_code == 200, reopened.text
    assert rest.status_code == 403
    assert error_of(refused)["statusCode"] == 403 and "auth:write" in error_of(refused)["message"]
    assert allowed["disableSignup"] is True
    assert error_of(read_only)["error"] == "AGENT_READ_ONLY"
