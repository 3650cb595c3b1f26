"""From the database to subscribers: every stored message (from a client or from SQL) is delivered here.

`realtime.messages` fires `NOTIFY realtime_message, '<id>'` on insert; Postgres delivers it when the
transaction commits and never when it rolls back. Every process listens on a connection of its own and
broadcasts each message to its own sockets in the channel's room (so processes need nothing between them to
fan a message out), adding its audience to `ws_audience_count`. One process, the first to claim the row,
sends the channel's webhooks and writes `wh_audience_count` and `wh_delivered_count` back. Notifications that
arrive together are read in one query. A lost connection is retried, from every second to every 5 s
(`pg_listen.ConnectionLoss`); once it is back, the messages stored since shortly before it was lost are
read, and those this process has not delivered yet (it remembers the last `_REMEMBERED` ids) are delivered
then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from kilnbase.config import RealtimeSettings
from kilnbase.db.session import Database
from kilnbase.pg_listen import ConnectionLoss, notifications
from kilnbase.realtime.socket_server import RealtimeSocketServer
from kilnbase.realtime.webhooks import WebhookSender

log = logging.getLogger("kilnbase.realtime.delivery")

CHANNEL = "realtime_message"
APPLICATION_NAME = "kilnbase-realtime"
_BATCH = 500
_REMEMBERED = 20_000
#: How far before a lost connection to look for messages it may have missed (a message's `created_at` is its
#: transaction's start, which may come well before its commit).
_CATCH_UP_MARGIN_SECONDS = 120
_LOAD = """
select m.id::text as id, m.event_name as "eventName", m.channel_name as "channelName", m.payload,
       m.sender_type as "senderType", m.sender_id::text as "senderId", c.webhook_urls as "webhookUrls"
