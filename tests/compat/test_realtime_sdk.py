"""`@insforge/sdk`'s realtime client, unchanged (and the `socket.io-client` it ships with), against a running
Kilnbase server: subscribe with presence, publish, refusals by RLS, publish from SQL, webhooks to a loopback
receiver with their signature checked."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from kilnbase.config import Settings
from kilnbase.keys.access_tokens import TokenService
from kilnbase.keys.project_keys import load_project_keys
from tests.support.node import run_node
from tests.support.servers import ServerProcess
from tests.support.webhook_receiver import WebhookReceiver, signed_with

if TYPE_CHECKING:
    from tests.support.postgres import TestCluster


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def server(
    cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[dict[str, Any]]:
    database_url = cluster.create_database("rtsdk")
    process = ServerProcess(
        tmp_path_factory.mktemp("realtimesdk") / "data", env={"DATABASE_URL": database_url}
    )
    process.start()
    stored = json.loads((process.data_dir / "keys.json").read_text())
    tokens = TokenService(load_project_keys(Settings(data_dir=process.data_dir)))
    admin = {"Authorization": f"Bearer {stored['api_key']}"}
    with httpx.Client(base_url=process.url, headers=admin, timeout=30) as http:
        for channel in ({"pattern": "chat:%", "webhookUrls": [receiver.url]}, {"pattern": "private:%"}):
            assert http.post("/api/realtime/channels", json=channel).status_code == 201
        policies = """
            create policy subscribe_chat on realtime.channels for select to anon, authenticated
                using (pattern = 'chat:%');
            create policy subscribe_own on realtime.channels for select to authenticated
                using (pattern = 'private:%' and realtime.channel_name() = 'private:' || auth.uid());
            create policy publish_chat on realtime.messages for insert to authenticated
                with check (realtime.channel_name() like 'chat:%');
        """
        assert http.post("/api/database/advance/rawsql", json={"query": policies}).status_code == 200
        secret = http.get("/api/realtime/config/webhook-secret").json()["secret"]
    yield {
        "url": process.url,
        "apiKey": stored["api_key"],
        "anonKey": stored["anon_key"],
        "secret": secret,
        "token": lambda user_id: tokens.sign({"sub": user_id, "role": "authenticated", "email": "a@b.c"}),
    }
    process.stop()


SCRIPT = """
import { createClient } from '@insforge/sdk';
import { io } from 'socket.io-client';

const input = JSON.parse(process.env.SDK_INPUT);
const baseUrl = process.env.BASE_URL;
const anonKey = process.env.ANON_KEY;
const anon = createClient({ baseUrl, anonKey });
const alice = createClient({ baseUrl, anonKey, accessToken: input.aliceToken });
const bob = createClient({ baseUrl, anonKey, accessToken: input.bobToken });
const out = {};

function next(client, event, matches = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within 10 s`)), 10000);
    const listener = (payload) => {
      if (!matches(payload)) return;
      clearTimeout(timer);
      client.realtime.off(event, listener);
      resolve(payload);
    };
    client.realtime.on(event, listener);
  });
}

out.anonAck = await anon.realtime.subscribe(input.room);
const joined = next(anon, 'presence:join');
out.aliceAck = await alice.realtime.subscribe(input.room);
out.joined = (await joined).member;
out.presence = anon.realtime.getPresenceState(input.room).map((member) => member.type).sort();
out.channels = alice.realtime.getSubscribedChannels();

const chat = next(anon, 'chat');
await alice.realtime.publish(input.room, 'chat', { text: 'hello' });
out.chat = await chat;

out.bobPrivate = await bob.realtime.subscribe(`private:${input.aliceId}`);
out.alicePrivate = await alice.realtime.subscribe(`private:${input.aliceId}`);
out.unknown = await anon.realtime.subscribe('nowhere:1');

const refusal = next(anon, 'error');
await anon.realtime.publish(input.room, 'chat', { text: 'anon may not publish' });
out.anonPublish = await refusal;

const fromSql = next(anon, 'order_updated');
const sql = await fetch(`${baseUrl}/api/database/advance/rawsql`, {
  method: 'POST',
  headers: { Authorization: `Bearer ${process.env.API_KEY}`, 'Content-Type': 'application/json' },
  body: JSON.stringify({ query: "select realtime.publish($1, 'order_updated', '{\\"status\\": \\"paid\\"}')",
                         params: [input.room] }),
});
out.sqlStatus = sql.status;
out.fromSql = await fromSql;

const left = next(anon, 'presence:leave');
alice.realtime.unsubscribe(input.room);
out.left = (await left).member;

out.refused = await new Promise((resolve) => {
  const socket = io(baseUrl, { transports: ['websocket'], auth: { token: 'anon_bad' }, reconnection: false });
  socket.on('connect', () => { resolve('connected'); socket.close(); });
  socket.on('connect_error', (error) => {
    resolve({ message: error.message, data: error.data });
    socket.close();
  });
});

for (const client of [anon, alice, bob]) client.realtime.disconnect();
console.log(JSON.stringify(out));
"""


def test_the_sdk_subscribes_publishes_and_sees_presence(
    server: dict[str, Any], receiver: WebhookReceiver
) -> None:
    alice_id, bob_id = str(uuid.uuid4()), str(uuid.uuid4())
    room = f"chat:{uuid.uuid4().hex[:8]}"
    values = {"room": room, "aliceId": alice_id, "aliceToken": server["token"](alice_id)}
    values["bobToken"] = server["token"](bob_id)
    env = {
        "BASE_URL": server["url"],
        "ANON_KEY": server["anonKey"],
        "API_KEY": server["apiKey"],
        "SDK_INPUT": json.dumps(values),
    }
    out = run_node(SCRIPT, env)

    assert out["anonAck"]["ok"] is True
    assert out["anonAck"]["presence"]["members"][0]["type"] == "anonymous"
    assert out["aliceAck"]["ok"] is True
    assert out["joined"]["type"] == "user"
    assert out["joined"]["presenceId"] == alice_id
    assert out["presence"] == ["anonymous", "user"]
    assert out["channels"] == [room]

    assert out["chat"]["text"] == "hello"
    assert out["chat"]["meta"]["senderType"] == "user"
    assert out["chat"]["meta"]["senderId"] == alice_id

    assert out["bobPrivate"]["ok"] is False
    assert out["bobPrivate"]["error"]["code"] == "REALTIME_UNAUTHORIZED"
    assert out["alicePrivate"]["ok"] is True
    assert out["unknown"]["error"]["code"] == "REALTIME_UNAUTHORIZED"
    assert out["anonPublish"] == {
        "channel": room,
        "code": "REALTIME_UNAUTHORIZED",
        "message": "Not authorized to publish to this channel",
    }

    assert out["sqlStatus"] == 200
    assert out["fromSql"]["status"] == "paid"
    assert out["fromSql"]["meta"]["senderType"] == "system"
    assert out["left"]["presenceId"] == alice_id
    assert out["refused"]["message"] == "Invalid anon key"

    # Both messages on the channel (Alice's and the SQL one) reached its webhook, signed.
    delivered = receiver.wait_for(2)
    assert {r["headers"]["x-insforge-event"] for r in delivered} >= {"chat", "order_updated"}
    assert all(signed_with(server["secret"], r) for r in delivered)
    assert all(r["headers"]["x-insforge-channel"] == room for r in delivered)
