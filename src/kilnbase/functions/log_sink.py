"""Function logs into `functions.logs`: lines are queued as workers print them and written in batches, off
the invocation's path. A full queue drops lines (and says how many) rather than slow the functions down."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kilnbase.db.session import Database

log = logging.getLogger("kilnbase.functions")

MAX_QUEUED = 20_000
BATCH = 2000
FLUSH_SECONDS = 0.2
MAX_MESSAGE = 8192
#: COPY, not INSERT: the functions host can log tens of thousands of invocations a second.
_COPY = "copy functions.logs (slug, request_id, level, message, status, duration_ms) from stdin"

Row = tuple[str, str | None, str, str, int | None, float | None]


class LogSink:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._rows: list[Row] = []
        self._waiting = asyncio.Event()  # set by the first row that waits
        self._full = asyncio.Event()  # set when a batch is full
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def line(self, slug: str, request_id: str | None, level: str, message: str) -> None:
        # (Postgres text holds no NUL: one would fail the whole batch.)
        self.add((slug, request_id, level[:16], message[:MAX_MESSAGE].replace("\x00", "\ufffd"), None, None))

    def invocation(self, slug: str, request_id: str, message: str, status: int, duration_ms: float) -> None:
        level = "error" if status >= 500 else "info"
        text = message[:MAX_MESSAGE].replace("\x00", "\ufffd")
        self.add((slug, request_id, level, text, status, round(duration_ms, 3)))

    def add(self, row: Row) -> None:
        if len(self._rows) >= MAX_QUEUED:
            self.dropped += 1
            return
        self._rows.append(row)
        if len(self._rows) == 1:
            self._waiting.set()
        if len(self._rows) >= BATCH:
            self._full.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kilnbase-function-logs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        """Rows are written at most FLUSH_SECONDS after the first of them arrived, or as soon as a batch is
        full; with none waiting, nothing wakes (an idle server does no work for its function logs)."""
        while True:
            await self._waiting.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), FLUSH_SECONDS)
            self._waiting.clear()
            self._full.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not write function logs")

    async def flush(self) -> None:
        while self._rows:
            batch, self._rows = self._rows[:BATCH], self._rows[BATCH:]
            if self.dropped:
                dropped, self.dropped = self.dropped, 0
                batch.append(
                    ("-", None, "warn", f"{dropped} log lines were dropped (queue full)", None, None)
                )
            async with self.database.as_owner() as cur, cur.copy(_COPY) as copy:
                for row in batch:
                    await copy.write_row(row)
