"""A process-local view of some rows, kept current by Postgres `LISTEN/NOTIFY`.

Several things a request checks on its hot path (ended sessions, agent keys) live in the database but must
not cost a round trip per request. Each process keeps a view in memory: it LISTENs on a channel of its own
connection, then (after LISTEN, so nothing that changes from then on can be missed) loads what it needs,
and applies every notification. A lost connection is retried, less and less often (`ConnectionLoss`), and
reloads on reconnect.

Every listener of the server (these views, the schema cache, realtime delivery, the functions runtime) reads
its notifications through `notifications`, which sleeps until Postgres sends something.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import psycopg
from psycopg import AsyncConnection, Notify
from redis.backoff import AbstractBackoff, EqualJitterBackoff

log = logging.getLogger("kilnbase.listen")

#: While a connection stays lost, how often its listener says so again.
STILL_LOST_LOG_SECONDS = 60.0
#: The pause before a lost listener's first try, doubled after each failed one up to `RETRY_MOST_SECONDS`.
RETRY_FIRST_SECONDS = 1.0
#: Kept short: once the database is back, a listener still in its pause misses what happens meanwhile
#: (another worker's revocation of a session, a realtime message) until it connects and reloads, so the
#: pause bounds how long a revoked token may still pass here and how long delivery lags the database.
RETRY_MOST_SECONDS = 5.0
#: Failed tries past this many pause as long as this many (the cap, well before then).
_MOST_COUNTED_FAILURES = 32


def retry_backoff() -> AbstractBackoff:
    """The pauses between a lost listener's tries: `compute(n)`, after n failed tries, is between half and
    all of `RETRY_FIRST_SECONDS * 2**n`, capped at `RETRY_MOST_SECONDS` (redis-py's equal jitter: a
    dependency already, and the formula of AWS's "Exponential Backoff And Jitter"). The jitter keeps the
    five listeners of each worker, and the workers, from all knocking at the same moment."""
    # (EqualJitterBackoff halves the bound: the first pause is between 0.5 and 1 s.)
    return EqualJitterBackoff(cap=RETRY_MOST_SECONDS, base=RETRY_FIRST_SECONDS)


class ConnectionLoss:
    """What one of the server's own connections (a listener's) does when it is lost: when to try again, and
    what to say in the log. The pause grows from a second to 5 s (`retry_backoff`) while the tries fail and
    starts over once one connects: tried every second, an outage of minutes cost the database five
    connection attempts a second from each worker, for nothing; a pause of minutes would leave the process
    behind the database for as long once it is back. The log says it once when the connection
    goes, once a minute while it stays away, once when it is back: logging every retry was five lines a
    second for the whole of an outage, which buried the one line that says what happened
    (`db/availability.py` says when the database went and came back)."""

    def __init__(
        self,
        name: str,
        logger: logging.Logger,
        still_lost_every: float = STILL_LOST_LOG_SECONDS,
        backoff: AbstractBackoff | None = None,
    ) -> None:
        self.name = name
        self._log = logger
        self._still_lost_every = still_lost_every
        self._backoff = backoff or retry_backoff()
        self._failures = 0
        self._lost_at: float | None = None
        self._logged_at = 0.0

    def lost(self, exc: BaseException) -> float:
        """Note a failed or broken connection; the seconds to wait before trying again."""
        delay = self._backoff.compute(self._failures)
        # (Counted no further than the cap needs: after ~1,000 failed tries, an hour of outage, the backoff's
        # `2**failures` no longer fits in a float, and the OverflowError would end the listener for good.)
        self._failures = min(self._failures + 1, _MOST_COUNTED_FAILURES)
        now = time.monotonic()
        if self._lost_at is None:
            self._lost_at = self._logged_at = now
            self._log.warning(
                "%s lost its connection (%s); retrying in %.1f s, then less often (every %g s at most)",
                self.name,
                _named(exc),
                delay,
                RETRY_MOST_SECONDS,
            )
        elif now - self._logged_at >= self._still_lost_every:
            self._logged_at = now
            self._log.warning(
                "%s has had no connection for %.0f s (%s); still retrying, next in %.0f s",
                self.name,
                now - self._lost_at,
                _named(exc),
                delay,
            )
        return delay

    def connected(self) -> None:
        """A connection was made: the next loss starts over from the shortest pause."""
        self._failures = 0
        if self._lost_at is not None:
            self._log.warning("%s connected again after %.1f s", self.name, time.monotonic() - self._lost_at)
            self._lost_at = None


def _named(exc: BaseException) -> str:
    """The error's class and first line: what went wrong, without the libpq text's further lines."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


async def notifications(conn: AsyncConnection[Any]) -> AsyncIterator[Notify]:
    """The notifications a connection that LISTENs receives, as `conn.notifies()` yields them, for as long as
    the connection lives (a lost one raises `psycopg.OperationalError`).

    Not `conn.notifies()` itself: it wakes every 100 ms to look again (psycopg's interval, which lets a
    blocking program see Ctrl-C), and with five listeners in each worker that was half of an idle server's
    CPU. Here the socket is watched until it is readable, and only then is the input read. What psycopg
    received while the connection ran other statements (the LISTEN, a load) comes first, through
    `notifies()`, which alone can hand it over."""
    async for notify in conn.notifies(timeout=0):
        yield notify
    pgconn = conn.pgconn
    encoding = conn.info.encoding
    loop = asyncio.get_running_loop()
    while True:
        # libpq may hold a notification it has read but not handed out yet: the socket would never say so.
        while (received := pgconn.notifies()) is not None:
            yield Notify(received.relname.decode(encoding), received.extra.decode(encoding), received.be_pid)
        readable = loop.create_future()
        socket = pgconn.socket
        loop.add_reader(socket, _settle, readable)
        try:
            await readable
        finally:
            loop.remove_reader(socket)
        pgconn.consume_input()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ListenedView(ABC):
    """Subclasses say what to load on (re)connect and what to do with a notification's payload."""

    channel: str
    application_name: str

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._loss = ConnectionLoss(self.application_name, log)

    @abstractmethod
    async def load(self, conn: AsyncConnection[Any]) -> None:
        """Read what the view holds, on the listener's connection, after LISTEN."""

    @abstractmethod
    def heard(self, payload: str) -> Awaitable[None] | None:
        """A notification arrived; return an awaitable to run before the next one (a reload), or None."""

    async def start(self) -> None:
        """Start listening; returns once the first load is done (or failed: the listener keeps retrying)."""
        self._listener = asyncio.create_task(self._listen(), name=self.application_name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), timeout=10)

    async def stop(self) -> None:
        listener, self._listener = self._listener, None
        # Cancelled until it is done: Python 3.11's `asyncio.wait_for` (which psycopg waits with) drops a
        # cancellation that arrives as its inner wait completes, and the listener would then listen on.
        while listener is not None and not listener.done():
            listener.cancel()
            await asyncio.wait([listener], timeout=0.1)

    async def _listen(self) -> None:
        while True:
            try:
                async with await AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name=self.application_name
                ) as conn:
                    await conn.execute(f"LISTEN {self.channel}")
                    await self.load(conn)
                    self._loss.connected()
                    self._listening.set()
                    async for notify in notifications(conn):
                        follow_up = self.heard(notify.payload)
                        if follow_up is not None:
                            await follow_up
            except (psycopg.Error, OSError) as exc:
                pause = self._loss.lost(exc)
                self._listening.set()  # start() must not wait for a database that is away
                await asyncio.sleep(pause)
