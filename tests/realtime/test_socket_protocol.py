"""InsForge's Socket.IO protocol with python-socketio's client: handshake, subscribe with its ack and
presence, unsubscribe, publish, presence join and leave, `realtime:error`, refusals by RLS, limits and
bad input."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import orjson
import pytest

from tests.realtime.conftest import RealtimeServer, connect, refused, unique

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", autouse=True)
def policies(realtime_server: RealtimeServer) -> None:
    """`room:%` is open to everyone; `private:<user id>` only to that user; anyone signed in may publish on
    `room:%`; nobody on `readonly:%` (subscribing is open)."""
    realtime_server.channel("room:%")
    realtime_server.channel("private:%")
    realtime_server.channel("readonly:%")
    realtime_server.sql(
        """
        create policy subscribe_rooms on realtime.channels for select to anon, authenticated
            using (pattern in ('room:%', 'readonly:%'));
        create policy subscribe_own on realtime.channels for select to authenticated
            using (pattern = 'private:%' and realtime.channel_name() = 'private:' || auth.uid());
        create policy publish_rooms on realtime.messages for insert to authenticated
            with check (realtime.channel_name() like 'room:%' and channel_name = realtime.channel_name());
        """
    )


async def test_the_anon_key_connects_and_a_bad_one_is_refused(realtime_server: RealtimeServer) -> None:
    client = await connect(realtime_server, {"token": realtime_server.anon_key})
    assert client.sio.connected
    await client.sio.disconnect()

    bad = await refused(realtime_server, {"token": "anon_" + "0" * 64})
    assert bad["message"] == "Invalid anon key"
    assert bad["data"]["code"] == "AUTH_INVALID_CREDENTIALS"
    missing = await refused(realtime_server, {})
    assert missing["message"] == "No authentication provided"
    garbage = await refused(realtime_server, {"token": "not-a-jwt"})
    assert garbage["data"]["code"] == "AUTH_INVALID_CREDENTIALS"
    wrong_key = await refused(realtime_server, {"apiKey": "ik_" + "0" * 64})
    assert wrong_key["message"] == "Invalid API key"


async def test_an_expired_token_is_refused(realtime_server: RealtimeServer) -> None:
    token = realtime_server.user_token(expires_in=-60)
    answer = await refused(realtime_server, {"token": token})
    assert answer["data"]["code"] == "AUTH_TOKEN_EXPIRED"


async def test_subscribe_acks_with_presence_and_others_see_join_and_leave(
    realtime_server: RealtimeServer,
) -> None:
    channel = unique("room")
    user_id = str(uuid.uuid4())
    first = await connect(realtime_server, {"token": realtime_server.user_token(user_id)})
    ack = await first.subscribe(channel)
    assert ack["ok"] is True
    assert ack["channel"] == channel
    [member] = ack["presence"]["members"]
    assert member["type"] == "user"
    assert member["presenceId"] == user_id

    second = await connect(realtime_server, {"token": realtime_server.anon_key})
    ack = await second.subscribe(channel)
    assert {m["presenceId"] for m in ack["presence"]["members"]} == {user_id, second.sio.get_sid()}
    joined = await first.next("presence:join")
    assert joined["member"] == {
        "type": "anonymous",
        "presenceId": second.sio.get_sid(),
        "joinedAt": joined["member"]["joinedAt"],
    }
    assert joined["meta"]["channel"] == channel
    assert joined["meta"]["senderType"] == "system"

    await second.sio.emit("realtime:unsubscribe", {"channel": channel})
    left = await first.next("presence:leave")
    assert left["member"]["presenceId"] == second.sio.get_sid()

    # The same user on a second socket is one member: no join, and no leave until their last socket goes.
    again = await connect(realtime_server, {"token": realtime_server.user_token(user_id)})
    ack = await again.subscribe(channel)
    assert [m["presenceId"] for m in ack["presence"]["members"]] == [user_id]
    await again.sio.disconnect()
    await second.subscribe(channel)
    await first.sio.disconnect()
    gone = await second.next("presence:leave")
    assert gone["member"]["presenceId"] == user_id
    await second.sio.disconnect()


async def test_unknown_and_closed_channels_are_refused(realtime_server: RealtimeServer) -> None:
    client = await connect(realtime_server, {"token": realtime_server.user_token()})
    for channel in (unique("nowhere"), f"private:{uuid.uuid4()}"):
        ack = await client.subscribe(channel)
        assert ack == {
            "ok": False,
            "channel": channel,
            "error": {
                "code": "REALTIME_UNAUTHORIZED",
                "message": "Not authorized to subscribe to this channel",
            },
        }
    await client.sio.disconnect()


async def test_rls_lets_a_user_into_their_own_private_channel_only(realtime_server: RealtimeServer) -> None:
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    client = await connect(realtime_server, {"token": realtime_server.user_token(alice)})
    assert (await client.subscribe(f"private:{alice}"))["ok"] is True
    assert (await client.subscribe(f"private:{bob}"))["ok"] is False
    anon = await connect(realtime_server, {"token": realtime_server.anon_key})
    assert (await anon.subscribe(f"private:{alice}"))["ok"] is False
    await client.sio.disconnect()
    await anon.sio.disconnect()


async def test_a_published_message_reaches_subscribers_in_insforge_shape(
    realtime_server: RealtimeServer,
) -> None:
    channel = unique("room")
    sender_id = str(uuid.uuid4())
    listener = await connect(realtime_server, {"token": realtime_server.anon_key})
    sender = await connect(realtime_server, {"token": realtime_server.user_token(sender_id)})
    await listener.subscribe(channel)
    await sender.subscribe(channel)
    await sender.sio.emit(
        "realtime:publish", {"channel": channel, "event": "chat", "payload": {"text": "hi"}}
    )
    message = await listener.next("chat")
    assert message["text"] == "hi"
    meta = message["meta"]
    assert meta["channel"] == f"realtime:{channel}"
    assert meta["senderType"] == "user"
    assert meta["senderId"] == sender_id
    uuid.UUID(meta["messageId"])
    assert meta["timestamp"].endswith("Z")
    # The sender is in the room too, as in InsForge.
    assert (await sender.next("chat"))["text"] == "hi"
    await listener.sio.disconnect()
    await sender.sio.disconnect()


async def test_publishing_needs_a_subscription_and_the_insert_policy(realtime_server: RealtimeServer) -> None:
    client = await connect(realtime_server, {"token": realtime_server.anon_key})
    channel = unique("room")
    await client.sio.emit("realtime:publish", {"channel": channel, "event": "x", "payload": {}})
    error = await client.next("realtime:error")
    assert error == {
        "channel": channel,
        "code": "REALTIME_NOT_SUBSCRIBED",
        "message": "Must subscribe to channel before publishing messages",
    }
    await client.subscribe(channel)
    seen = len(client.events)
    await client.sio.emit("realtime:publish", {"channel": channel, "event": "x", "payload": {}})
    error = await client.next("realtime:error", after=seen)
    assert error["code"] == "REALTIME_UNAUTHORIZED"
    assert error["message"] == "Not authorized to publish to this channel"

    user = await connect(realtime_server, {"token": realtime_server.user_token()})
    readonly = unique("readonly")
    assert (await user.subscribe(readonly))["ok"] is True
    await user.sio.emit("realtime:publish", {"channel": readonly, "event": "x", "payload": {}})
    assert (await user.next("realtime:error"))["code"] == "REALTIME_UNAUTHORIZED"
    await client.sio.disconnect()
    await user.sio.disconnect()


async def test_the_admin_key_subscribes_and_publishes_as_system(realtime_server: RealtimeServer) -> None:
    channel = unique("readonly")
    admin = await connect(realtime_server, {"apiKey": realtime_server.api_key})
    assert (await admin.subscribe(channel))["ok"] is True
    await admin.sio.emit("realtime:publish", {"channel": channel, "event": "notice", "payload": {"n": 1}})
    message = await admin.next("notice")
    assert message["meta"]["senderType"] == "system"
    assert "senderId" not in message["meta"]
    await admin.sio.disconnect()


async def test_malformed_and_unknown_events_get_realtime_error(realtime_server: RealtimeServer) -> None:
    client = await connect(realtime_server, {"token": realtime_server.user_token()})
    bad_subscribe: dict[str, Any] = await client.sio.call("realtime:subscribe", "not an object", timeout=10)
    assert bad_subscribe["ok"] is False
    assert bad_subscribe["error"]["code"] == "REALTIME_INVALID_CHANNEL_REQUEST"
    await client.sio.emit("realtime:publish", ["a", "list"])
    assert (await client.next("realtime:error"))["code"] == "REALTIME_INVALID_EVENT"
    channel = unique("room")
    await client.subscribe(channel)
    for bad in (
        {"channel": channel, "event": "", "payload": {}},
        {"channel": channel, "event": "e", "payload": 3},
    ):
        seen = len(client.events)
        await client.sio.emit("realtime:publish", bad)
        assert (await client.next("realtime:error", after=seen))["code"] == "REALTIME_INVALID_EVENT"
    seen = len(client.events)
    await client.sio.emit("no:such:event", {"x": 1})
    unknown = await client.next("realtime:error", after=seen)
    assert unknown == {"code": "REALTIME_INVALID_EVENT", "message": "Unknown event: no:such:event"}
    # Still connected, still working.
    await client.sio.emit("realtime:publish", {"channel": channel, "event": "ok", "payload": {"v": 1}})
    assert (await client.next("ok"))["v"] == 1
    await client.sio.disconnect()


@pytest.mark.parametrize(
    "payload",
    [
        {"n": 2**70},  # past 64 bits: orjson refuses to write it
        {"n": -(2**64)},
        {"deep": orjson.loads(b"[" * 300 + b"]" * 300)},  # past orjson's nesting limit
        {"text": "a\x00b"},  # Postgres's jsonb cannot hold NUL: it was refused as "not authorized"
    ],
)
async def test_a_payload_json_cannot_store_gets_realtime_error(
    realtime_server: RealtimeServer, payload: dict[str, Any]
) -> None:
    """Socket.IO's JSON takes integers of any size and any depth; measuring such a payload raised inside
    the handler, so the client heard nothing at all."""
    client = await connect(realtime_server, {"token": realtime_server.user_token()})
    channel = unique("room")
    await client.subscribe(channel)
    seen = len(client.events)
    await client.sio.emit("realtime:publish", {"channel": channel, "event": "odd", "payload": payload})
    error = await client.next("realtime:error", after=seen)
    assert error["code"] == "REALTIME_INVALID_EVENT" and error["channel"] == channel
    await client.sio.emit("realtime:publish", {"channel": channel, "event": "ok", "payload": {"v": 1}})
    assert (await client.next("ok"))["v"] == 1
    assert not any(name == "odd" for name, _ in client.events)
    await client.sio.disconnect()


async def test_limits_on_subscriptions_payload_size_and_event_rate(realtime_server: RealtimeServer) -> None:
    client = await connect(realtime_server, {"token": realtime_server.user_token()})
    channels = [unique("room") for _ in range(6)]
    acks = [await client.subscribe(channel) for channel in channels]
    assert [ack["ok"] for ack in acks] == [True] * 5 + [False]
    assert acks[5]["error"]["code"] == "REALTIME_SUBSCRIPTION_LIMIT"

    seen = len(client.events)
    await client.sio.emit(
        "realtime:publish", {"channel": channels[0], "event": "big", "payload": {"x": "y" * 2000}}
    )
    too_big = await client.next("realtime:error", after=seen)
    assert too_big["code"] == "REALTIME_INVALID_EVENT"
    assert "at most 1024" in too_big["message"]

    seen = len(client.events)
    for _ in range(60):  # the burst is 40; far fewer than 20 tokens come back while these are sent
        await client.sio.emit("realtime:unsubscribe", {"channel": unique("room")})
    assert (await client.next("realtime:error", after=seen))["code"] == "RATE_LIMITED"
    await client.sio.disconnect()


async def test_subscriptions_sent_at_once_stay_within_the_limit(realtime_server: RealtimeServer) -> None:
    """Each subscription's policy check waits on the database, and the limit was checked before it: twenty
    subscribes sent together each found room under the limit of five, and all twenty were let in."""
    client = await connect(realtime_server, {"token": realtime_server.user_token()})
    channels = [unique("room") for _ in range(20)]
    acks = await asyncio.gather(*(client.subscribe(channel) for channel in channels))
    admitted = [ack["channel"] for ack in acks if ack["ok"]]
    assert len(admitted) == 5
    refusals = {ack["error"]["code"] for ack in acks if not ack["ok"]}
    assert refusals == {"REALTIME_SUBSCRIPTION_LIMIT"}
    for channel in admitted:  # a place freed is a place to take again
        await client.sio.emit("realtime:unsubscribe", {"channel": channel})
    again = await client.subscribe(channels[0] if channels[0] not in admitted else unique("room"))
    assert again["ok"] is True
    await client.sio.disconnect()


async def test_a_token_that_expires_ends_its_subscriptions(realtime_server: RealtimeServer) -> None:
    channel = unique("room")
    watcher = await connect(realtime_server, {"token": realtime_server.anon_key})
    await watcher.subscribe(channel)
    user_id = str(uuid.uuid4())
    client = await connect(realtime_server, {"token": realtime_server.user_token(user_id, expires_in=2)})
    assert (await client.subscribe(channel))["ok"] is True
    ended = await client.next("realtime:error")
    assert ended == {
        "channel": channel,
        "code": "AUTH_TOKEN_EXPIRED",
        "message": "The access token expired; this subscription has ended.",
    }
    await client.next("disconnect")
    left = await watcher.next("presence:leave")
    assert left["member"]["presenceId"] == user_id
    await watcher.sio.disconnect()
    await asyncio.sleep(0)


async def test_publishes_committed_together_get_their_own_answers(realtime_server: RealtimeServer) -> None:
    """A burst from an allowed user and a refused anon caller, written in shared transactions: every allowed
    message arrives, and every refused one gets its own `realtime:error`."""
    channel = unique("room")
    allowed = await connect(realtime_server, {"token": realtime_server.user_token()})
    refused_client = await connect(realtime_server, {"token": realtime_server.anon_key})
    await allowed.subscribe(channel)
    await refused_client.subscribe(channel)
    for n in range(15):
        await allowed.sio.emit(
            "realtime:publish", {"channel": channel, "event": "burst", "payload": {"n": n}}
        )
        await refused_client.sio.emit(
            "realtime:publish", {"channel": channel, "event": "burst", "payload": {"n": -1}}
        )
    # Publishes are handled as they arrive, each in its own task, so they may be stored (and delivered) in
    # another order than they were sent: wait for all fifteen, not for the last one sent.
    await refused_client.until("burst", lambda _m: len(refused_client.received("burst")) == 15)
    await refused_client.until(
        "realtime:error", lambda _e: len(refused_client.received("realtime:error")) == 15
    )
    assert sorted(m["n"] for m in refused_client.received("burst")) == list(range(15))
    assert {e["code"] for e in refused_client.received("realtime:error")} == {"REALTIME_UNAUTHORIZED"}
    assert allowed.received("realtime:error") == []
    await allowed.sio.disconnect()
    await refused_client.sio.disconnect()


async def test_the_long_polling_handshake_carries_one_cors_header(realtime_server: RealtimeServer) -> None:
    """Browsers start with HTTP long-polling unless told otherwise: CORS is answered once, by the edge."""
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{realtime_server.url}/socket.io/?EIO=4&transport=polling",
            headers={"Origin": "http://app.example"},
        )
        assert response.status_code == 200
        assert response.text.startswith("0{")  # Engine.IO's open packet
        origins = [v for k, v in response.headers.multi_items() if k.lower() == "access-control-allow-origin"]
        assert len(origins) == 1
        # Close the session (Engine.IO's close packet), so it does not wait out its ping timeout.
        session = orjson.loads(response.text[1:])["sid"]
        closed = await http.post(
            f"{realtime_server.url}/socket.io/?EIO=4&transport=polling&sid={session}", content=b"1"
        )
        assert closed.status_code == 200


async def test_signing_out_ends_the_sessions_subscriptions(realtime_server: RealtimeServer) -> None:
    channel = unique("room")
    session = str(uuid.uuid4())
    client = await connect(realtime_server, {"token": realtime_server.user_token(sid=session)})
    assert (await client.subscribe(channel))["ok"] is True
    # What the sessions listener does when the session is revoked in any process.
    realtime_server.app.services.core.ended_sessions.add([session])
    ended = await client.next("realtime:error")
    assert ended["channel"] == channel
    assert ended["code"] == "AUTH_UNAUTHORIZED"
    await client.next("disconnect")
    refused_again = await refused(realtime_server, {"token": realtime_server.user_token(sid=session)})
    assert "signed out" in refused_again["message"]


async def test_an_event_named_like_socketios_own_does_not_reach_its_handler(
    realtime_server: RealtimeServer,
) -> None:
    """A client's event named `disconnect` ran the server's disconnect handler: the connection was forgotten
    (no more answers, no expiry or sign-out ends it) while its rooms kept delivering to it. One named
    `connect` ran the handshake again, with whatever credentials it carried."""
    client = await connect(realtime_server, {"token": realtime_server.user_token()})
    channel = unique("room")
    await client.subscribe(channel)
    for name, data in (("disconnect", "transport close"), ("connect", {"apiKey": realtime_server.api_key})):
        seen = len(client.events)
        await client.sio.emit(name, data)
        error = await client.next("realtime:error", after=seen)
        assert error["code"] == "REALTIME_INVALID_EVENT"
        assert "Socket.IO's own" in error["message"]
    # Still known to the server, as the same caller: a user may publish here, and is answered.
    await client.sio.emit("realtime:publish", {"channel": channel, "event": "ok", "payload": {"v": 1}})
    assert (await client.next("ok"))["meta"]["senderType"] == "user"
    await client.sio.disconnect()


@pytest.mark.parametrize(
    "packet",
    [
        "2[5]",  # an event name that is not a string
        "2[null,{}]",
        "2[]",  # no event name
        "2",
        '2["realtime:subscribe",{',  # JSON that does not parse
        "2" + "[" * 5000,  # nesting past the JSON parser's recursion
        "4",  # CONNECT_ERROR: the server's packet, never a client's
        "9",  # no such packet type
    ],
    ids=[
        "int-name",
        "null-name",
        "empty-list",
        "no-data",
        "bad-json",
        "deep-json",
        "connect-error",
        "type-9",
    ],
)
async def test_a_malformed_socketio_packet_gets_realtime_error(
    realtime_server: RealtimeServer, packet: str
) -> None:
    """Each raised inside python-socketio (a logged traceback) and the client heard nothing."""
    client = await connect(realtime_server, {"token": realtime_server.user_token()})
    await client.sio.eio.send(packet)
    error = await client.next("realtime:error", timeout=5)
    assert error["code"] == "REALTIME_INVALID_EVENT"
    assert error["message"].startswith("Malformed packet")
    assert (await client.subscribe(unique("room")))["ok"] is True  # the connection carries on
    await client.sio.disconnect()


async def test_arguments_past_the_first_are_ignored(realtime_server: RealtimeServer) -> None:
    """They raised a TypeError in the handler: a subscription asked for with an acknowledgement got none."""
    client = await connect(realtime_server, {"token": realtime_server.user_token()})
    channel = unique("room")
    ack = await client.sio.call("realtime:subscribe", ({"channel": channel}, "extra", 3), timeout=5)
    assert ack["ok"] is True and ack["channel"] == channel
    await client.sio.disconnect()


async def test_a_message_cannot_be_published_under_a_socketio_event_name(
    realtime_server: RealtimeServer,
) -> None:
    """A message named `disconnect` reached every subscriber as its own client's disconnect event; an event
    name with NUL was refused as 'not authorized' (Postgres cannot store it)."""
    listener = await connect(realtime_server, {"token": realtime_server.anon_key})
    sender = await connect(realtime_server, {"token": realtime_server.user_token()})
    channel = unique("room")
    await listener.subscribe(channel)
    await sender.subscribe(channel)
    for event in ("disconnect", "connect", "a\x00b"):
        seen = len(sender.events)
        await sender.sio.emit("realtime:publish", {"channel": channel, "event": event, "payload": {}})
        error = await sender.next("realtime:error", after=seen)
        assert error["code"] == "REALTIME_INVALID_EVENT" and error["channel"] == channel
    await sender.sio.emit("realtime:publish", {"channel": channel, "event": "ok", "payload": {}})
    await listener.next("ok")
    assert listener.sio.connected
    assert [name for name, _ in listener.events if name in ("disconnect", "connect", "a\x00b")] == []
    stored = realtime_server.sql(
        "select count(*)::int as n from realtime.messages "
        f"where channel_name = '{channel}' and event_name <> 'ok'"
    )
    assert stored["rows"] == [{"n": 0}]
    await listener.sio.disconnect()
    await sender.sio.disconnect()


async def test_a_websocket_frame_that_is_no_engineio_packet_ends_the_connection_at_once(
    realtime_server: RealtimeServer,
) -> None:
    """Engine.IO raised out of its handler (a traceback per frame) and skipped its cleanup: the socket stayed
    a member of its rooms until the ping timeout (45 s) found it."""
    channel = unique("room")
    watcher = await connect(realtime_server, {"token": realtime_server.user_token()})
    await watcher.subscribe(channel)
    garbled = await connect(realtime_server, {"token": realtime_server.anon_key})
    await garbled.subscribe(channel)
    garbled_sid = garbled.sio.get_sid()
    await garbled.sio.eio.ws.send_str("x")
    left = await watcher.next("presence:leave", timeout=5)
    assert left["member"]["presenceId"] == garbled_sid
    await garbled.next("disconnect", timeout=5)
    await watcher.sio.disconnect()
