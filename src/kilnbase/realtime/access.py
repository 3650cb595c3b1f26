"""Who may subscribe to a channel and who may publish on it: Row Level Security decides, as the caller.

As in InsForge: subscribing is a SELECT of the enabled channel whose pattern matches, on `realtime.channels`;
publishing is an INSERT into `realtime.messages`; both run in a transaction with the caller's role and claims
and with `realtime.channel_name()` set to the channel, so a policy can name it. A channel that no enabled
pattern matches is refused the same way as one the policies close.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg.pq import TransactionStatus

from kilnbase.db.session import Database
from kilnbase.identity.principal import Principal

log = logging.getLogger("kilnbase.realtime")

_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_SET_CHANNEL = "select set_config('realtime.channel_name', %s, true)"
_CAN_SUBSCRIBE = (
    "select exists (select 1 from realtime.channels "
    "where enabled and (pattern = %s or %s like pattern)) as ok"
)
_SET_CALLER = (
    "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true), "
    "set_config('statement_timeout', %s, true), set_config('realtime.channel_name', %s, true)"
)
_INSERT = """
insert into realtime.messages (event_name, channel_id, channel_name, payload, sender_type, sender_id)
select m.event, matched.channel_id, %s, m.payload, %s, %s
from jsonb_to_recordset(%s::jsonb) as m(event text, payload jsonb),
     (select realtime.matching_channel(%s) as channel_id) matched
where matched.channel_id is not null
"""
_BATCH = 500


def sender_of(principal: Principal) -> tuple[str, str | None]:
    """InsForge's sender: an admin publishes as `system`, anyone else as `user`, with the user id when there
    is one (and it is a UUID, the column's type)."""
    if principal.is_admin:
        return "system", None
    user_id = principal.user_id if principal.db_role == "authenticated" else None
    return "user", user_id if user_id and _UUID.match(user_id) else None


@dataclass
class _Publish:
    principal: Principal
    channel: str
    event: str
    payload: dict[str, Any]
    done: asyncio.Future[bool]

    @property
    def group(self) -> str:
        """Messages that one statement may insert together: the same caller on the same channel."""
        claims = orjson.dumps(dict(self.principal.claims), option=orjson.OPT_SORT_KEYS).decode()
        return f"{self.principal.db_role}\0{claims}\0{self.channel}"


class ChannelAccess:
    """The subscribe check, and publishing with group commit: messages that arrive together are inserted in
    one transaction (each caller's and channel's rows in one statement under their role, claims and
    channel), so a burst costs one commit rather than one each. When a policy refuses a statement, its rows
    are retried one by one, so each message gets its own answer."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._queue: asyncio.Queue[_Publish] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    async def can_subscribe(self, principal: Principal, channel: str) -> bool:
        try:
            async with self.database.as_caller(principal, read_only=True) as cur:
                await cur.execute(_SET_CHANNEL, (channel,))
                await cur.execute(_CAN_SUBSCRIBE, (channel, channel))
            row = await cur.fetchone()
        except psycopg.Error as exc:
            log.debug("subscribe check failed for %s: %s", channel, type(exc).__name__)
            return False
        return bool(row and row["ok"])

    async def publish(self, principal: Principal, channel: str, event: str, payload: dict[str, Any]) -> bool:
        """Store the message as the caller (it is delivered when this commits); False when refused."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._write(), name="kilnbase-realtime-publish")
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Publish(principal, channel, event, payload, done))
        return await done

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        while worker is not None and not worker.done():
            worker.cancel()
            await asyncio.wait([worker], timeout=0.1)

    async def _write(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < _BATCH:
                batch.append(self._queue.get_nowait())
            groups: dict[str, list[_Publish]] = defaultdict(list)
            for item in batch:
                groups[item.group].append(item)
            try:
                inserted = await self._insert(list(groups.values()))
            except psycopg.Error:
                inserted = None
            if inserted is None:  # some statement was refused: each group, then each message, on its own
                inserted = {}
                for items in groups.values():
                    inserted.update(await self._insert_alone(items))
            for item in batch:
                if not item.done.done():
                    item.done.set_result(inserted.get(id(item), False))

    async def _insert_alone(self, items: list[_Publish]) -> dict[int, bool]:
        try:
            result = await self._insert([items])
            if result is not None:
                return result
        except psycopg.Error:
            pass
        if len(items) == 1:
            return {id(items[0]): False}
        outcome: dict[int, bool] = {}
        for item in items:
            outcome.update(await self._insert_alone([item]))
        return outcome

    async def _insert(self, groups: list[list[_Publish]]) -> dict[int, bool] | None:
        """One transaction for the groups; which messages were stored (None when a statement failed)."""
        cursors = []
        async with self.database.request_pool.connection() as conn:
            if not conn.autocommit:
                await conn.set_autocommit(True)
            try:
                async with conn.pipeline():
                    await conn.execute("BEGIN")
                    for items in groups:
                        first = items[0]
                        sender_type, sender_id = sender_of(first.principal)
                        await conn.execute(
                            _SET_CALLER,
                            (
                                first.principal.db_role,
                                orjson.dumps(dict(first.principal.claims)).decode(),
                                self.database.statement_timeout(first.principal.db_role),
                                first.channel,
                            ),
                        )
                        rows = [{"event": i.event, "payload": i.payload} for i in items]
                        cursors.append(
                            await conn.execute(
                                _INSERT,
                                (
                                    first.channel,
                                    sender_type,
                                    sender_id,
                                    orjson.dumps(rows).decode(),
                                    first.channel,
                                ),
                            )
                        )
                    await conn.execute("COMMIT")
            except psycopg.Error:
                if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                    await conn.rollback()
                return None
        outcome: dict[int, bool] = {}
        for items, cur in zip(groups, cursors, strict=True):
            stored = cur.rowcount == len(items)
            outcome.update({id(item): stored for item in items})
        return outcome
