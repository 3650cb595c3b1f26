"""Two server processes of one project (two apps over one database and the machine's Redis): a subscriber on
A receives what is published on B, and both see one presence per channel, joins and leaves included."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from kilnbase.app import create_app
from kilnbase.config import Settings
from tests.realtime.conftest import LIMITS, RealtimeServer, connect, unique
from tests.support.postgres import TestCluster
from tests.support.servers import ServerProcess
from tests.support.uvicorn_thread import UvicornThread

pytestmark = pytest.mark.anyio

REDIS_URL = "redis://127.0.0.1:6379/0"
#: Holders of the change feed's leader lock in this database (the cluster is shared by every test module).
LEADER_LOCKS = (
    "select count(*) from pg_locks where locktype = 'advisory' and objid = 7140140 "
    "and database = (select oid from pg_database where datname = current_database())"
)


@pytest.fixture(scope="module")
def pair(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealtimeServer, ...]]:
    """Both apps read one data directory, so they share the project's keys (and so its Redis prefix)."""
    data_dir = tmp_path_factory.mktemp("data")
    settings = Settings(
        database_url=database_url,
        data_dir=data_dir,
        realtime=LIMITS.model_copy(update={"redis_url": REDIS_URL}),
    )
    threads = [UvicornThread(create_app(settings)) for _ in range(2)]
    for thread in threads:
        thread.start()
    servers = tuple(RealtimeServer(thread.url, thread.app) for thread in threads)
    servers[0].channel("shared:%")
    servers[0].sql(
        "create policy shared_subscribe on realtime.channels for select to anon, authenticated "
        "using (pattern = 'shared:%'); "
        "create policy shared_publish on realtime.messages for insert to authenticated "
        "with check (realtime.channel_name() like 'shared:%')"
    )
    yield servers
    for thread in threads:
        thread.stop()


async def test_a_subscriber_on_one_process_receives_what_another_publishes(
    pair: tuple[RealtimeServer, RealtimeServer],
) -> None:
    a, b = pair
    channel = unique("shared")
    listener = await connect(a, {"token": a.anon_key})
    assert (await listener.subscribe(channel))["ok"] is True
    sender_id = str(uuid.uuid4())
    sender = await connect(b, {"token": b.user_token(sender_id)})
    ack = await sender.subscribe(channel)
    # B's ack lists the member on A: presence is shared.
    assert {m["presenceId"] for m in ack["presence"]["members"]} == {listener.sio.get_sid(), sender_id}
    joined = await listener.next("presence:join")
    assert joined["member"]["presenceId"] == sender_id

    await sender.sio.emit(
        "realtime:publish", {"channel": channel, "event": "hello", "payload": {"from": "b"}}
    )
    message = await listener.next("hello")
    assert message["from"] == "b"
    assert message["meta"]["senderId"] == sender_id
    # Exactly once on each side: the message is not also relayed through Redis.
    assert (await sender.next("hello"))["from"] == "b"

    await sender.sio.disconnect()
    left = await listener.next("presence:leave")
    assert left["member"]["presenceId"] == sender_id
    assert len(listener.received("hello")) == 1
    await listener.sio.disconnect()


async def test_one_user_on_both_processes_is_one_member(pair: tuple[RealtimeServer, RealtimeServer]) -> None:
    a, b = pair
    channel = unique("shared")
    watcher = await connect(a, {"token": a.anon_key})
    await watcher.subscribe(channel)
    user_id = str(uuid.uuid4())
    on_a = await connect(a, {"token": a.user_token(user_id)})
    on_b = await connect(b, {"token": b.user_token(user_id)})
    await on_a.subscribe(channel)
    ack = await on_b.subscribe(channel)
    assert sorted(m["presenceId"] for m in ack["presence"]["members"]) == sorted(
        [watcher.sio.get_sid(), user_id]
    )
    await on_a.sio.disconnect()
    await on_b.sio.emit("realtime:unsubscribe", {"channel": channel})
    left = await watcher.next("presence:leave")
    assert left["member"]["presenceId"] == user_id
    assert len(watcher.received("presence:join")) == 1
    await on_b.sio.disconnect()
    await watcher.sio.disconnect()


async def test_changes_are_decoded_once_and_reach_both_processes(
    pair: tuple[RealtimeServer, RealtimeServer], database_url: str
) -> None:
    a, b = pair
    a.sql(
        "create table if not exists scores (id bigint generated always as identity primary key, points int); "
        "create policy scores_read on scores for select to anon using (true)"
    )
    channel = "postgres_changes:public:scores"
    on_a = await connect(a, {"token": a.anon_key})
    on_b = await connect(b, {"token": b.anon_key})
    assert (await on_a.subscribe(channel))["ok"] is True
    assert (await on_b.subscribe(channel))["ok"] is True
    with psycopg.connect(database_url, autocommit=True) as conn:
        # One reader of the slot for the two processes: one holder of the leader's advisory lock.
        leaders = conn.execute(LEADER_LOCKS)
        assert leaders.fetchone() == (1,)
        first = conn.execute("insert into scores (points) values (1) returning id").fetchone()
        last = conn.execute("insert into scores (points) values (2) returning id").fetchone()
    assert first is not None and last is not None
    for client in (on_a, on_b):
        await client.until("postgres_changes", lambda e: e["record"]["id"] == last[0])
        assert [e["record"]["points"] for e in client.received("postgres_changes")] == [1, 2]
        await client.sio.disconnect()


