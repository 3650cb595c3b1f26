"""The usage ledger: one row per request, written off the request path.

Rows (and the settlements of reservations) go into a queue; one task per process writes whatever has
accumulated, with one COPY, so many requests share one round trip, and a request never waits for its own
row. The writer lingers a few milliseconds after the first row of a batch, so that even a single client's
requests are written in batches (a row written alone cost the server more CPU than its whole request).
`flush()` waits until everything submitted so far is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

import orjson

from kilnbase.ai.limits import SETTLE_SQL, CounterStore, PostgresCounters
from kilnbase.db.session import Database
from kilnbase.redis_client import REDIS_DOWN

log = logging.getLogger("kilnbase.ai.ledger")


@dataclass
class UsageRecord:
    endpoint: str
    principal: str
    status: str = "ok"
    user_id: str | None = None
    key_id: str | None = None
    key_source: str | None = None
    provider: str | None = None
    requested_model: str | None = None
    model: str | None = None
    config_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    image_count: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_ms: int | None = None
    ttft_ms: int | None = None
    http_status: int | None = None
    streamed: bool = False
    cache_hit: bool = False
    error: str | None = None
    #: When the request ended (rows of one batch must not share the writer's transaction time).
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


_COLUMNS = tuple(UsageRecord.__dataclass_fields__)
#: Seconds between two prunings of expired quota counters (Redis expires its own).
_PRUNE_EVERY = 300.0
_COPY = f"copy ai.usage ({', '.join(_COLUMNS)}) from stdin"
_ROW = attrgetter(*_COLUMNS)
#: Seconds the writer waits after the first row of a batch for more to join it.
_LINGER = 0.01
_BATCH = 500


@dataclass
class _Batch:
    records: list[UsageRecord] = field(default_factory=list)
    settlements: list[dict[str, Any]] = field(default_factory=list)


class LedgerWriter:
    def __init__(self, database: Callable[[], Database], counters: CounterStore) -> None:
        self._database = database
        self._counters = counters
        self._pruned_at = time.monotonic()
        self._queue: asyncio.Queue[tuple[UsageRecord | None, list[dict[str, Any]]]] | None = None
        self._task: asyncio.Task[None] | None = None

    def submit(self, record: UsageRecord | None, settlement: list[dict[str, Any]] | None = None) -> None:
        """Queue a row and/or counter corrections. Never blocks, never raises."""
        if record is None and not settlement:
            return
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(self._queue), name="ai-ledger")
        self._queue.put_nowait((record, settlement or []))

    async def flush(self) -> None:
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        """Write everything queued, then stop the writer task."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = self._queue = None

    async def _run(self, queue: asyncio.Queue[tuple[UsageRecord | None, list[dict[str, Any]]]]) -> None:
        while True:
            first = await queue.get()
            taken = [first]
            if queue.qsize() < _BATCH:
                await asyncio.sleep(_LINGER)
            while not queue.empty() and len(taken) < _BATCH:
                taken.append(queue.get_nowait())
            batch = _Batch()
            for record, settlement in taken:
                if record is not None:
                    batch.records.append(record)
                batch.settlements.extend(settlement)
            try:
                await self._write(batch)
            except Exception:
                log.exception("could not write %d usage rows; retrying once", len(batch.records))
                try:
                    await asyncio.sleep(0.5)
                    await self._write(batch)
                except Exception:
                    log.exception("dropped %d usage rows", len(batch.records))
            finally:
                for _ in taken:
                    queue.task_done()
            if (
                isinstance(self._counters, PostgresCounters)
                and time.monotonic() - self._pruned_at > _PRUNE_EVERY
            ):
                self._pruned_at = time.monotonic()
                try:
                    await self._counters.prune()
                except Exception:
                    log.exception("could not prune old quota counters")

    async def _write(self, batch: _Batch) -> None:
        """The settlements in one statement, the rows in one COPY (autocommit, each its own transaction)."""
        in_postgres = isinstance(self._counters, PostgresCounters)
        if batch.settlements and not in_postgres:
            try:
                await self._counters.settle(batch.settlements)
            except REDIS_DOWN as exc:
                # The counters keep the reservations' estimates (they count high, never low); the usage rows
                # are the record and are written all the same.
                log.warning("could not settle quota counters: %s", type(exc).__name__)
        async with self._database().owner_pool.connection() as conn:
            if batch.settlements and in_postgres:
                await conn.execute(SETTLE_SQL, (orjson.dumps(batch.settlements).decode(),))
            if batch.records:
                async with conn.cursor() as cur, cur.copy(_COPY) as copy:
                    for record in batch.records:
                        await copy.write_row(_ROW(record))
