"""Running a rendered statement as the caller: one transaction, sent in one round trip.

`Database.as_caller` opens the transaction with the caller's role and claims (READ ONLY for reads) in
pipeline mode, so the statement, its set-up and COMMIT travel together; the result is read after COMMIT. A
single statement answered after COMMIT takes `Database.statement_as_caller`, the same transaction without
BEGIN and COMMIT.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from psycopg import AsyncCursor
from psycopg.rows import DictRow

from kilnbase.db.session import Database
from kilnbase.identity.principal import Principal
from kilnbase.records.sql_builder import Sql

_T = TypeVar("_T")
Cursor = AsyncCursor[DictRow]


async def run(
    database: Database,
    principal: Principal,
    statement: Sql | Callable[[Cursor], Awaitable[Sql]],
    answer: Callable[[Cursor, DictRow | None], _T],
    *,
    read_only: bool,
    check_first: bool,
    rollback: bool = False,
    guard: Callable[[Cursor], Awaitable[None]] | None = None,
) -> _T:
    """One statement as the caller (`statement` may be rendered in the transaction), then the answer, made
    from the cursor and the statement's row (None when it returns no rows).

    The answer is made after COMMIT (the transaction is then one round trip), unless it can still fail
    and must roll a write back (`check_first`): then a nested pipeline block syncs, and the answer is
    made before COMMIT. `rollback`: the transaction ends in ROLLBACK instead (`Prefer: tx=rollback`).
    A statement already rendered, committed and answered after COMMIT, the common case, takes
    `Database.statement_as_caller`: half the statements, no BEGIN or COMMIT. (`answer` is a plain
    function: a coroutine of its own would be one more made and finished for every request.) `guard`, with
    `check_first`, runs after the answer and before COMMIT, in the transaction: raising, it rolls the
    write back."""
    if isinstance(statement, Sql) and not check_first and not rollback:
        cur = await database.statement_as_caller(
            principal, statement.text, statement.params, read_only=read_only
        )
    else:
        async with database.as_caller(principal, read_only=read_only, rollback=rollback) as cur:
            if not isinstance(statement, Sql):
                statement = await statement(cur)
            if not check_first:
                await cur.execute(statement.text, statement.params)
            else:
                async with cur.connection.pipeline():
                    await cur.execute(statement.text, statement.params)
                answered = answer(cur, await cur.fetchone() if has_rows(cur) else None)
                if guard is not None:
                    await guard(cur)
                return answered
    return answer(cur, await cur.fetchone() if has_rows(cur) else None)


def has_rows(cur: Cursor) -> bool:
    """Whether the statement returned rows (a result with columns), read off libpq's result."""
    result = cur.pgresult
    return result is not None and result.nfields > 0


def one_row(row: DictRow | None) -> DictRow:
    """The statement's one result row (every statement the engine renders that returns rows returns
    exactly one)."""
    assert row is not None
    return row


async def planned_rows(cur: Cursor, explain: Sql) -> int | None:
    """The planner's row estimate from `EXPLAIN (FORMAT JSON)`, run in the caller's transaction."""
    await cur.execute(explain.text, explain.params)
    row = await cur.fetchone()
    if row is None:
        return None
    plan: Any = next(iter(row.values()))
    if isinstance(plan, str):
        plan = orjson.loads(plan)
    try:
        return int(plan[0]["Plan"]["Plan Rows"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
