"""`realtime.publish()` from SQL reaches subscribers when its transaction commits, never when it rolls back;
and the channel's webhooks get each message, signed, retried, with delivery counts written back."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import httpx
import psycopg
import pytest

from tests.realtime.conftest import RealtimeServer, connect, unique
from tests.support.webhook_receiver import WebhookReceiver, signed_with

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", autouse=True)
def open_channels(realtime_server: RealtimeServer) -> None:
    realtime_server.channel("sql:%")
    realtime_server.sql(
        "create policy sql_subscribe on realtime.channels for select to anon using (pattern = 'sql:%')"
    )


async def test_sql_publish_is_delivered_after_commit_only(
    realtime_server: RealtimeServer, database_url: str
) -> None:
    channel = unique("sql")
    client = await connect(realtime_server, {"token": realtime_server.anon_key})
    assert (await client.subscribe(channel))["ok"] is True
    with psycopg.connect(database_url) as held, psycopg.connect(database_url, autocommit=True) as other:
        held.execute("select realtime.publish(%s, 'step', '{\"n\": 1}')", (channel,))
        other.execute("select realtime.publish(%s, 'step', '{\"n\": 2}')", (channel,))
        # The second, committed at once, arrives while the first is still uncommitted.
        assert (await client.next("step"))["n"] == 2
        held.commit()
        rolled = psycopg.connect(database_url)
        rolled.execute("select realtime.publish(%s, 'step', '{\"n\": 3}')", (channel,))
        rolled.rollback()
        rolled.close()
        other.execute("select realtime.publish(%s, 'step', '{\"n\": 4}')", (channel,))
    await client.until("step", lambda message: message["n"] == 4)
    assert [m["n"] for m in client.received("step")] == [2, 1, 4]
    first = client.received("step")[0]
    assert first["meta"]["senderType"] == "system"
    assert first["meta"]["channel"] == f"realtime:{channel}"
    await client.sio.disconnect()


async def test_a_sql_message_named_like_socketios_own_events_is_not_sent_to_sockets(
    realtime_server: RealtimeServer, database_url: str
) -> None:
    """Delivered, a message named `disconnect` ran every subscriber's own disconnect handler (the Python and
    JavaScript Socket.IO clients take it for their own event). InsForge's server throws on it."""
    channel = unique("sql")
    client = await connect(realtime_server, {"token": realtime_server.anon_key})
    assert (await client.subscribe(channel))["ok"] is True
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("select realtime.publish(%s, 'disconnect', '{}')", (channel,))
        conn.execute("select realtime.publish(%s, 'after', '{}')", (channel,))
    await client.next("after")
    assert client.sio.connected
    assert [name for name, _ in client.events if name != "after"] == []
    await client.sio.disconnect()


async def test_a_message_counts_the_sockets_it_reached(
    realtime_server: RealtimeServer, database_url: str
) -> None:
    """`wsAudienceCount` in the history: the sockets subscribed to the channel when it was delivered (two
    here; a third socket on another channel does not count)."""
    channel, elsewhere = unique("sql"), unique("sql")
    first, second, other = [
        await connect(realtime_server, {"token": realtime_server.anon_key}) for _ in range(3)
    ]
    for client, name in ((first, channel), (second, channel), (other, elsewhere)):
        assert (await client.subscribe(name))["ok"] is True
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("select realtime.publish(%s, 'counted', '{}')", (channel,)).fetchone()
    assert row is not None
    await first.next("counted")
    await second.next("counted")
    history: list[dict[str, object]] = []
    for _ in range(100):  # the count is written after the delivery, off its path
        history = httpx.get(
            f"{realtime_server.url}/api/realtime/messages",
            params={"eventName": "counted", "limit": 1000},
            headers=realtime_server.admin,
        ).json()
        mine = [m for m in history if m["id"] == str(row[0])]
        if mine and mine[0]["wsAudienceCount"]:
            break
        await anyio.sleep(0.05)
    assert [m["wsAudienceCount"] for m in history if m["id"] == str(row[0])] == [2]
    for client in (first, second, other):
        await client.sio.disconnect()


