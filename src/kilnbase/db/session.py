"""Transactions as the caller, so that Row Level Security and `auth.uid()` decide what a request sees.

Exactly as PostgREST does it: one transaction per request on the request pool (logged in as the
authenticator), with `role`, `request.jwt.claims` and the role's `statement_timeout` set by `set_config(...,
true)` (transaction-local, values bound, never spliced). BEGIN, the context, the caller's statements and
COMMIT travel in one pipeline and one network round trip when the caller reads its results after the block
(the cursor keeps the last statement's result); a fetch inside the block costs one more. A single statement
needs neither BEGIN nor COMMIT (`statement_as_caller`). Internal work runs as the owner, on a pool of its own,
through `as_owner`, deliberately and visibly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import orjson
from psycopg import AsyncConnection, AsyncCursor
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from kilnbase.db.availability import DatabaseAvailability

#: The only roles a request may take; a token can never choose another (say, the owner).
REQUEST_ROLES = frozenset({"anon", "authenticated", "project_admin"})

_SET_CONTEXT = (
    "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true), "
    "set_config('statement_timeout', %s, true)"
)
_SET_CONTEXT_READ_ONLY = _SET_CONTEXT + ", set_config('transaction_read_only', 'on', true)"

Pool = AsyncConnectionPool[AsyncConnection[Any]]


async def _reset_session(conn: AsyncConnection[Any]) -> None:
    """A script may change its session (`SET work_mem`, `SET default_transaction_read_only`, a LISTEN, an
    advisory lock, a temporary table): none of it may reach the next request on this pooled connection.
    Prepared statements survive (psycopg keeps track of them)."""
    async with conn.pipeline():
        for statement in ("RESET ALL", "DISCARD TEMP", "UNLISTEN *", "SELECT pg_advisory_unlock_all()"):
            await conn.execute(statement)


async def _end_failed(conn: AsyncConnection[Any]) -> None:
    """After a failure (a statement's, or the block's): a transaction still open is rolled back, so that the
    pool gets the connection idle."""
    if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
        await conn.rollback()


class DatabaseIdentity(Protocol):
    """What the database needs to know about a caller (a `Principal` is one)."""

    @property
    def db_role(self) -> str: ...

    @property
    def claims(self) -> Mapping[str, Any]: ...


class Database:
    """The two pools and the ways to use them: as a caller (request pool), or as the owner (owner pool)."""

    def __init__(
        self,
        request_pool: Pool,
        owner_pool: Pool,
        availability: DatabaseAvailability | None = None,
        *,
        statement_timeouts: Mapping[str, str] | None = None,
    ) -> None:
        self.request_pool = request_pool
        self.owner_pool = owner_pool
        #: What the pools know about the database being up (`db/availability.py`), shared by both.
        if availability is None:  # (pools made apart: a probe of the owner's database of its own)
            conninfo = owner_pool.conninfo
            availability = DatabaseAvailability(conninfo if isinstance(conninfo, str) else "")
        self.availability = availability
        #: Per request role; a role missing here runs without a timeout of its own.
        self.statement_timeouts = dict(statement_timeouts or {})

    def statement_timeout(self, role: str) -> str:
        return self.statement_timeouts.get(role, "0")

    @asynccontextmanager
    async def as_caller(
        self, identity: DatabaseIdentity, *, read_only: bool = False, rollback: bool = False
    ) -> AsyncIterator[AsyncCursor[DictRow]]:
        """A cursor inside a transaction that runs with the caller's role, JWT claims and timeout; with
        `rollback` it ends in ROLLBACK (what it read is still there to read)."""
        context = self._context(identity)
        async with self.request_pool.connection() as conn:
            if not conn.autocommit:  # the pool's connections are; BEGIN and COMMIT are ours to send
                await conn.set_autocommit(True)
            cur = conn.cursor(row_factory=dict_row)
            try:
                # Not `conn.transaction()`: in a pipeline it syncs at BEGIN and at COMMIT (two more round
                # trips). An explicit BEGIN also keeps a sync inside the block (a fetch) from ending the
                # transaction, which would drop the role.
                async with conn.pipeline():
                    await cur.execute("BEGIN")
                    await cur.execute(_SET_CONTEXT_READ_ONLY if read_only else _SET_CONTEXT, context)
                    yield cur
                    # Another cursor: `cur` keeps the caller's result.
                    await conn.cursor().execute("ROLLBACK" if rollback else "COMMIT")
            except BaseException:
                # The block raised, or a statement failed (the pipeline then skipped the rest, COMMIT too).
                await _end_failed(conn)
                raise

    async def statement_as_caller(
        self, identity: DatabaseIdentity, query: str, params: Sequence[Any], *, read_only: bool = False
    ) -> AsyncCursor[DictRow]:
        """One statement as the caller, committed (or, if it failed, undone), and the cursor that holds its
        result: `as_caller` for a single statement, for about a fifth less of the client's CPU.

        The context and the statement go in one pipeline with one sync, without BEGIN or COMMIT: Postgres
        runs all it receives up to a Sync as one implicit transaction, committed at the Sync and rolled back
        whole if a statement fails, so the transaction-local role, claims and timeout hold for the statement
        and end with it. `as_caller` needs an explicit BEGIN because its caller's code may sync inside the
        block (a fetch), ending the transaction early; here nothing runs between the two statements. Two
        statements through psycopg's pipeline rather than four: 30 to 40 µs less per request here
        (`bench.driver`)."""
        context = self._context(identity)
        async with self.request_pool.connection() as conn:
            if not conn.autocommit:  # without autocommit psycopg would open a transaction of its own
                await conn.set_autocommit(True)
            cur = conn.cursor(row_factory=dict_row)
            try:
                async with conn.pipeline():
                    await cur.execute(_SET_CONTEXT_READ_ONLY if read_only else _SET_CONTEXT, context)
                    await cur.execute(query, params)
            except BaseException:
                await _end_failed(conn)
                raise
        return cur

    def _context(
        self, identity: DatabaseIdentity, statement_timeout: str | None = None
    ) -> tuple[str, str, str]:
        """The values of `_SET_CONTEXT`: role, claims, statement timeout; refuses any role but the request
        roles."""
        role = identity.db_role
        if role not in REQUEST_ROLES:
            raise ValueError(f"refusing to run a request as role {role!r}")
        claims = orjson.dumps(dict(identity.claims)).decode()
        return role, claims, statement_timeout or self.statement_timeout(role)

    @asynccontextmanager
    async def transaction_as(
        self,
        identity: DatabaseIdentity,
        *,
        read_only: bool = False,
        statement_timeout: str | None = None,
        force_rollback: bool = False,
    ) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection inside a transaction as the caller (role, claims, timeout), without a pipeline: for
        scripts that read between statements or run several statements in one string (raw SQL, imports,
        DDL). `statement_timeout` overrides the role's statement timeout; `force_rollback` keeps nothing."""
        context = self._context(identity, statement_timeout)
        async with self.request_pool.connection() as conn:
            try:
                async with conn.transaction(force_rollback=force_rollback):
                    await conn.execute(_SET_CONTEXT_READ_ONLY if read_only else _SET_CONTEXT, context)
                    yield conn
            finally:
                if not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
                    await _reset_session(conn)

    @asynccontextmanager
    async def as_owner(self) -> AsyncIterator[AsyncCursor[DictRow]]:
        """A cursor inside a transaction with the owner's rights, on the owner pool: internal work only."""
        async with self.owner_pool.connection() as conn, conn.transaction():
            yield conn.cursor(row_factory=dict_row)

    async def delete_in_batches(self, statement: str, params: Sequence[Any] = (), *, batch: int) -> int:
        """Run `statement`, a DELETE of at most `batch` rows whose last parameter is that limit, as the owner,
        until a run deletes fewer: each batch in a transaction of its own, so no one statement holds many
        rows or locks for long (the retention sweeps of logs, sessions and expired entries). How many went."""
        deleted = 0
        while True:
            async with self.as_owner() as cur:
                await cur.execute(statement, (*params, batch))
                done = max(cur.rowcount, 0)
            deleted += done
            if done < batch:
                return deleted

    async def ping(self) -> None:
        """One round trip on each pool: the server answers for requests and for its own work."""
        for pool in (self.request_pool, self.owner_pool):
            async with pool.connection() as conn:
                await conn.execute("select 1")

    async def open(self, wait_seconds: float = 30) -> None:
        await self.owner_pool.open(wait=True, timeout=wait_seconds)
        await self.request_pool.open(wait=True, timeout=wait_seconds)

    async def close(self) -> None:
        await self.availability.close()
        await self.request_pool.close()
        await self.owner_pool.close()
