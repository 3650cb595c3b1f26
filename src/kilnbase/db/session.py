"""Transactions as the caller, so that Row Level Security and `auth.uid()` decide what a request sees.

Exactly as PostgREST does it: one transaction per request, `role` and `request.jwt.claims` set with
`set_config(..., true)` (transaction-local, values bound, never spliced), all sent in one pipeline with the
caller's first statement. Internal work runs as the owner through `as_owner`, deliberately and visibly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

import orjson
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

#: The only roles a request may take; a token can never choose another (say, the superuser).
REQUEST_ROLES = frozenset({"anon", "authenticated", "project_admin"})

_SET_CONTEXT = "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)"
_SET_CONTEXT_READ_ONLY = _SET_CONTEXT + ", set_config('transaction_read_only', 'on', true)"


class DatabaseIdentity(Protocol):
    """What the database needs to know about a caller (a `Principal` is one)."""

    @property
    def db_role(self) -> str: ...

    @property
    def claims(self) -> Mapping[str, Any]: ...


class Database:
    """The pool plus the two ways to use it: as a caller, or as the owner."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[Any]]) -> None:
        self.pool = pool

    @asynccontextmanager
    async def as_caller(
        self, identity: DatabaseIdentity, *, read_only: bool = False
    ) -> AsyncIterator[AsyncCursor[DictRow]]:
        """A cursor inside a transaction that runs with the caller's role and JWT claims."""
        role = identity.db_role
        if role not in REQUEST_ROLES:
            raise ValueError(f"refusing to run a request as role {role!r}")
        claims = orjson.dumps(dict(identity.claims)).decode()
        async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_SET_CONTEXT_READ_ONLY if read_only else _SET_CONTEXT, (role, claims))
            yield cur

    @asynccontextmanager
    async def as_owner(self) -> AsyncIterator[AsyncCursor[DictRow]]:
        """A cursor inside a transaction with the owner's (superuser's) rights: internal work only."""
        async with self.pool.connection() as conn, conn.transaction():
            yield conn.cursor(row_factory=dict_row)

    async def ping(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("select 1")
