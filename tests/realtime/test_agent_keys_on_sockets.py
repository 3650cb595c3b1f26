"""Agent keys on Socket.IO: a key acts as project_admin, which RLS does not narrow, so its scopes decide as
they do on the REST routes: subscribing needs `realtime:read`, publishing `realtime:write` and read-only mode
off; a key revoked while its socket is open loses its subscriptions within moments."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.realtime.conftest import RealtimeServer, connect, unique

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", autouse=True)
def channels(realtime_server: RealtimeServer) -> None:
    realtime_server.channel("ops:%")


def agent_key(server: RealtimeServer, scopes: list[str]) -> dict[str, Any]:
    body = {"name": f"agent-{secrets.token_hex(3)}", "scopes": scopes}
    created = httpx.post(f"{server.url}/api/agents/keys", headers=server.admin, json=body)
    assert created.status_code == 201, created.text
    key: dict[str, Any] = created.json()
    return key


def stored(server: RealtimeServer, channel: str) -> int:
    rows = server.sql(f"select count(*)::int as n from realtime.messages where channel_name = '{channel}'")
    count: int = rows["rows"][0]["n"]
    return count


@pytest.fixture
def read_only(realtime_server: RealtimeServer) -> Iterator[None]:
    url = f"{realtime_server.url}/api/agents/settings"
    assert httpx.put(url, headers=realtime_server.admin, json={"readOnly": True}).status_code == 200
    yield
    assert httpx.put(url, headers=realtime_server.admin, json={"readOnly": False}).status_code == 200


async def test_a_key_without_realtime_scopes_neither_subscribes_nor_publishes(
    realtime_server: RealtimeServer,
) -> None:
    key = agent_key(realtime_server, ["database:read"])
    client = await connect(realtime_server, {"token": key["key"]})
    channel = unique("ops")
    ack = await client.subscribe(channel)
    assert ack["ok"] is False
    assert ack["error"]["code"] == "FORBIDDEN"
    assert ack["error"]["message"] == "This agent key's scopes do not reach realtime:read."
    await client.sio.emit("realtime:publish", {"channel": channel, "event": "x", "payload": {}})
    assert (await client.next("realtime:error"))["code"] == "REALTIME_NOT_SUBSCRIBED"
    assert stored(realtime_server, channel) == 0
    await client.sio.disconnect()


async def test_a_read_scope_subscribes_but_does_not_publish(realtime_server: RealtimeServer) -> None:
    key = agent_key(realtime_server, ["realtime:read"])
    client = await connect(realtime_server, {"token": key["key"]})
    channel = unique("ops")
    assert (await client.subscribe(channel))["ok"] is True
    await client.sio.emit("realtime:publish", {"channel": channel, "event": "x", "payload": {}})
    error = await client.next("realtime:error")
    assert error == {
        "channel": channel,
        "code": "FORBIDDEN",
        "message": "This agent key's scopes do not reach realtime:write.",
    }
    assert stored(realtime_server, channel) == 0
    await client.sio.disconnect()


async def test_read_only_mode_stops_an_agents_publish(
    realtime_server: RealtimeServer, read_only: None
) -> None:
    key = agent_key(realtime_server, ["realtime:write"])
    client = await connect(realtime_server, {"token": key["key"]})
    channel = unique("ops")
    assert (await client.subscribe(channel))["ok"] is True
    await client.sio.emit("realtime:publish", {"channel": channel, "event": "x", "payload": {}})
    assert (await client.next("realtime:error"))["code"] == "AGENT_READ_ONLY"
    assert stored(realtime_server, channel) == 0
    await client.sio.disconnect()


async def test_a_write_scope_publishes_and_a_revoked_key_is_disconnected(
    realtime_server: RealtimeServer,
) -> None:
    key = agent_key(realtime_server, ["realtime:write"])
    client = await connect(realtime_server, {"token": key["key"]})
    channel = unique("ops")
    assert (await client.subscribe(channel))["ok"] is True
    await client.sio.emit("realtime:publish", {"channel": channel, "event": "note", "payload": {"n": 1}})
    assert (await client.next("note"))["n"] == 1
    url = f"{realtime_server.url}/api/agents/keys/{key['id']}"
    revoked = httpx.delete(url, headers=realtime_server.admin)
    assert revoked.status_code in (200, 204), revoked.text
    assert (await client.next("realtime:error"))["code"] == "AUTH_UNAUTHORIZED"
    await client.next("disconnect")


def agent_session_token(server: RealtimeServer, key: dict[str, Any], expires_in: int) -> str:
    """A session token minted from the key as `POST /api/agents/tokens` mints one (whose shortest life, 60 s,
    is too long to wait for here)."""
    claims = {
        "sub": f"agent:{key['id']}",
        "role": "project_admin",
        "agent_key": key["id"],
        "agent_session": f"agent-{secrets.token_hex(4)}",
    }
    return server.app.services.core.tokens.sign(claims, expires_in=expires_in)


async def test_an_agent_session_token_that_expires_ends_its_connection(
    realtime_server: RealtimeServer,
) -> None:
    key = agent_key(realtime_server, ["realtime:read"])
    client = await connect(realtime_server, {"token": agent_session_token(realtime_server, key, 2)})
    channel = unique("ops")
    assert (await client.subscribe(channel))["ok"] is True
    assert await client.next("realtime:error") == {
        "channel": channel,
        "code": "AUTH_TOKEN_EXPIRED",
        "message": "The access token expired; this subscription has ended.",
    }
    await client.next("disconnect")
