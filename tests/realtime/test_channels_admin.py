"""The admin API under `/api/realtime`: channels, message history, stats, retention, purge, permissions, in
InsForge's shapes, refused to anyone but an admin, and recorded in the audit log."""

from __future__ import annotations

import uuid

import psycopg
from starlette.testclient import TestClient

from tests.support.app import admin_headers, agent_headers, anon_headers, user_headers

API = "/api/realtime"


def test_channels_are_created_read_updated_and_deleted(client: TestClient) -> None:
    admin = admin_headers(client)
    name = f"orders:{uuid.uuid4().hex[:8]}:%"
    created = client.post(
        f"{API}/channels",
        headers=admin,
        json={"pattern": name, "description": "Order updates", "webhookUrls": ["http://127.0.0.1:9/hook"]},
    )
    assert created.status_code == 201, created.text
    channel = created.json()
    assert set(channel) == {
        "id",
        "pattern",
        "description",
        "webhookUrls",
        "enabled",
        "createdAt",
        "updatedAt",
    }
    assert channel["pattern"] == name
    assert channel["enabled"] is True
    assert channel["webhookUrls"] == ["http://127.0.0.1:9/hook"]

    listed = client.get(f"{API}/channels", headers=admin).json()
    assert channel["id"] in [c["id"] for c in listed]
    assert client.get(f"{API}/channels/{channel['id']}", headers=admin).json() == channel

    updated = client.put(f"{API}/channels/{channel['id']}", headers=admin, json={"enabled": False})
    assert updated.status_code == 200
    assert updated.json()["enabled"] is False
    assert updated.json()["description"] == "Order updates"

    deleted = client.delete(f"{API}/channels/{channel['id']}", headers=admin)
    assert deleted.json() == {"message": "Channel deleted"}
    missing = client.get(f"{API}/channels/{channel['id']}", headers=admin)
    assert missing.status_code == 404
    assert missing.json()["error"] == "REALTIME_CHANNEL_NOT_FOUND"
    assert client.delete(f"{API}/channels/{channel['id']}", headers=admin).status_code == 404
    assert client.get(f"{API}/channels/not-a-uuid", headers=admin).status_code == 404


def test_bad_channel_requests_are_400_and_duplicates_409(client: TestClient) -> None:
    admin = admin_headers(client)
    for pattern in ("has_underscore", "%leading", "spaces here", ""):
        response = client.post(f"{API}/channels", headers=admin, json={"pattern": pattern})
        assert response.status_code == 400, pattern
        assert response.json()["error"] in (
            "REALTIME_INVALID_CHANNEL_PATTERN",
            "REALTIME_INVALID_CHANNEL_REQUEST",
        )
    bad_urls = client.post(
        f"{API}/channels", headers=admin, json={"pattern": "ok", "webhookUrls": ["ftp://x"]}
    )
    assert bad_urls.status_code == 400
    assert bad_urls.json()["error"] == "REALTIME_INVALID_CHANNEL_REQUEST"
    not_bool = client.post(f"{API}/channels", headers=admin, json={"pattern": "ok", "enabled": "yes"})
    assert not_bool.status_code == 400
    name = f"dup-{uuid.uuid4().hex[:8]}"
    assert client.post(f"{API}/channels", headers=admin, json={"pattern": name}).status_code == 201
    again = client.post(f"{API}/channels", headers=admin, json={"pattern": name})
    assert again.status_code == 409
    assert client.post(f"{API}/channels", headers=admin, content=b"[1]").status_code == 400


def test_only_admins_reach_the_admin_api(client: TestClient) -> None:
    user = user_headers(client, str(uuid.uuid4()), "u@example.com")
    for headers, status in ((anon_headers(client), 401), (user, 403)):
        assert client.get(f"{API}/channels", headers=headers).status_code == status
        assert client.post(f"{API}/channels", headers=headers, json={"pattern": "x"}).status_code == status
        assert client.delete(f"{API}/messages", headers=headers).status_code == status
    assert client.get(f"{API}/channels", headers={"Authorization": "Bearer nonsense"}).status_code == 401


