"""The API's request log, kept where every process can read it: `system.request_logs`.

On a request's path the cost is one `deque.append` of the fields the middleware already logs (method, path,
status, duration, role: no headers, no query string, no body, so no credential). A task of each process
writes what gathered a second after the first line of it (`request_log_flush_seconds`) with one COPY, and
trims the table to `request_log_rows` rows; with no request it sleeps, rather than waking every second to
find nothing. The buffer is bounded: under a load the database cannot absorb, the oldest lines are dropped,
and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any

import psycopg

from kilnbase.config import LogsSettings
from kilnbase.db.session import Database

log = logging.getLogger("kilnbase.logs")

_COPY = "copy system.request_logs (created_at, method, path, status, duration_ms, role) from stdin"
_TRIM = "delete from system.request_logs where id <= (select max(id) from system.request_logs) - %s"
#: Longest path kept (a client chooses its paths).
_PATH_CHARS = 2048


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(batch: Iterable[tuple[float, dict[str, Any]]]) -> str:
    """The batch as rows in COPY's text format. A batch holds a second or two of requests, mostly of the
    same few methods, paths and roles: each second's timestamp and each (method, path, role)'s escaped text
    are made once per batch, and a row is put together around them (formatting a timestamp costs more than
    the rest of the row)."""
    seconds: dict[int, str] = {}
    texts: dict[tuple[Any, Any, Any], tuple[str, str]] = {}
    rows: list[str] = []
    for created, fields in batch:
        second = int(created)
        stamp = seconds.get(second)
        if stamp is None:
            stamp = seconds[second] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
        key = (fields["method"], fields["path"], fields["role"])
        text = texts.get(key)
        if text is None:
            # (The path is cut before it is escaped: a cut escape would escape COPY's delimiter.)
            method, path, role = (
                str(value).translate(_COPY_ESCAPES) for value in (key[0], str(key[1])[:_PATH_CHARS], key[2])
            )
            text = texts[key] = (f"+00\t{method}\t{path}\t", f"\t{role}\n")
        status, duration = int(fields["status"]), float(fields["duration_ms"])
        rows.append(f"{stamp}.{int(created % 1 * 1_000_000):06d}{text[0]}{status}\t{duration}{text[1]}")
    return "".join(rows)


class RequestLog:
    def __init__(self, settings: LogsSettings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self._lines: deque[tuple[float, dict[str, Any]]] = deque(maxlen=settings.request_log_buffer)
        self.dropped = 0
        self._write_lock = asyncio.Lock()
        #: Set by the first line into an empty buffer: the writer waits for it.
        self._arrived = asyncio.Event()

    def append(self, fields: dict[str, Any]) -> None:
        """The middleware's callback, once per request (the dict is not changed after)."""
        if self.settings.request_log_rows == 0:
            return
        lines = self._lines
        if not lines:
            self._arrived.set()
        elif len(lines) == lines.maxlen:
            self.dropped += 1
        lines.append((time.time(), fields))

    async def flush(self) -> None:
        """Write what gathered so far (readers call it first, so that they see this process's requests)."""
        async with self._write_lock:
            if not self._lines:
                return
            batch = [self._lines.popleft() for _ in range(len(self._lines))]
            text = copy_text(batch)
            async with self.database.as_owner() as cur:
                async with cur.copy(_COPY) as copy:
                    await copy.write(text.encode())
                await cur.execute(_TRIM, (self.settings.request_log_rows,))

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            await asyncio.sleep(self.settings.request_log_flush_seconds)
            self._arrived.clear()  # (a line into the buffer this flush empties sets it again)
            try:
                await self.flush()
            except (psycopg.Error, OSError) as exc:
                log.warning("request log not written: %s", exc.__class__.__name__)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self._run(), name="kilnbase-request-log")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(psycopg.Error, OSError):
                await self.flush()
