"""Database change events (InsForge has none): inserts, updates and deletes of a table, from logical decoding,
delivered as Supabase's `postgres_changes` payloads only to subscribers whose RLS lets them see the row.

- **Source.** The publication `kilnbase_realtime` (made empty by migration 0141, before any slot; a table
  joins it when first subscribed to, so tables nobody streams keep UPDATE and DELETE without a replica
  identity) and a `pgoutput` slot this project owns (`kilnbase_rt_<hash of the database name>`), read with
  `pg_logical_slot_peek_binary_changes` and advanced with `pg_replication_slot_advance` only after the batch
  was handed on. A server that stops or dies mid-stream therefore loses nothing: the next reader starts where
  the last confirmed batch ended (a batch may be delivered twice, never dropped). Nothing is added to the
  developer's tables.
- **Decoded once.** Of all the project's processes, only the holder of an advisory lock reads the slot. With
  Redis, it publishes each batch to every process; without, it delivers to its own sockets.
- **No unbounded WAL.** The slot exists only while someone listens: it is created when the first change
  subscription appears (anywhere, counted through Redis), left alone for `changes_idle_seconds` after the
  last one goes (so clients reconnecting after a restart get what happened meanwhile), then dropped.
- **Quiet while nobody listens.** The reader sleeps until a subscription wakes it (here, or published on
  Redis by another process), rather than counting listeners five times a second: that was a quarter of
  what an idle server woke up for. With Redis it also looks every heartbeat, in case a wake was missed
  while its Redis connection was down.
- **RLS, batched.** Each process checks the rows its own subscribers would receive: one transaction per batch
  and table, on the request pool, with one statement per distinct caller (role and claims), so a thousand
  anonymous subscribers cost one query, and a thousand signed-in users one round trip. An insert or update
  goes to a subscriber who can SELECT the row (as it is when checked); a delete, which has no row left to
  check, carries the primary key only and goes to every subscriber of the table (they were allowed to SELECT
  it when they subscribed). Tables without a primary key send no inserts or updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.pq import TransactionStatus

from kilnbase.config import RealtimeSettings
from kilnbase.db.session import Database
from kilnbase.identity.principal import Principal
from kilnbase.pg_listen import ConnectionLoss
from kilnbase.realtime.change_filter import PREFIX, BadSubscription, ChangeSubscription, parse_channel
from kilnbase.realtime.pgoutput import Decoder
from kilnbase.redis_client import REDIS_DOWN, connect_redis

log = logging.getLogger("kilnbase.realtime.changes")

PUBLICATION = "kilnbase_realtime"
APPLICATION_NAME = "kilnbase-realtime-changes"
#: The advisory lock whose holder reads the slot (per database).
_LEADER_LOCK = 7_140_140
_BATCH_CHANGES = 5000
_SLOT_EXISTS = "select count(*) from pg_replication_slots where slot_name = %s"
_RETRY_SECONDS = 1.0
_HEARTBEAT_SECONDS = 2.0
#: Published on Redis (`<prefix>changes:wake`) by a process whose first change subscriber just arrived.
_WAKE = b"wake"

Emit = Callable[[str, str, dict[str, Any]], Awaitable[None]]


class ChangesUnavailable(Exception):
    """Change events cannot run on this database (no publication, or `wal_level` is not logical)."""


@dataclass(frozen=True)
class Subscriber:
    sid: str
    channel: str
    subscription: ChangeSubscription
    principal: Principal

    @property
    def identity(self) -> str:
        return orjson.dumps(
            [self.principal.db_role, dict(self.principal.claims)], option=orjson.OPT_SORT_KEYS
        ).decode()


class ChangeFeed:
    def __init__(
        self,
        settings: RealtimeSettings,
        conninfo: str,
        database: Database,
        redis_url: str | None = None,
        prefix: str = "",
    ) -> None:
        self.settings = settings
        self._conninfo = conninfo
        self.database = database
        #: sid -> channel -> subscriber (this process's sockets).
        self._subscribers: dict[str, dict[str, Subscriber]] = {}
        self._emit: Emit | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._redis = connect_redis(redis_url) if redis_url else None
        self._channel = f"{prefix}changes"
        self._wake_channel = f"{prefix}changes:wake"
        #: A hash of process -> "<count> <expiry in epoch seconds>": one HGETALL counts every process's
        #: listeners (a key per process, found by SCAN, cost a round trip per ten keys of the whole Redis).
        self._listeners_key = f"{prefix}changes:listeners"
        self._host = uuid.uuid4().hex
        self.available = False
        self._loss = ConnectionLoss("change feed", log)
        #: The Redis subscription that brings other processes' changes: tried again less and less often
        #: while Redis is away, and said in the log once, once a minute, and once back (not every second).
        self._redis_loss = ConnectionLoss("change feed's Redis subscription", log)
        #: Set while this process holds the leader's lock (reads the slot).
        self._leading = asyncio.Event()
        #: Set when a change subscription arrives (here, or on another process): wakes an idle reader.
        self._subscribed = asyncio.Event()
        #: The slot's name (`kilnbase_rt_<hash of the database name>`), known once started.
        self.slot: str | None = None

    @property
    def leading(self) -> bool:
        """Whether this process reads the slot now (holds the leader's lock)."""
        return self._leading.is_set()

    def attach(self, emit: Emit) -> None:
        """Where events go: `emit(sid, channel, payload)` to one local socket."""
        self._emit = emit

    # --- subscriptions -------------------------------------------------------------------------------------

    @staticmethod
    def is_change_channel(channel: str) -> bool:
        return channel.startswith(PREFIX)

    async def subscribe(
        self, sid: str, principal: Principal, channel: str, event: Any
    ) -> tuple[str, str] | None:
        """Register the subscription; None when done, else the refusal's code and message."""
        try:
            subscription = parse_channel(channel, event)
        except BadSubscription as exc:
            return "REALTIME_INVALID_CHANNEL_REQUEST", str(exc)
        if not self.available:
            return "REALTIME_CONNECTION_FAILED", "Database change events are not available on this database."
        if self._redis is None and not await self._is_leader():
            return (
                "REALTIME_CONNECTION_FAILED",
                "Without Redis, change events are served by one process; set REDIS_URL to use several.",
            )
        if subscription.schema != "public":
            return "REALTIME_INVALID_CHANNEL_REQUEST", "Change events are published for tables in public."
        column = subscription.filter.column if subscription.filter is not None else None
        try:
            async with self.database.as_caller(principal, read_only=True) as cur:
                # (Whether the filter's column is there: a filter on no column would never match, and the
                # subscriber would wait for events that cannot come. Asked of a caller who may read the
                # table only, as Supabase's check of a filter's column is.)
                await cur.execute(
                    "select has_table_privilege(t, 'SELECT') as ok, %s::text is null or exists (select from "
                    "pg_attribute a where a.attrelid = t and a.attname = %s and a.attnum > 0 and not "
                    "a.attisdropped) as column_ok from (select to_regclass(quote_ident(%s) || '.' || "
                    "quote_ident(%s)) as t) r where t is not null",
                    (column, column, subscription.schema, subscription.table),
                )
            row = await cur.fetchone()
        except psycopg.Error:
            row = None
        if row is None or not row["ok"]:
            return "REALTIME_UNAUTHORIZED", "Not authorized to subscribe to this channel"
        if not row["column_ok"]:
            return (
                "REALTIME_INVALID_CHANNEL_REQUEST",
                f"The filter's column {column} is not a column of {subscription.table}: filter on one of its "
                "columns, or leave the filter out.",
            )
        if self._redis is not None:  # counted before the slot is made, so the reader cannot drop it meanwhile
            with contextlib.suppress(*REDIS_DOWN):
                await self._announce(self.local_count() + 1)
        refusal = await self._publish(subscription.schema, subscription.table)
        if refusal is not None:
            return "REALTIME_INVALID_CHANNEL_REQUEST", refusal
        try:
            await self._ensure_slot()
        except psycopg.Error as exc:
            log.warning("could not create the replication slot: %s", exc)
            return "REALTIME_CONNECTION_FAILED", "Database change events could not start."
        self._subscribers.setdefault(sid, {})[channel] = Subscriber(sid, channel, subscription, principal)
        # Woken once registered (counted), so that the reader finds someone listening when it looks.
        self._subscribed.set()
        if self._redis is not None and self.local_count() == 1:  # (with more, the reader already reads)
            with contextlib.suppress(*REDIS_DOWN):
                await self._redis.publish(self._wake_channel, _WAKE)
        return None

    async def _is_leader(self) -> bool:
        """Whether this process reads the slot (waiting a moment for a process that has just started)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._leading.wait(), timeout=2)
        return self.leading

    async def _publish(self, schema: str, table: str) -> str | None:
        """Add the table to the publication (once): only tables someone streams are in it, so no other table
        has UPDATE or DELETE refused for want of a replica identity. None when done, else why not."""
        async with self.database.owner_pool.connection() as conn:
            if not conn.autocommit:
                await conn.set_autocommit(True)
            cur = await conn.execute(
                "select c.relreplident <> 'n' and (c.relreplident <> 'd' or exists (select 1 from pg_index i "
                "where i.indrelid = c.oid and i.indisprimary)) as identified, exists (select 1 from "
                "pg_publication_tables p where p.pubname = %s and p.schemaname = %s and p.tablename = %s) "
                "as published from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                "where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p')",
                (PUBLICATION, schema, table, schema, table),
            )
            row = await cur.fetchone()
            if row is None:
                return "Change events are published for tables only."
            identified, published = row
            if published:
                return None
            if not identified:
                return (
                    f"Table {table} has no primary key: give it one (or REPLICA IDENTITY FULL) to stream its "
                    "changes."
                )
            with contextlib.suppress(psycopg.errors.DuplicateObject):
                await conn.execute(
                    sql.SQL("alter publication {} add table {}.{}").format(
                        sql.Identifier(PUBLICATION), sql.Identifier(schema), sql.Identifier(table)
                    )
                )
        return None

    async def _ensure_slot(self) -> None:
        """The slot exists once a subscription is acknowledged, so every change after the ack is decoded."""
        async with self.database.owner_pool.connection() as conn:
            if not conn.autocommit:
                await conn.set_autocommit(True)
            if await _scalar(conn, _SLOT_EXISTS, (self.slot,)):
                return
            with contextlib.suppress(psycopg.errors.DuplicateObject):
                await conn.execute("select pg_create_logical_replication_slot(%s, 'pgoutput')", (self.slot,))
                log.info("created replication slot %s", self.slot)

    def unsubscribe(self, sid: str, channel: str) -> None:
        channels = self._subscribers.get(sid)
        if channels is not None:
            channels.pop(channel, None)
            if not channels:
                del self._subscribers[sid]

    def forget(self, sid: str) -> None:
        self._subscribers.pop(sid, None)

    def local_count(self) -> int:
        return sum(len(channels) for channels in self._subscribers.values())

    # --- lifespan ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            async with self.database.as_owner() as cur:
                await cur.execute(
                    "select current_setting('wal_level') = 'logical' as logical, "
                    "exists (select 1 from pg_publication where pubname = %s) as published, "
                    "'kilnbase_rt_' || left(md5(current_database()), 16) as slot",
                    (PUBLICATION,),
                )
                row = await cur.fetchone()
        except psycopg.Error as exc:
            log.warning("change events unavailable: %s", type(exc).__name__)
            row = None
        self.available = bool(row and row["logical"] and row["published"])
        self.slot = row["slot"] if row else None
        if not self.available:
            log.warning(
                "change events are off: wal_level must be logical and publication %s exist", PUBLICATION
            )
            return
        self._spawn(self._lead(), "lead")
        if self._redis is not None:
            self._spawn(self._heartbeat(), "heartbeat")
            self._spawn(self._receive(), "receive")

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        task.set_name(f"kilnbase-realtime-changes-{name}")
        self._tasks.add(task)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, set()
        while any(not task.done() for task in tasks):
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=0.1)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.hdel(self._listeners_key, self._host)
            await self._redis.aclose()

    # --- listeners across processes ------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        assert self._redis is not None
        while True:
            with contextlib.suppress(*REDIS_DOWN):
                await self._announce(self.local_count())
            await asyncio.sleep(_HEARTBEAT_SECONDS)

    async def _announce(self, count: int) -> None:
        """This process's listener count, believed for three heartbeats (a process that dies stops counting
        then); the hash itself goes when no process has written it for that long."""
        assert self._redis is not None
        ttl = _HEARTBEAT_SECONDS * 3
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._listeners_key, self._host, f"{count} {time.time() + ttl:.3f}")
            pipe.expire(self._listeners_key, int(ttl) + 1)
            await pipe.execute()

    async def _listener_count(self) -> int:
        if self._redis is None:
            return self.local_count()
        try:
            entries = await self._redis.hgetall(self._listeners_key)
        except REDIS_DOWN:
            return self.local_count()
        others, expired, now = 0, [], time.time()
        for host, value in entries.items():
            count, _, expiry = _text(value).partition(" ")
            if float(expiry or 0) < now:
                expired.append(host)
            elif _text(host) != self._host:
                others += int(count)
        if expired:
            with contextlib.suppress(*REDIS_DOWN):
                await self._redis.hdel(self._listeners_key, *expired)
        return others + self.local_count()

    # --- the leader: read the slot, hand batches on --------------------------------------------------------

    async def _lead(self) -> None:
        while True:
            try:
                async with await AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name=APPLICATION_NAME
                ) as conn:
                    self._loss.connected()
                    while not await _scalar(conn, "select pg_try_advisory_lock(%s)", (_LEADER_LOCK,)):  # noqa: ASYNC110
                        await asyncio.sleep(self.settings.changes_poll_seconds * 20)
                    self._leading.set()
                    try:
                        await self._read_slot(conn)
                    finally:
                        self._leading.clear()
            except (psycopg.Error, OSError) as exc:
                await asyncio.sleep(self._loss.lost(exc))

    async def _read_slot(self, conn: AsyncConnection[Any]) -> None:
        slot = str(self.slot)
        decoder = Decoder()
        idle_since: float | None = None
        # The slot is looked for only when it matters: once nobody has listened for `changes_idle_seconds`
        # (and again after each such period: another process may have made it since), and when reading it
        # fails. Looking on every poll was most of what an idle server did.
        while True:
            self._subscribed.clear()  # (before counting: a subscription from now on wakes the wait below)
            if await self._listener_count() == 0:
                idle_since = idle_since or time.monotonic()
                wait = idle_since + self.settings.changes_idle_seconds - time.monotonic()
                if wait <= 0:
                    if await _scalar(conn, _SLOT_EXISTS, (slot,)):
                        await conn.execute("select pg_drop_replication_slot(%s)", (slot,))
                        log.info("dropped replication slot %s: nobody listens", slot)
                    idle_since = time.monotonic()
                    # (A second at least between looks at the slot, should `changes_idle_seconds` be 0.)
                    wait = max(self.settings.changes_idle_seconds, _RETRY_SECONDS)
                await self._wait_for_subscriber(wait)
                continue
            idle_since = None
            try:
                cur = await conn.execute(
                    "select lsn::text, data from pg_logical_slot_peek_binary_changes(%s, NULL, %s, "
                    "'proto_version', '1', 'publication_names', %s)",
                    (slot, _BATCH_CHANGES, PUBLICATION),
                )
            except psycopg.errors.UndefinedObject:
                await self._ensure_slot()  # (dropped while nobody listened; or never made)
                continue
            except psycopg.errors.ObjectInUse:
                # Another process is creating the slot (a subscription it acknowledges): read it once that
                # is done, keeping the lead, rather than dropping the connection and the lock for seconds.
                await asyncio.sleep(self.settings.changes_poll_seconds)
                continue
            rows = await cur.fetchall()
            if not rows:
                await asyncio.sleep(self.settings.changes_poll_seconds)
                continue
            changes = []
            for _lsn, data in rows:
                done = decoder.feed(bytes(data))
                if done:
                    changes.extend(done)
            batch = [
                {**change.as_payload(), "keyColumns": change.relation.key_columns, "key": change.key}
                for change in changes
            ]
            if batch:
                await self._dispatch(batch)
            await conn.execute("select pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, rows[-1][0]))

    async def _wait_for_subscriber(self, seconds: float) -> None:
        """Until a change subscription arrives, or `seconds` pass (or, with Redis, a heartbeat: another
        process's wake may have been published while this one's Redis connection was down)."""
        if self._redis is not None:
            seconds = min(seconds, _HEARTBEAT_SECONDS)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), seconds)

    async def _dispatch(self, batch: list[dict[str, Any]]) -> None:
        if self._redis is None:
            await self.handle(batch)
            return
        await self._redis.publish(self._channel, orjson.dumps(batch))

    async def _receive(self) -> None:
        assert self._redis is not None
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel, self._wake_channel)
                    self._redis_loss.connected()
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        if _text(message["channel"]) == self._wake_channel:
                            self._subscribed.set()
                        else:
                            await self.handle(orjson.loads(message["data"]))
            except REDIS_DOWN as exc:
                await asyncio.sleep(self._redis_loss.lost(exc))

    # --- every process: filter, check RLS, emit ------------------------------------------------------------

    async def handle(self, batch: list[dict[str, Any]]) -> None:
        by_table: dict[tuple[str, str], list[Subscriber]] = defaultdict(list)
        for channels in self._subscribers.values():
            for subscriber in channels.values():
                by_table[(subscriber.subscription.schema, subscriber.subscription.table)].append(subscriber)
        if not by_table:
            return
        changes_by_table: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for change in batch:
            if (change["schema"], change["table"]) in by_table:
                changes_by_table[(change["schema"], change["table"])].append(change)
        for table, changes in changes_by_table.items():
            await self._deliver_table(table, changes, by_table[table])

    async def _deliver_table(
        self, table: tuple[str, str], changes: list[dict[str, Any]], subscribers: list[Subscriber]
    ) -> None:
        wanted: list[tuple[Subscriber, dict[str, Any]]] = [
            (subscriber, change)
            for change in changes
            for subscriber in subscribers
            if subscriber.subscription.wants(change["type"], change["record"], change["old_record"])
        ]
        to_check = {(s.identity, tuple(c["key"])) for s, c in wanted if c["type"] != "DELETE" and c["key"]}
        visible: dict[str, set[tuple[str, ...]]] = {}
        if to_check:
            principals = {s.identity: s.principal for s, _ in wanted}
            keys_by_identity: dict[str, set[tuple[str, ...]]] = defaultdict(set)
            for identity, key in to_check:
                keys_by_identity[identity].add(key)
            visible = await self._visible(table, changes[0]["keyColumns"], keys_by_identity, principals)
        assert self._emit is not None
        for subscriber, change in wanted:
            checked = change["type"] != "DELETE"
            if checked and (
                not change["key"] or tuple(change["key"]) not in visible.get(subscriber.identity, ())
            ):
                continue
            payload = {k: v for k, v in change.items() if k not in ("keyColumns", "key")}
            await self._emit(subscriber.sid, subscriber.channel, payload)

    async def _visible(
        self,
        table: tuple[str, str],
        key_columns: list[str],
        keys_by_identity: dict[str, set[tuple[str, ...]]],
        principals: dict[str, Principal],
    ) -> dict[str, set[tuple[str, ...]]]:
        """Which of the keys each caller can SELECT: one transaction, one statement per caller."""
        relation = sql.Identifier(*table)
        columns = sql.SQL(", ").join(sql.Identifier(name) for name in key_columns)
        as_text = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(name)) for name in key_columns)
        query = sql.SQL(
            "select coalesce(json_agg(json_build_array({as_text})), '[]') from {relation} "
            "where ({columns}) in (select {columns} from json_populate_recordset(null::{relation}, %s::json))"
        ).format(as_text=as_text, relation=relation, columns=columns)
        identities = list(keys_by_identity)
        cursors: list[AsyncCursor[Any]] = []
        result: dict[str, set[tuple[str, ...]]] = {}
        try:
            async with self.database.request_pool.connection() as conn:
                if not conn.autocommit:
                    await conn.set_autocommit(True)
                try:
                    await self._pipeline(
                        conn, query, identities, keys_by_identity, key_columns, principals, cursors
                    )
                except BaseException:
                    if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                        await conn.rollback()
                    raise
                for identity, cur in zip(identities, cursors, strict=True):
                    row = await cur.fetchone()
                    result[identity] = {tuple(key) for key in (row[0] if row else [])}
        except psycopg.Error as exc:
            log.warning("change events: RLS check on %s.%s failed: %s", *table, type(exc).__name__)
            return {}
        return result

    async def _pipeline(
        self,
        conn: AsyncConnection[Any],
        query: sql.Composed,
        identities: list[str],
        keys_by_identity: dict[str, set[tuple[str, ...]]],
        key_columns: list[str],
        principals: dict[str, Principal],
        cursors: list[AsyncCursor[Any]],
    ) -> None:
        async with conn.pipeline():
            await conn.execute("BEGIN READ ONLY")
            for identity in identities:
                principal = principals[identity]
                await conn.execute(
                    "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true), "
                    "set_config('statement_timeout', %s, true)",
                    (
                        principal.db_role,
                        orjson.dumps(dict(principal.claims)).decode(),
                        self.database.statement_timeout(principal.db_role),
                    ),
                )
                rows = [dict(zip(key_columns, key, strict=True)) for key in keys_by_identity[identity]]
                cursors.append(await conn.execute(query, (orjson.dumps(rows).decode(),)))
            await conn.execute("COMMIT")


async def _scalar(conn: AsyncConnection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return row[0] if row else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