async def test_serve_with_two_workers_shares_rooms_presence_and_changes(
    cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`kilnbase serve --workers 2` with Redis: two processes (two listeners in the database), one reader of
    the change slot, and every client gets each message and each change once, wherever it landed."""
    database_url = cluster.create_database("workers")
    server = ServerProcess(
        tmp_path_factory.mktemp("workers") / "data",
        env={"DATABASE_URL": database_url, "REDIS_URL": REDIS_URL},
        args=["--workers", "2"],
    )
    server.start()
    try:
        keys = json.loads((server.data_dir / "keys.json").read_text())
        admin = {"Authorization": f"Bearer {keys['api_key']}"}
        async with httpx.AsyncClient(base_url=server.url, headers=admin) as http:
            assert (await http.post("/api/realtime/channels", json={"pattern": "w:%"})).status_code == 201
            setup = (
                "create policy w_subscribe on realtime.channels for select to anon using (true); "
                "create table tallies (id int generated always as identity primary key, v int); "
                "create policy tallies_read on tallies for select to anon using (true)"
            )
            assert (await http.post("/api/database/advance/rawsql", json={"query": setup})).status_code == 200
        clients = []
        for _ in range(6):
            client = await connect(server.url, {"token": keys["anon_key"]})
            ack = await client.subscribe("w:1")
            assert (await client.subscribe("postgres_changes:public:tallies"))["ok"] is True
            clients.append(client)
        assert len(ack["presence"]["members"]) == 6
        publisher = await connect(server.url, {"apiKey": keys["api_key"]})
        await publisher.subscribe("w:1")
        await publisher.sio.emit("realtime:publish", {"channel": "w:1", "event": "tick", "payload": {"n": 1}})
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("insert into tallies (v) values (1), (2)")
            listeners = conn.execute(
                "select count(*) from pg_stat_activity where application_name = 'kilnbase-realtime' "
                "and datname = current_database()"
            ).fetchone()
            leaders = conn.execute(LEADER_LOCKS)
            assert leaders.fetchone() == (1,)
        assert listeners == (2,)
        for client in clients:
            await client.next("tick")
            await client.until("postgres_changes", lambda e: e["record"]["v"] == 2)
        await publisher.sio.emit("realtime:publish", {"channel": "w:1", "event": "tick", "payload": {"n": 2}})
        for client in clients:
            await client.until("tick", lambda m: m["n"] == 2)
            assert [m["n"] for m in client.received("tick")] == [1, 2]
            assert [e["record"]["v"] for e in client.received("postgres_changes")] == [1, 2]
            await client.sio.disconnect()
        await publisher.sio.disconnect()
    finally:
        server.stop()


async def test_the_slot_reader_counts_change_subscribers_on_every_process(
    cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The process that reads the slot keeps it while a subscriber on the other process listens (counted
    through Redis), and drops it once that subscriber has gone for `changes_idle_seconds`."""
    database_url = cluster.create_database("rtcount")
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        realtime=LIMITS.model_copy(update={"redis_url": REDIS_URL, "changes_idle_seconds": 0.5}),
    )
    threads = [UvicornThread(create_app(settings)) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        servers = [RealtimeServer(thread.url, thread.app) for thread in threads]
        servers[0].sql(
            "create table marks (id bigint generated always as identity primary key, n int); "
            "create policy marks_read on marks for select to anon using (true)"
        )
        feeds = [server.app.services.realtime.changes for server in servers]
        for _ in range(200):
            if any(feed.leading for feed in feeds):
                break
            await asyncio.sleep(0.025)
        follower = next(server for server, feed in zip(servers, feeds, strict=True) if not feed.leading)
        client = await connect(follower, {"token": follower.anon_key})
        assert (await client.subscribe("postgres_changes:public:marks"))["ok"] is True
        slot = "select count(*) from pg_replication_slots where slot_name = %s"
        with psycopg.connect(database_url, autocommit=True) as conn:
            await asyncio.sleep(
                1.5
            )  # three idle periods: a reader counting only its own would have dropped it
            assert conn.execute(slot, (feeds[0].slot,)).fetchone() == (1,)
            conn.execute("insert into marks (n) values (7)")
            event = await client.next("postgres_changes")
            assert event["record"]["n"] == 7
            await client.sio.disconnect()
            for _ in range(400):
                if conn.execute(slot, (feeds[0].slot,)).fetchone() == (0,):
                    break
                await asyncio.sleep(0.025)
            else:
                pytest.fail("the slot outlived the last subscriber by 10 s")
    finally:
        for thread in threads:
            thread.stop()


async def test_many_sockets_leaving_at_once_all_leave_their_room_and_presence(
    pair: tuple[RealtimeServer, RealtimeServer],
) -> None:
    """Each leave is a Redis call; two hundred at once must queue for connections, not fail, or the sockets
    would stay in the room (sent to, and counted, forever) and in the presence list."""
    a, b = pair
    channel = unique("shared:crowd")
    crowd = await asyncio.gather(*(connect(a, {"token": a.anon_key}) for _ in range(200)))
    for client in crowd:
        assert (await client.subscribe(channel))["ok"] is True
    sockets = a.app.services.realtime.sockets
    assert sockets.audience(channel) == 200
    await asyncio.gather(*(client.sio.disconnect() for client in crowd))
    for _ in range(400):
        if sockets.audience(channel) == 0:
            break
        await asyncio.sleep(0.025)
    assert sockets.audience(channel) == 0
    late = await connect(b, {"token": b.anon_key})
    ack = await late.subscribe(channel)
    assert [m["presenceId"] for m in ack["presence"]["members"]] == [late.sio.get_sid()]
    await late.sio.disconnect()
