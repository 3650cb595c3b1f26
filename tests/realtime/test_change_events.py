"""Database change events from logical decoding: Supabase's `postgres_changes` payloads, a PostgREST-style
filter, RLS as the subscriber (user A never receives user B's rows), the slot dropped when nobody listens,
no loss across a server restart, and a reader that sleeps until the first subscriber comes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from kilnbase.app import create_app
from kilnbase.config import Settings
from kilnbase.realtime.change_feed import ChangeFeed
from tests.realtime.conftest import LIMITS, Client, RealtimeServer, connect
from tests.support.postgres import TestCluster
from tests.support.uvicorn_thread import UvicornThread

pytestmark = pytest.mark.anyio

CHANNEL = "postgres_changes:public:notes"
NOTES = (
    "create table notes (id bigint generated always as identity primary key, owner uuid not null, "
    "body text, score numeric, done boolean default false, tags jsonb); "
    "create policy own_notes on notes for select to authenticated using (owner = auth.uid())"
)


@pytest.fixture(scope="module")
def changes_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealtimeServer]:
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        realtime=LIMITS.model_copy(update={"changes_idle_seconds": 1.0}),
    )
    thread = UvicornThread(create_app(settings))
    thread.start()
    server = RealtimeServer(thread.url, thread.app)
    server.sql(
        f"""
        {NOTES};
        create table secrets_table (id int primary key);
        revoke select on secrets_table from anon, authenticated;
        """
    )
    yield server
    thread.stop()


def notes_database(cluster: TestCluster, name: str) -> str:
    """A database of its own with the notes table (without Redis, one process per database reads the
    changes)."""
    database_url = cluster.create_database(name)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(NOTES)
    return database_url


def insert(database_url: str, owner: str, body: str, **extra: Any) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "insert into notes (owner, body, score, tags) values (%s, %s, %s, %s) returning id",
            (owner, body, extra.get("score"), extra.get("tags")),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def subscribed(
    server: RealtimeServer, user_id: str, channel: str = CHANNEL, event: str = "*"
) -> Client:
    client = await connect(server, {"token": server.user_token(user_id)})
    ack: dict[str, Any] = await client.sio.call("realtime:subscribe", {"channel": channel, "event": event})
    assert ack["ok"] is True, ack
    return client


async def test_each_user_receives_only_the_rows_rls_shows_them(
    changes_server: RealtimeServer, database_url: str
) -> None:
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    alice_client = await subscribed(changes_server, alice)
    bob_client = await subscribed(changes_server, bob)
    bobs = insert(database_url, bob, "bob's secret")
    alices = insert(database_url, alice, "alice's", score="2.5", tags='{"a": [1]}')
    last = insert(database_url, bob, "bob again")

    event = await alice_client.next("postgres_changes")
    assert event["type"] == "INSERT"
    assert event["schema"] == "public"
    assert event["table"] == "notes"
    assert event["record"] == {
        "id": alices,
        "owner": alice,
        "body": "alice's",
        "score": 2.5,
        "done": False,
        "tags": {"a": [1]},
    }
    assert event["old_record"] == {}
    assert event["commit_timestamp"].endswith("Z")
    assert event["errors"] is None
    assert event["meta"]["channel"] == f"realtime:{CHANNEL}"
    await bob_client.until("postgres_changes", lambda e: e["record"]["id"] == last)
    assert [e["record"]["id"] for e in bob_client.received("postgres_changes")] == [bobs, last]
    assert [e["record"]["id"] for e in alice_client.received("postgres_changes")] == [alices]
    await alice_client.sio.disconnect()
    await bob_client.sio.disconnect()


async def test_updates_deletes_filters_and_event_types(
    changes_server: RealtimeServer, database_url: str
) -> None:
    owner = str(uuid.uuid4())
    everything = await subscribed(changes_server, owner)
    filtered = await subscribed(changes_server, owner, f"{CHANNEL}:body=in.(keep,kept)")
    updates = await subscribed(changes_server, owner, event="UPDATE")
    note = insert(database_url, owner, "keep")
    skipped = insert(database_url, owner, "skip")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("update notes set body = 'kept', done = true where id = %s", (note,))
        conn.execute("delete from notes where id = %s", (skipped,))
    deleted = await everything.until("postgres_changes", lambda e: e["type"] == "DELETE")
    assert deleted["old_record"] == {"id": skipped}
    assert deleted["record"] == {}
    # An insert is checked against the row as it is then: "skip" may already be gone.
    await everything.until("postgres_changes", lambda e: e["type"] == "UPDATE")
    seen = [(e["type"], e["record"].get("id")) for e in everything.received("postgres_changes")]
    assert ("INSERT", note) in seen
    updated = await updates.next("postgres_changes")
    assert updated["record"]["body"] == "kept"
    assert updated["record"]["done"] is True
    await filtered.until("postgres_changes", lambda e: e["type"] == "UPDATE")
    assert [e["record"]["body"] for e in filtered.received("postgres_changes")] == ["keep", "kept"]
    for client in (everything, filtered, updates):
        await client.sio.disconnect()


async def test_bad_or_forbidden_change_subscriptions_are_refused(changes_server: RealtimeServer) -> None:
    client = await connect(changes_server, {"token": changes_server.user_token()})
    cases = {
        "postgres_changes:public:secrets_table": "REALTIME_UNAUTHORIZED",
        "postgres_changes:public:no_such_table": "REALTIME_UNAUTHORIZED",
        "postgres_changes:public:notes:body=like.x": "REALTIME_INVALID_CHANNEL_REQUEST",
        # A filter on a column the table does not have would never match: refused, not silent.
        "postgres_changes:public:notes:nope=eq.1": "REALTIME_INVALID_CHANNEL_REQUEST",
        "postgres_changes:public:secrets_table:nope=eq.1": "REALTIME_UNAUTHORIZED",
        "postgres_changes:auth:users": "REALTIME_INVALID_CHANNEL_REQUEST",
        "postgres_changes:public": "REALTIME_INVALID_CHANNEL_REQUEST",
    }
    for channel, code in cases.items():
        ack = await client.subscribe(channel)
        assert ack["ok"] is False, channel
        assert ack["error"]["code"] == code, channel
    bad_event: dict[str, Any] = await client.sio.call(
        "realtime:subscribe", {"channel": CHANNEL, "event": "TRUNCATE"}
    )
    assert bad_event["error"]["code"] == "REALTIME_INVALID_CHANNEL_REQUEST"
    await client.sio.disconnect()


async def test_the_slot_is_dropped_when_nobody_listens(
    changes_server: RealtimeServer, database_url: str
) -> None:
    client = await subscribed(changes_server, str(uuid.uuid4()))
    insert(database_url, str(uuid.uuid4()), "wakes the slot")
    feed = changes_server.app.services.realtime.changes
    with psycopg.connect(database_url, autocommit=True) as conn:
        slots = conn.execute("select slot_name from pg_replication_slots where slot_name = %s", (feed.slot,))
        assert slots.fetchone() is not None
        await client.sio.disconnect()
        for _ in range(400):
            gone = conn.execute("select 1 from pg_replication_slots where slot_name = %s", (feed.slot,))
            if gone.fetchone() is None:
                break
            conn.execute("select pg_sleep(0.025)")
        else:
            pytest.fail("the slot outlived its last subscriber by 10 s")


async def test_no_change_is_lost_across_a_restart(
    cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The first server stops mid-stream; what changes meanwhile reaches the client once it is back."""
    database_url = notes_database(cluster, "restart")
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("restart"),
        realtime=LIMITS.model_copy(update={"changes_idle_seconds": 60.0}),
    )
    owner = str(uuid.uuid4())
    first = UvicornThread(create_app(settings))
    first.start()
    server = RealtimeServer(first.url, first.app)
    client = await subscribed(server, owner)
    ids = [insert(database_url, owner, f"before {n}") for n in range(5)]
    await client.until("postgres_changes", lambda e: e["record"]["id"] == ids[-1])
    await client.sio.disconnect()
    first.stop()

    ids += [insert(database_url, owner, f"while down {n}") for n in range(5)]
    second = UvicornThread(create_app(settings), port=first.port)
    second.start()
    try:
        again = await subscribed(RealtimeServer(second.url, second.app), owner)
        ids += [insert(database_url, owner, f"after {n}") for n in range(5)]
        await again.until("postgres_changes", lambda e: e["record"]["id"] == ids[-1])
        received = {e["record"]["id"] for e in client.received("postgres_changes")}
        received |= {e["record"]["id"] for e in again.received("postgres_changes")}
        assert set(ids) <= received
        await again.sio.disconnect()
    finally:
        second.stop()