def test_history_stats_retention_and_purge(client: TestClient, database_url: str) -> None:
    admin = admin_headers(client)
    name = f"stats-{uuid.uuid4().hex[:8]}"
    channel = client.post(f"{API}/channels", headers=admin, json={"pattern": f"{name}:%"}).json()
    with psycopg.connect(database_url, autocommit=True) as conn:
        for event in ("created", "created", "shipped"):
            conn.execute("select realtime.publish(%s, %s, %s)", (f"{name}:1", event, '{"id": 1}'))
        # No channel matches: nothing stored, a warning only.
        assert conn.execute("select realtime.publish('nowhere:1', 'x', '{}')").fetchone() == (None,)

    history = client.get(f"{API}/messages", headers=admin, params={"channelId": channel["id"]}).json()
    assert [m["eventName"] for m in history].count("created") == 2
    message = history[0]
    assert set(message) == {
        "id",
        "eventName",
        "channelId",
        "channelName",
        "payload",
        "senderType",
        "senderId",
        "wsAudienceCount",
        "whAudienceCount",
        "whDeliveredCount",
        "createdAt",
    }
    assert message["channelName"] == f"{name}:1"
    assert message["senderType"] == "system"
    page = client.get(f"{API}/messages", headers=admin, params={"channelId": channel["id"], "limit": 1})
    assert len(page.json()) == 1
    shipped = client.get(f"{API}/messages", headers=admin, params={"eventName": "shipped", "limit": 1000})
    assert channel["id"] in {m["channelId"] for m in shipped.json()}
    assert client.get(f"{API}/messages", headers=admin, params={"limit": 0}).status_code == 400
    assert client.get(f"{API}/messages", headers=admin, params={"channelId": "x"}).status_code == 400

    stats = client.get(f"{API}/messages/stats", headers=admin, params={"channelId": channel["id"]}).json()
    assert stats["totalMessages"] == 3
    assert stats["topEvents"] == [{"eventName": "created", "count": 2}, {"eventName": "shipped", "count": 1}]
    assert stats["whDeliveryRate"] == 0
    assert stats["retentionDays"] is None
    assert (
        client.get(f"{API}/messages/stats", headers=admin, params={"since": "yesterday-ish"}).status_code
        == 400
    )

    assert client.get(f"{API}/config", headers=admin).json() == {"retentionDays": None}
    patched = client.patch(f"{API}/config", headers=admin, json={"retentionDays": 7})
    assert patched.json() == {"message": "Retention config updated successfully"}
    assert client.get(f"{API}/config", headers=admin).json() == {"retentionDays": 7}
    assert client.patch(f"{API}/config", headers=admin, json={"retentionDays": 0}).status_code == 400
    assert client.patch(f"{API}/config", headers=admin, json={"retentionDays": "7"}).status_code == 400
    client.patch(f"{API}/config", headers=admin, json={"retentionDays": None})

    purged = client.delete(f"{API}/messages", headers=admin)
    assert purged.status_code == 200
    assert purged.json()["deleted"] >= 3
    assert client.get(f"{API}/messages", headers=admin, params={"channelId": channel["id"]}).json() == []

    audit = client.get("/api/logs/audits", headers=admin, params={"module": "REALTIME", "limit": 100})
    actions = {entry["action"] for entry in audit.json()}
    assert {"CREATE_REALTIME_CHANNEL", "UPDATE_REALTIME_CONFIG", "CLEAR_REALTIME_MESSAGES"} <= actions


