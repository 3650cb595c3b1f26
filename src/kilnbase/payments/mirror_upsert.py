"""The statements every mirror write is: a provider's object upserted into its table, keyed by the
provider's id, so that a retried event or a second sync leaves the same row. Each provider's mirror
(`mirror.py`, `razorpay_mirror.py`) says only which columns take which of the object's values; the SQL is
written here once, with psycopg's own quoting of the table and column names. A sync that read a whole
listing then deletes the rows the provider no longer lists (`delete_unlisted`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import AsyncCursor, sql


async def upsert(
    cur: AsyncCursor[Any],
    table: str,
    key: tuple[str, ...],
    values: Mapping[str, Any],
    *,
    touched: tuple[str, ...] = (),
    kept: tuple[str, ...] = (),
    returning: bool = False,
) -> Any:
    """Insert `values` into `payments.<table>`, or update the row with the same `key` columns to them.
    `touched` columns are set to now() either way; a `kept` column keeps its stored value when the new
    one is null (a billing subject learnt once is not forgotten). With `returning`, the row as stored."""
    columns = [*values, *touched]
    inserted = [sql.Placeholder()] * len(values) + [sql.SQL("now()")] * len(touched)
    changes = [
        sql.SQL("{0} = coalesce(excluded.{0}, stored.{0})").format(sql.Identifier(column))
        if column in kept
        else sql.SQL("{0} = excluded.{0}").format(sql.Identifier(column))
        for column in values
        if column not in key
    ] + [sql.SQL("{} = now()").format(sql.Identifier(column)) for column in touched]
    statement = sql.SQL(
        "insert into payments.{table} as stored ({columns}) values ({inserted}) "
        "on conflict ({key}) do update set {changes}{returning}"
    ).format(
        table=sql.Identifier(table),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        inserted=sql.SQL(", ").join(inserted),
        key=sql.SQL(", ").join(map(sql.Identifier, key)),
        changes=sql.SQL(", ").join(changes),
        returning=sql.SQL(" returning *" if returning else ""),
    )
    await cur.execute(statement, tuple(values.values()))
    return await cur.fetchone() if returning else None


async def delete_unlisted(
    cur: AsyncCursor[Any],
    table: str,
    id_column: str,
    environment: str,
    listed: Sequence[Mapping[str, Any]],
) -> None:
    """Delete the environment's rows of `payments.<table>` whose `id_column` is no `id` of `listed` (a
    whole listing of the provider's: what it no longer has, it deleted)."""
    await cur.execute(
        sql.SQL("delete from payments.{} where environment = %s and not ({} = any(%s))").format(
            sql.Identifier(table), sql.Identifier(id_column)
        ),
        (environment, [str(entity["id"]) for entity in listed]),
    )
