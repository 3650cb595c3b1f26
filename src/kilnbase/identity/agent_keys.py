"""The agent keys in force, as this process knows them: checked on every request that presents one.

An agent key (`kba_` and 64 hex characters) is a credential an admin gives a coding agent: a name, scopes
(what it may reach: `*:read`, `database:write`, `tool:run-raw-sql`, ...), an expiry, and whether it may
approve changes. Only the SHA-256 of each secret is stored. Every process holds the live keys and the
project-wide agent settings (read-only mode) in memory, loaded at start and reloaded whenever
`system.agent_keys` or `system.agent_settings` change (`NOTIFY kilnbase_agent_keys`), so a revoked key
stops working everywhere within moments, and a lookup is one dictionary access, no round trip.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from kilnbase.pg_listen import ListenedView

CHANNEL = "kilnbase_agent_keys"
KEY_PATTERN = re.compile(r"kba_[0-9a-f]{64}")


def secret_digest(secret: str) -> bytes:
    """What is stored of a key: its SHA-256 (the secret is random, so no salt or stretching is needed)."""
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class AgentKey:
    id: str
    name: str
    scopes: frozenset[str]
    can_approve: bool
    expires_at: datetime | None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC))


_LOAD_KEYS = (
    "select id::text, name, secret_sha256, scopes, can_approve, expires_at from system.agent_keys "
    "where revoked_at is null and (expires_at is null or expires_at > now())"
)


class AgentKeys(ListenedView):
    channel = CHANNEL
    application_name = "kilnbase-agent-keys"

    def __init__(self, conninfo: str) -> None:
        super().__init__(conninfo)
        self._by_digest: dict[bytes, AgentKey] = {}
        self._by_id: dict[str, AgentKey] = {}
        #: Project-wide: every write from any agent key is refused.
        self.read_only = False

    def find(self, secret: str) -> AgentKey | None:
        """The live key with this secret, or None (unknown, revoked or expired)."""
        key = self._by_digest.get(secret_digest(secret))
        return None if key is None or key.expired() else key

    def by_id(self, key_id: str) -> AgentKey | None:
        key = self._by_id.get(key_id)
        return None if key is None or key.expired() else key

    async def load(self, conn: AsyncConnection[Any]) -> None:
        cur = await conn.execute(_LOAD_KEYS)
        rows = await cur.fetchall()
        settings = await (await conn.execute("select read_only from system.agent_settings")).fetchone()
        keys = {
            bytes(digest): AgentKey(key_id, name, frozenset(scopes), can_approve, expires_at)
            for key_id, name, digest, scopes, can_approve, expires_at in rows
        }
        self._by_digest = keys
        self._by_id = {key.id: key for key in keys.values()}
        self.read_only = bool(settings and settings[0])

    def heard(self, payload: str) -> Awaitable[None]:
        return self.reload()

    async def reload(self) -> None:
        """Read the keys again (on a connection of its own: the listener's is busy listening). Also called
        by this process's own changes, so the caller's next request sees them before the notification."""
        async with await AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
            await self.load(conn)