def test_retention_removes_only_older_messages(client: TestClient, database_url: str) -> None:
    admin = admin_headers(client)
    name = f"old-{uuid.uuid4().hex[:8]}"
    client.post(f"{API}/channels", headers=admin, json={"pattern": name})
    with psycopg.connect(database_url, autocommit=True) as conn:
        old = conn.execute("select realtime.publish(%s, 'old', '{}')", (name,)).fetchone()
        new = conn.execute("select realtime.publish(%s, 'new', '{}')", (name,)).fetchone()
        assert old is not None and new is not None
        conn.execute("update realtime.messages set created_at = now() - interval '3 days' where id = %s", old)
        conn.execute("update realtime.config set retention_days = 2")
        try:
            conn.execute("select realtime.cleanup_messages()")
        finally:
            conn.execute("update realtime.config set retention_days = null")
        remaining = conn.execute("select event_name from realtime.messages where channel_name = %s", (name,))
        assert [row[0] for row in remaining] == ["new"]


def test_permissions_list_the_developers_policies(client: TestClient, database_url: str) -> None:
    admin = admin_headers(client)
    raw = client.post(
        "/api/database/advance/rawsql",
        headers=admin,
        json={
            "query": "create policy perms_subscribe on realtime.channels for select to authenticated "
            "using (realtime.channel_name() like 'team:%')"
        },
    )
    assert raw.status_code == 200, raw.text
    permissions = client.get(f"{API}/permissions", headers=admin).json()
    [policy] = [p for p in permissions["subscribe"]["policies"] if p["policyName"] == "perms_subscribe"]
    assert policy["tableName"] == "channels"
    assert policy["command"] == "SELECT"
    assert policy["roles"] == ["authenticated"]
    assert "channel_name()" in policy["using"]
    assert policy["withCheck"] is None
    assert all(p["policyName"] != "kilnbase_owner" for p in permissions["publish"]["policies"])


def test_an_agent_key_may_not_point_a_channel_at_a_webhook(client: TestClient) -> None:
    """A channel's webhooks receive every message published on it: an agent key (even with realtime:write)
    choosing their URL could send the channel's traffic wherever it liked, which database webhooks refuse
    it for the same reason. It may still create and change channels without webhooks."""
    admin = admin_headers(client)
    agent = agent_headers(client, admin, ["realtime:write"])
    hook = ["https://receiver.example/hook"]
    pattern = f"agent-hooks:{uuid.uuid4().hex[:8]}"
    refused = client.post(f"{API}/channels", headers=agent, json={"pattern": pattern, "webhookUrls": hook})
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "FORBIDDEN" and "webhook" in refused.json()["message"]
    patterns = [c["pattern"] for c in client.get(f"{API}/channels", headers=admin).json()]
    assert pattern not in patterns

    created = client.post(f"{API}/channels", headers=agent, json={"pattern": pattern})
    assert created.status_code == 201, created.text
    channel_id = created.json()["id"]
    changed = client.put(f"{API}/channels/{channel_id}", headers=agent, json={"webhookUrls": hook})
    assert changed.status_code == 403, changed.text
    assert client.get(f"{API}/channels/{channel_id}", headers=admin).json()["webhookUrls"] in (None, [])
    cleared = client.put(f"{API}/channels/{channel_id}", headers=agent, json={"webhookUrls": None})
    assert cleared.status_code == 200, cleared.text
    by_admin = client.put(f"{API}/channels/{channel_id}", headers=admin, json={"webhookUrls": hook})
    assert by_admin.json()["webhookUrls"] == hook
    described = client.put(f"{API}/channels/{channel_id}", headers=agent, json={"description": "d"})
    assert described.status_code == 200 and described.json()["webhookUrls"] == hook


def test_an_agent_key_may_not_read_the_webhook_signing_secret(client: TestClient) -> None:
    """With the secret that signs webhook deliveries, an agent could sign messages of its own to every
    receiver the project's channels name, which trust a good signature as the server's."""
    admin = admin_headers(client)
    agent = agent_headers(client, admin, ["realtime:read", "realtime:write"])
    refused = client.get(f"{API}/config/webhook-secret", headers=agent)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "FORBIDDEN" and "secret" not in refused.json()
    secret = client.get(f"{API}/config/webhook-secret", headers=admin).json()["secret"]
    assert secret not in refused.text
