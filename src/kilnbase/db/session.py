"""Transactions as the caller, so that Row Level Security and `auth.uid()` decide what a request sees.

Exactly as PostgREST does it: one transaction per request, `role` and `request.jwt.claims` set with
`set_config(..., true)` (transaction-local, values bound, never spliced). BEGIN, the context, the caller's
statements and COMMIT travel in one pipeline and one network round trip when the caller reads its results
after the block (the cursor keeps the last statement's result); a fetch inside the block costs one more.
Internal work runs as the owner through `as_owner`, deliberately and visibly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

import orjson
from psycopg import AsyncConnection, AsyncCursor
from psycopg.pq import TransactionStatus
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
        async with self.pool.connection() as conn:
            if not conn.autocommit:  # the pool's connections are; BEGIN and COMMIT are ours to send
                await conn.set_autocommit(True)
            cur = conn.cursor(row_factory=dict_row)
            try:
                # Not `conn.transaction()`: in a pipeline it syncs at BEGIN and at COMMIT (two more round
                # trips). An explicit BEGIN also keeps a sync inside the block (a fetch) from ending the
                # transaction, which would drop the role.
                async with conn.pipeline():
                    await cur.execute("BEGIN")
                    await cur.execute(_SET_CONTEXT_READ_ONLY if read_only else _SET_CONTEXT, (role, claims))
                    yield cur
                    await conn.cursor().execute("COMMIT")  # another cursor: `cur` keeps the caller's result
            except BaseException:
                # The block raised, or a statement failed (the pipeline then skipped the rest, COMMIT too).
                if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                    await conn.rollback()
                raise

    @asynccontextmanager
    async def as_owner(self) -> AsyncIterator[AsyncCursor[DictRow]]:
        """A cursor inside a transaction with the owner's (superuser's) rights: internal work only."""
        async with self.pool.connection() as conn, conn.transaction():
            yield conn.cursor(row_factory=dict_row)

    async def ping(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("select 1")
