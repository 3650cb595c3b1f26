"""Which sessions have ended lately, as this process knows it: checked on every request that carries an
access token, so a token of a signed-out, revoked, reset or deleted session stops working everywhere within
moments instead of at its expiry.

An access token names its session (`sid`, the refresh-token family). Checking the database per request would
put a round trip on every request; instead each process holds the set of session ids ended within the last
access-token lifetime (older ones cannot have an unexpired token) and the check is one set lookup.

The set is filled three ways: at start and after every reconnect from the database
(`auth.recently_ended_sessions`), from `NOTIFY kilnbase_sessions_ended`, sent by triggers on `auth.sessions`
when a session is revoked or deleted (migration 0051) and heard on a connection of its own, and at once by
this process's own revocations (`add`), so the caller's very next request is refused even before the
notification arrives. A lost connection is retried every second; what ended meanwhile is read on reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

import psycopg
from psycopg import AsyncConnection

log = logging.getLogger("kilnbase.identity")

CHANNEL = "kilnbase_sessions_ended"
#: How the listener's connection shows in `pg_stat_activity`.
APPLICATION_NAME = "kilnbase-ended-sessions"
#: Seconds added to the access-token lifetime before an ended session is forgotten (clock skew, leeway).
_MARGIN_SECONDS = 60
_RETRY_SECONDS = 1.0


class EndedSessions:
    def __init__(self, conninfo: str, access_token_seconds: int) -> None:
        self._conninfo = conninfo
        self._remember_seconds = access_token_seconds + _MARGIN_SECONDS
        #: Session id -> when this process learned it ended (monotonic seconds).
        self._ended: dict[str, float] = {}
        self._pruned_at = time.monotonic()
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    def has_ended(self, session_id: str) -> bool:
        return session_id in self._ended

    def add(self, session_ids: Iterable[str]) -> None:
        now = time.monotonic()
        for session_id in session_ids:
            self._ended.setdefault(session_id, now)
        if now - self._pruned_at > self._remember_seconds / 4:
            self._pruned_at = now
            horizon = now - self._remember_seconds
            self._ended = {sid: at for sid, at in self._ended.items() if at > horizon}

    async def start(self) -> None:
        """Start listening; returns once the first load is done (or failed: the listener keeps retrying)."""
        self._listener = asyncio.create_task(self._listen(), name="kilnbase-ended-sessions")
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
                    self._conninfo, autocommit=True, application_name=APPLICATION_NAME
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    # After LISTEN: anything that ends from now on is heard, anything before is read here.
                    cur = await conn.execute(
                        "select * from auth.recently_ended_sessions(%s)", (self._remember_seconds,)
                    )
                    self.add(row[0] for row in await cur.fetchall())
                    self._listening.set()
                    async for notify in conn.notifies():
                        self.add(notify.payload.split(","))
            except (psycopg.Error, OSError) as exc:
                log.warning("ended-sessions listener lost its connection: %s", type(exc).__name__)
                self._listening.set()  # start() must not wait for a database that is away
                await asyncio.sleep(_RETRY_SECONDS)