async def test_the_reader_sleeps_until_the_first_subscriber_then_delivers(
    cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nobody listening, the slot's reader does not look again and again (it counted listeners five
    times a second); the first subscription wakes it, and the changes after its ack arrive."""
    database_url = notes_database(cluster, "quiet")
    settings = Settings(database_url=database_url, data_dir=tmp_path_factory.mktemp("quiet"), realtime=LIMITS)
    thread = UvicornThread(create_app(settings))
    thread.start()
    try:
        feed: ChangeFeed = thread.app.services.realtime.changes
        for _ in range(400):
            if feed.leading:
                break
            await asyncio.sleep(0.025)
        looks = 0
        count_listeners = feed._listener_count

        async def counted() -> int:
            nonlocal looks
            looks += 1
            return await count_listeners()

        monkeypatch.setattr(feed, "_listener_count", counted)
        await asyncio.sleep(1.0)
        assert looks <= 1  # (one: the reader had not looked yet when the counting began)
        owner = str(uuid.uuid4())
        client = await subscribed(RealtimeServer(thread.url, thread.app), owner)
        note = insert(database_url, owner, "the first")
        event = await client.next("postgres_changes")
        assert event["record"]["id"] == note
        assert looks >= 2
        await client.sio.disconnect()
    finally:
        thread.stop()
