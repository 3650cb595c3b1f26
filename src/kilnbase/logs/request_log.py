"""The API's request log, kept where every process can read it: `system.request_logs`.

On a request's path the cost is one `deque.append` of the fields the middleware already logs (method, path,
status, duration, role: no headers, no query string, no body, so no credential). A task of each process
writes what gathered once a second with one COPY, and trims the table to `request_log_rows` rows. The buffer
is bounded: under a load the database cannot absorb, the oldest lines are dropped, and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
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


def _copy_line(created: float, fields: dict[str, Any], seconds: dict[int, str]) -> str:
    """One row in COPY's text format; `seconds` remembers each second's formatted text (a batch holds a
    second or two of requests, and formatting a timestamp costs more than the rest of the line)."""
    second = int(created)
    stamp = seconds.get(second)
    if stamp is None:
        stamp = seconds[second] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
    moment = f"{stamp}.{int(created % 1 * 1_000_000):06d}+00"
    path = str(fields["path"])[:_PATH_CHARS].translate(_COPY_ESCAPES)
    method = str(fields["method"]).translate(_COPY_ESCAPES)
    status, duration = int(fields["status"]), float(fields["duration_ms"])
    return f"{moment}\t{method}\t{path}\t{status}\t{duration}\t{fields['role']}\n"


class RequestLog:
    def __init__(self, settings: LogsSettings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self._lines: deque[tuple[float, dict[str, Any]]] = deque(maxlen=settings.request_log_buffer)
        self.dropped = 0
        self._write_lock = asyncio.Lock()

    def append(self, fields: dict[str, Any]) -> None:
        """The middleware's callback, once per request (the dict is not changed after)."""
        if self.settings.request_log_rows == 0:
            return
        if len(self._lines) == self._lines.maxlen:
            self.dropped += 1
        self._lines.append((time.time(), fields))

    async def flush(self) -> None:
        """Write what gathered so far (readers call it first, so that they see this process's requests)."""
        async with self._write_lock:
            if not self._lines:
                return
            batch = [self._lines.popleft() for _ in range(len(self._lines))]
            seconds: dict[int, str] = {}
            text = "".join(_copy_line(created, fields, seconds) for created, fields in batch)
            async with self.database.as_owner() as cur:
                async with cur.copy(_COPY) as copy:
                    await copy.write(text.encode())
                await cur.execute(_TRIM, (self.settings.request_log_rows,))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.request_log_flush_seconds)
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
