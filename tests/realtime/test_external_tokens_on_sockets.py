"""External JWT providers' tokens on Socket.IO: such a token connects and subscribes as its provider's role,
and a provider switched off (or whose users' role is changed) ends its callers' open sockets within moments,
as a signed-out session's are: otherwise a token minted for a day keeps its subscriptions for that day."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.realtime.conftest import RealtimeServer, connect, unique
from tests.support.oidc_provider import OidcProvider

pytestmark = pytest.mark.anyio
PATH = "/api/auth/jwt-providers"


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    server = OidcProvider()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", autouse=True)
def channels(realtime_server: RealtimeServer) -> None:
    realtime_server.channel("lobby:%")
    realtime_server.sql(
        "create policy subscribe_lobby on realtime.channels for select to authenticated "
        "using (pattern = 'lobby:%')"
    )


def provider(server: RealtimeServer, idp: OidcProvider) -> dict[str, Any]:
    body = idp.provider_body(secrets.token_hex(4))
    created = httpx.post(f"{server.url}{PATH}", headers=server.admin, json=body, timeout=30)
    assert created.status_code == 201, created.text
    found: dict[str, Any] = created.json()
    return found


@pytest.mark.parametrize("change", [{"is_enabled": False}, {"default_role": "anon"}])
async def test_a_provider_switched_off_or_changed_ends_its_callers_sockets(
    realtime_server: RealtimeServer, idp: OidcProvider, change: dict[str, Any]
) -> None:
    configured = provider(realtime_server, idp)
    token = idp.sign(idp.claims("user_2xAlice", "alice@example.com", iss=configured["issuer"], lifetime=3600))
    client = await connect(realtime_server, {"token": token})
    channel = unique("lobby")
    assert (await client.subscribe(channel))["ok"] is True
    changed = httpx.patch(
        f"{realtime_server.url}{PATH}/{configured['provider_key']}",
        headers=realtime_server.admin,
        json=change,
        timeout=30,
    )
    assert changed.status_code == 200, changed.text
    ended = await client.next("realtime:error")
    assert ended["channel"] == channel
    assert ended["code"] == "AUTH_UNAUTHORIZED"
    await client.next("disconnect")
