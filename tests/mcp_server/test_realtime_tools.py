"""Realtime tools through `/mcp` on a real `kilnbase serve`: channels made, changed and deleted, and a
message published and read back."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.mcp_server.test_mcp_server import agent_key, call, error_of, http_client, tool_names
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.anyio


async def test_a_channel_made_published_to_and_deleted_through_tools(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    prefix = f"mcp{secrets.token_hex(4)}"
    async with http_client(live_server, live_keys["apiKey"]) as client:
        names = await tool_names(client)
        channel = await call(client, "create-channel", {"pattern": f"{prefix}:%", "description": "orders"})
        listed = await call(client, "list-channels", {})
        published = await call(
            client,
            "publish-message",
            {"channel": f"{prefix}:42", "event": "shipped", "payload": {"carrier": "post"}},
        )
        nowhere = await client.call_tool(
            "publish-message", {"channel": f"other{prefix}:1", "event": "e", "payload": {}}
        )
        messages = await call(client, "list-messages", {"channelId": channel["id"]})
        changed = await call(client, "update-channel", {"channelId": channel["id"], "enabled": False})
        disabled = await client.call_tool(
            "publish-message", {"channel": f"{prefix}:42", "event": "again", "payload": {}}
        )
        await call(client, "delete-channel", {"channelId": channel["id"]})
        missing = await client.call_tool("delete-channel", {"channelId": channel["id"]})
        bad = await client.call_tool("create-channel", {"pattern": "spaces are not allowed"})
    assert {"list-channels", "publish-message", "list-messages", "delete-channel"} <= names
    assert channel["pattern"] == f"{prefix}:%" and channel["enabled"] is True
    assert channel["id"] in [c["id"] for c in listed]
    assert published["event"] == "shipped"
    assert error_of(nowhere)["statusCode"] == 404
    [message] = messages
    assert message["id"] == published["id"]
    assert message["eventName"] == "shipped" and message["payload"] == {"carrier": "post"}
    assert message["senderType"] == "system"
    assert changed["enabled"] is False
    assert error_of(disabled)["statusCode"] == 404
    assert error_of(missing)["statusCode"] == 404
    assert error_of(bad)["statusCode"] == 400


async def test_an_agents_channel_delete_waits_and_the_anon_key_sees_none(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    agent = agent_key(live_server, live_keys["apiKey"], ["realtime:write"])
    async with http_client(live_server, agent) as client:
        channel = await call(client, "create-channel", {"pattern": f"mcp{secrets.token_hex(4)}"})
        held = await call(client, "delete-channel", {"channelId": channel["id"]})
        still = [c["id"] for c in await call(client, "list-channels", {})]
    assert held["status"] == "pending_approval"
    assert channel["id"] in still
    async with http_client(live_server, live_keys["anonKey"]) as client:
        assert not ({"list-channels", "create-channel", "publish-message"} & await tool_names(client))


async def test_messages_of_a_channel_that_does_not_exist_are_a_404(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """An empty list would read as "nothing was ever sent on it" to an agent that mistyped the id."""
    async with http_client(live_server, live_keys["apiKey"]) as client:
        channel = await call(client, "create-channel", {"pattern": f"quiet{secrets.token_hex(4)}"})
        quiet = await call(client, "list-messages", {"channelId": channel["id"]})
        missing = await client.call_tool(
            "list-messages", {"channelId": "00000000-0000-0000-0000-000000000000"}
        )
        # REST keeps InsForge's answer to a filter that matches nothing: an empty list.
        rest = httpx.get(
            f"{live_server.url}/api/realtime/messages",
            params={"channelId": "00000000-0000-0000-0000-000000000000"},
            headers={"Authorization": f"Bearer {live_keys['apiKey']}"},
        )
    assert quiet == []
    assert error_of(missing)["error"] == "REALTIME_CHANNEL_NOT_FOUND"
    assert (rest.status_code, rest.json()) == (200, [])
