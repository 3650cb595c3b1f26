"""`whole_table_changes`: which tables SQL changed wholesale, read from Postgres's counts of the transaction,
over one connection as the app's SQL paths hold one."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import psycopg
import pytest

from kilnbase.db import whole_table_changes

pytestmark = pytest.mark.anyio


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[object]]:
    async with await psycopg.AsyncConnection.connect(database_url) as connection:
        yield connection


async def wholesale(conn: psycopg.AsyncConnection[object], statements: str) -> list[str]:
    """What `wholesale` says of `statements`, run in a transaction that is rolled back."""
    try:
        async with conn.transaction(force_rollback=True):
            before = await whole_table_changes.counts(conn)
            await conn.execute(statements)
            return await whole_table_changes.wholesale(conn, before)
    finally:
        await conn.rollback()


async def new_table(conn: psycopg.AsyncConnection[object], rows: int) -> str:
    name = f"t_{secrets.token_hex(4)}"
    await conn.execute(f"create table public.{name} (id int primary key, note text)")
    await conn.execute(f"insert into public.{name} select g, 'keep' from generate_series(1, {rows}) g")
    await conn.commit()
    return name


async def test_earlier_transactions_on_the_connection_do_not_count(
    conn: psycopg.AsyncConnection[object],
) -> None:
    """Postgres's counts of a transaction hold those of the connection's earlier ones that it has not yet
    reported (at most once a second): the 5 rows inserted just before would make the 6 rows this delete
    found look like 1, and the delete like a table's only row."""
    table = await new_table(conn, 1)
    await conn.execute(f"insert into public.{table} select g, 'new' from generate_series(10, 14) g")
    await conn.commit()
    reasons = await wholesale(conn, f"delete from public.{table} where id is not null")
    assert reasons == [f"deletes or updates every row of public.{table} (all 6 rows it held)"]


async def test_partitions_count_with_their_table(conn: psycopg.AsyncConnection[object]) -> None:
    """A table of two partitions, one row in each: deleting both is deleting every row of the table."""
    table = f"p_{secrets.token_hex(4)}"
    await conn.execute(f"create table public.{table} (id int, note text) partition by range (id)")
    for part, low in (("a", 0), ("b", 10)):
        await conn.execute(
            f"create table public.{table}_{part} partition of public.{table} "
            f"for values from ({low}) to ({low + 10})"
        )
    await conn.execute(f"insert into public.{table} values (1, 'keep'), (11, 'keep')")
    await conn.commit()
    reasons = await wholesale(conn, f"delete from public.{table} where id >= 0")
    assert reasons == [f"deletes or updates every row of public.{table} (all 2 rows it held)"]
    assert await wholesale(conn, f"delete from public.{table} where id = 1") == []


@pytest.mark.parametrize(
    ("rows", "sql", "held"),
    [
        (3, "update public.{t} set note = 'x' where id <= 2", False),
        (1, "update public.{t} set note = 'x' where id > 0", False),
        (3, "insert into public.{t} select g, 'x' from generate_series(4, 40) g", False),
        (3, "delete from public.{t} where id > 0; insert into public.{t} select g, 'x' "
            "from generate_series(1, 40) g", True),
        (3, "update public.{t} set note = 'x' where id = 1; update public.{t} set note = 'y' where id = 1; "
            "update public.{t} set note = 'z' where id = 1", True),  # (a row changed thrice: held, safely)
        (0, "insert into public.{t} select g, 'x' from generate_series(1, 5) g; "
            "delete from public.{t} where id > 0", False),
    ],
    ids=["some", "only-row", "inserts", "emptied-and-refilled", "one-row-thrice", "new-rows-only"],
)  # fmt: skip
async def test_which_changes_are_wholesale(
    conn: psycopg.AsyncConnection[object], rows: int, sql: str, held: bool
) -> None:
    table = await new_table(conn, rows)
    reasons = await wholesale(conn, sql.format(t=table))
    assert bool(reasons) is held, reasons