from realtime.messages m join realtime.channels c on c.id = m.channel_id
where m.id = any(%s::uuid[]) and c.enabled
order by m.created_at, m.id
"""
_COUNT = """
update realtime.messages m set ws_audience_count = m.ws_audience_count + c.n
from unnest(%s::uuid[], %s::int[]) as c(id, n) where m.id = c.id
"""
#: The process that claims a message sends its webhooks (every process hears every message).
_CLAIM_WEBHOOKS = """
update realtime.messages set webhooks_claimed_at = now()
where id = any(%s::uuid[]) and webhooks_claimed_at is null returning id::text as id
"""


class MessageDelivery:
    def __init__(
        self,
        settings: RealtimeSettings,
        conninfo: str,
        database: Database,
        sockets: RealtimeSocketServer,
        webhooks: WebhookSender,
    ) -> None:
        self.settings = settings
        self._conninfo = conninfo
        self.database = database
        self.sockets = sockets
        self.webhooks = webhooks
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listening = asyncio.Event()
        self._secret = ""
        #: Ids of the messages delivered lately (insertion-ordered), so catching up sends nothing twice.
        self._delivered: dict[str, None] = {}
        self._lost_at: float | None = None
        self._loss = ConnectionLoss("realtime listener", log)

    async def start(self) -> None:
        async with self.database.as_owner() as cur:
            await cur.execute("select webhook_secret from realtime.config")
            row = await cur.fetchone()
        self._secret = str(row["webhook_secret"]) if row else ""
        for name, work in (
            ("listen", self._listen()),
            ("deliver", self._deliver()),
            ("sweep", self._sweep()),
        ):
            self._tasks.add(asyncio.create_task(work, name=f"kilnbase-realtime-{name}"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), timeout=10)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        # As in `EndedSessions.stop`: cancelled until done (psycopg's waits may drop one cancellation).
        while any(not task.done() for task in tasks):
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=0.1)
        await self.webhooks.close()

    async def _listen(self) -> None:
        while True:
            try:
                async with await AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name=APPLICATION_NAME
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if self._lost_at is not None:
                        await self._catch_up(conn, self._lost_at)
                        self._lost_at = None
                    self._loss.connected()
                    self._listening.set()
                    async for notify in notifications(conn):
                        self._queue.put_nowait(notify.payload)
            except (psycopg.Error, OSError) as exc:
                pause = self._loss.lost(exc)
                if self._lost_at is None:
                    self._lost_at = time.time()
                self._listening.set()
                await asyncio.sleep(pause)

    async def _catch_up(self, conn: AsyncConnection[Any], lost_at: float) -> None:
        """Queue what was stored while the connection was away and has not been delivered here."""
        cur = await conn.execute(
            "select id::text from realtime.messages where created_at >= to_timestamp(%s) "
            "order by created_at, id",
            (lost_at - _CATCH_UP_MARGIN_SECONDS,),
        )
        for (message_id,) in await cur.fetchall():
            if message_id not in self._delivered:
                self._queue.put_nowait(message_id)

    def _remember(self, ids: list[str]) -> None:
        for message_id in ids:
            self._delivered[message_id] = None
        while len(self._delivered) > _REMEMBERED:
            del self._delivered[next(iter(self._delivered))]

    async def _deliver(self) -> None:
        while True:
            ids = [await self._queue.get()]
            while not self._queue.empty() and len(ids) < _BATCH:
                ids.append(self._queue.get_nowait())
            try:
                await self.deliver(ids)
            except (psycopg.Error, OSError) as exc:
                log.error("realtime delivery of %d messages failed: %s", len(ids), type(exc).__name__)

    async def deliver(self, ids: list[str]) -> None:
        ids = [message_id for message_id in dict.fromkeys(ids) if message_id not in self._delivered]
        if not ids:
            return
        # Plain statements on autocommit connections, not `as_owner`'s transactions: a reader needs none, and
        # BEGIN and COMMIT were two of the three round trips per batch.
        pool = self.database.owner_pool
        async with pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_LOAD, (ids,))
            messages = await cur.fetchall()
        self._remember(ids)
        if not messages:
            return
        counted: list[str] = []
        audiences: list[int] = []
        for message in messages:
            audience = self.sockets.audience(message["channelName"])
            if audience:
                await self.sockets.broadcast(message)
                counted.append(message["id"])
                audiences.append(audience)
        with_hooks = [m["id"] for m in messages if m["webhookUrls"]]
        if not counted and not with_hooks:
            return
        claimed: set[str] = set()
        async with pool.connection() as conn, conn.pipeline(), conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            # Delivery counts are statistics: not worth a wait for the disk. (One round trip: pipelined.)
            await cur.execute("set local synchronous_commit = off")
            if counted:
                await cur.execute(_COUNT, (counted, audiences))
            if with_hooks:
                await cur.execute(_CLAIM_WEBHOOKS, (with_hooks,))
                claimed = {row["id"] for row in await cur.fetchall()}
        for message in messages:
            if message["id"] in claimed:
                task = asyncio.create_task(self._send_webhooks(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send_webhooks(self, message: dict[str, Any]) -> None:
        urls = list(message["webhookUrls"])
        delivered = await self.webhooks.send_all(urls, message, self._secret)
        try:
            async with self.database.as_owner() as cur:
                await cur.execute(
                    "update realtime.messages set wh_audience_count = %s, wh_delivered_count = %s "
                    "where id = %s",
                    (len(urls), delivered, message["id"]),
                )
        except psycopg.Error as exc:
            log.error("could not record webhook delivery of %s: %s", message["id"], type(exc).__name__)

    async def _sweep(self) -> None:
        """Retention: delete messages older than `retentionDays`, now and then (every process; idempotent)."""
        while True:
            try:
                async with self.database.as_owner() as cur:
                    await cur.execute("select realtime.cleanup_messages()")
            except psycopg.Error as exc:
                log.warning("realtime retention sweep failed: %s", type(exc).__name__)
            await asyncio.sleep(self.settings.retention_sweep_seconds)
