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
notification arrives. A lost connection is retried (from every second to every 5 s); what ended meanwhile is
read on reconnect (`pg_listen.py`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from psycopg import AsyncConnection

from kilnbase.pg_listen import ListenedView

CHANNEL = "kilnbase_sessions_ended"
#: How the listener's connection shows in `pg_stat_activity`.
APPLICATION_NAME = "kilnbase-ended-sessions"
#: Seconds added to the access-token lifetime before an ended session is forgotten (clock skew, leeway).
_MARGIN_SECONDS = 60


class EndedSessions(ListenedView):
    channel = CHANNEL
    application_name = APPLICATION_NAME

    def __init__(self, conninfo: str, access_token_seconds: int) -> None:
        super().__init__(conninfo)
        self._remember_seconds = access_token_seconds + _MARGIN_SECONDS
        #: Session id -> when this process learned it ended (monotonic seconds).
        self._ended: dict[str, float] = {}
        self._pruned_at = time.monotonic()

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

    async def load(self, conn: AsyncConnection[Any]) -> None:
        cur = await conn.execute("select * from auth.recently_ended_sessions(%s)", (self._remember_seconds,))
        self.add(row[0] for row in await cur.fetchall())

    def heard(self, payload: str) -> None:
        self.add(payload.split(","))