async def test_a_trigger_on_a_table_publishes_its_changes(realtime_server: RealtimeServer) -> None:
    table = f"orders_{unique('t').split(':')[1]}"
    realtime_server.sql(
        f"""
        create table {table} (id bigint generated always as identity primary key, status text);
        create policy anyone_inserts on {table} for insert to anon with check (true);
        create function {table}_announce() returns trigger language plpgsql as $$
        begin
            perform realtime.publish('sql:' || TG_TABLE_NAME, 'order_created',
                                     jsonb_build_object('id', NEW.id, 'status', NEW.status));
            return NEW;
        end $$;
        create trigger announce after insert on {table} for each row execute function {table}_announce();
        """
    )
    client = await connect(realtime_server, {"token": realtime_server.anon_key})
    await client.subscribe(f"sql:{table}")
    inserted = httpx.post(
        f"{realtime_server.url}/api/database/records/{table}",
        headers={"Authorization": f"Bearer {realtime_server.anon_key}"},
        json=[{"status": "new"}],
    )
    assert inserted.status_code == 201, inserted.text
    message = await client.next("order_created")
    assert message["status"] == "new"
    assert message["id"] == 1
    await client.sio.disconnect()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(fail_first=True) as running:
        yield running


def test_webhooks_are_signed_retried_and_counted(
    realtime_server: RealtimeServer, database_url: str, receiver: WebhookReceiver
) -> None:
    state, url = receiver, receiver.url
    name = unique("hooked")
    realtime_server.channel(name, webhookUrls=[url, "http://127.0.0.1:9/unreachable"])
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("select realtime.publish(%s, 'paid', '{\"amount\": 5}')", (name,)).fetchone()
    assert row is not None
    message_id = str(row[0])
    first, retry = state.wait_for(2)
    assert first["messageId"] == retry["messageId"] == message_id
    headers = retry["headers"]
    assert headers["x-insforge-event"] == "paid"
    assert headers["x-insforge-channel"] == name
    assert retry["body"] == b'{"amount":5}'
    secret = httpx.get(
        f"{realtime_server.url}/api/realtime/config/webhook-secret", headers=realtime_server.admin
    ).json()["secret"]
    assert signed_with(secret, retry)

    # The unreachable URL is tried three times (webhook_attempts), then both counts are written back.
    with psycopg.connect(database_url, autocommit=True) as conn:
        for _ in range(200):
            counts = conn.execute(
                "select wh_audience_count, wh_delivered_count from realtime.messages where id = %s",
                (message_id,),
            ).fetchone()
            if counts is not None and counts[0]:
                break
            conn.execute("select pg_sleep(0.05)")
    assert counts == (2, 1)


async def test_messages_stored_while_the_listener_reconnects_are_delivered(
    realtime_server: RealtimeServer, database_url: str
) -> None:
    channel = unique("sql")
    client = await connect(realtime_server, {"token": realtime_server.anon_key})
    assert (await client.subscribe(channel))["ok"] is True
    with psycopg.connect(database_url, autocommit=True) as conn:
        cut = conn.execute(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity "
            "where application_name = 'kilnbase-realtime' and datname = current_database()"
        ).fetchone()
        assert cut == (1,)
        # Stored while the listener is away (it reconnects after a second).
        conn.execute("select realtime.publish(%s, 'gap', '{\"n\": 1}')", (channel,))
    assert (await client.next("gap", timeout=15))["n"] == 1
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("select realtime.publish(%s, 'gap', '{\"n\": 2}')", (channel,))
    await client.until("gap", lambda message: message["n"] == 2)
    assert [m["n"] for m in client.received("gap")] == [1, 2]
    await client.sio.disconnect()


def test_a_receiver_that_drips_its_answer_does_not_hold_the_delivery(
    realtime_server: RealtimeServer, database_url: str
) -> None:
    """A 2xx status is the delivery: the answer's body is not read. It was, to its end, and a receiver that
    sends it a byte at a time (each well within the read timeout) held the delivery, and the message's
    counts, for as long as it liked."""
    with WebhookReceiver(drip=True) as dripping:
        name = unique("hooked")
        realtime_server.channel(name, webhookUrls=[dripping.url])
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute("select realtime.publish(%s, 'slow', '{}')", (name,)).fetchone()
            assert row is not None
            dripping.wait_for(1)
            for _ in range(80):  # 4 s: less than the server's webhook timeout (5 s)
                counts = conn.execute(
                    "select wh_audience_count, wh_delivered_count from realtime.messages where id = %s",
                    (row[0],),
                ).fetchone()
                if counts is not None and counts[0]:
                    break
                conn.execute("select pg_sleep(0.05)")
        assert counts == (1, 1)
        assert len(dripping.requests) == 1
