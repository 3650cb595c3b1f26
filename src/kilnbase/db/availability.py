"""Whether the database answers, so that a request meets a database outage with a 503 at once.

Without this, a request made while Postgres is gone (killed, restarting, unreachable) waited the pool's whole
30 s for a connection that never came, then failed as a 500 (or a 400, where a surface took any error for the
caller's). And when Postgres came back, psycopg's pool retried with a backoff that grows to minutes, so the
server went on failing long after the database was up again.

Here the pools report what they see (a connection that broke, a wait for a connection that timed out); one
probe then connects on its own, and while it cannot, every request for a connection fails at once with
`DatabaseUnavailable`, which every surface answers with 503 and `Retry-After`. The probe goes on once a
second; when it connects again, the pools drop their broken connections and connect anew, at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import psycopg
from psycopg_pool import PoolTimeout

log = logging.getLogger("kilnbase.db")

#: Seconds between two probes while the database is down (also the `Retry-After` a refused caller is given).
PROBE_SECONDS = 1.0
#: The `Retry-After` header's value (whole seconds) for a caller refused while the database is down.
RETRY_AFTER = str(max(1, round(PROBE_SECONDS)))
#: How long one probe may wait to connect.
PROBE_CONNECT_SECONDS = 3


class DatabaseUnavailable(PoolTimeout):
    """No connection can be had: the database is down or out of reach. A `PoolTimeout`, so that code waiting
    for a connection handles it as it handles a wait that ran out."""


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached, rather than that a statement failed: no
    connection came (`PoolTimeout`), the connection broke (no SQLSTATE: no server answered), a connection
    was refused (class 08) or the server is shutting down or starting (57P01-57P03). An error the server
    sent at ERROR severity is a statement's, whatever its SQLSTATE: the session goes on (a function, dblink
    or postgres_fdw raising 08006 or 57P01 about another server)."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    sqlstate = exc.sqlstate
    if sqlstate == "08P01":  # a protocol violation (say, too few bind parameters) is the statement's
        return False
    if sqlstate is not None and exc.diag.severity_nonlocalized == "ERROR":
        return False
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03")


class DatabaseAvailability:
    """What the pools of one database know about it being up; one probe at a time finds out for sure."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        #: Wall-clock time the database was found down, or None while it answers.
        self.down_since: float | None = None
        self._probe: asyncio.Task[None] | None = None
        self._on_recovery: list[Callable[[], Awaitable[None]]] = []
        self._closed = False

    def on_recovery(self, callback: Callable[[], Awaitable[None]]) -> None:
        """`callback` runs when the database answers again after an outage (a pool drops its dead
        connections)."""
        self._on_recovery.append(callback)

    def raise_if_down(self) -> None:
        if self.down_since is not None:
            raise DatabaseUnavailable(
                "The database is not reachable (since "
                f"{time.strftime('%H:%M:%S', time.localtime(self.down_since))})"
            )

    def suspect(self) -> None:
        """A connection broke or could not be had: find out whether the database is there (in the
        background; the caller's own error is answered meanwhile)."""
        if self._closed or (self._probe is not None and not self._probe.done()):
            return
        with contextlib.suppress(RuntimeError):  # (no running loop: the server is stopping)
            self._probe = asyncio.get_running_loop().create_task(self._watch(), name="database probe")

    async def close(self) -> None:
        self._closed = True
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe

    async def _answers(self) -> bool:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, connect_timeout=PROBE_CONNECT_SECONDS, autocommit=True
            )
        except psycopg.Error:
            return False
        async with conn:
            with contextlib.suppress(psycopg.Error):
                await conn.execute("select 1")
                return True
        return False

    async def _watch(self) -> None:
        if await self._answers():
            return  # one connection broke, not the database
        self.down_since = time.time()
        log.error(
            "The database is not reachable: requests answer 503 until it is back (checked every %g s). "
            "Check that PostgreSQL is running.",
            PROBE_SECONDS,
        )
        while True:
            await asyncio.sleep(PROBE_SECONDS)
            if await self._answers():
                break
        outage = time.time() - self.down_since
        for callback in self._on_recovery:
            try:
                await callback()
            except Exception as exc:  # a pool that cannot check its connections now does on its next use
                log.warning("after the outage, a pool could not check its connections: %r", exc)
        self.down_since = None
        log.warning("The database is reachable again, after %.1f s", outage)
