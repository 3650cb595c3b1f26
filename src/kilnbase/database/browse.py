"""`GET /api/database/browse/{table}`: a page of a table's rows for a person looking at it (InsForge's
dashboard table view), with a total, a sort, a text search, and oversized cells left out.

InsForge's contract (`routes/database/browse.routes.ts`, `services/database/database-browse.service.ts`):
- `limit` (default 10) is clamped to 1..the maximum, a negative `offset` to 0; a value that is not a number
  is a 400 naming it.
- `order` is `column[.asc|.desc]`, comma separated, each a column of the table; without it the newest rows
  come first (`created_at`, else `id`, descending), as the dashboard shows them.
- `search` matches any text column (`ILIKE`, its `%` and `_` taken literally).
- A cell larger than the limit is answered as `{"__GuardedValue": true, "message": "data too large to show"}`,
  so one large document or file in a column does not make a page of rows megabytes long.
- The answer is the rows, with the total in `Content-Range` (206 when it is a part).

Where Kilnbase differs: the page runs as the calling admin (project_admin, on the request pool, under its
statement timeout, in a read-only transaction), not as the database owner; rows are built in groups of
50 columns, since `jsonb_build_object` takes at most 100 arguments and InsForge's single call fails on a
wider table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncCursor, sql
from psycopg.rows import DictRow

from kilnbase.database.database_errors import LIST_TABLES
from kilnbase.database.tables import identifier
from kilnbase.http.errors import ApiError

GUARD_FLAG = "__GuardedValue"
GUARD_TEXT = "data too large to show"
DEFAULT_LIMIT = 10
#: `jsonb_build_object` takes at most 100 arguments: a name and a value per column.
_COLUMNS_PER_CALL = 50
#: A number as JavaScript's `parseInt` reads one (leading digits); anything else is refused.
_NUMBER = re.compile(r"\s*([+-]?)(\d+)", re.ASCII)  # (`parseInt`'s digits: ASCII only)
#: More digits than any bound here needs: a longer number is clamped unread, since Python refuses to read
#: one of over 4,300 digits (a ValueError, a 500) and reading a long one costs time quadratic in its length.
_DIGITS_READ = 30
#: Postgres' bigint; a larger offset could only be a mistake (and would overflow the parameter).
_MAX_OFFSET = 2**62
#: Types whose size is their own length; any other is measured as the JSON it is answered as.
_SIZED_AS_IS = frozenset({"text", "character varying", "character", "bytea"})
_SIZED_AS_TEXT = frozenset({"json", "jsonb"})
#: Columns `search` looks in: InsForge's string type (text, varchar, char).
_SEARCHED = frozenset({"text", "character varying", "character"})


@dataclass(frozen=True)
class BrowseRequest:
    limit: int
    offset: int
    order: str | None
    search: str | None

    @classmethod
    def parse(cls, params: dict[str, str], max_rows: int) -> BrowseRequest:
        limit = min(max(_number(params.get("limit"), DEFAULT_LIMIT), 1), max_rows)
        offset = min(max(_number(params.get("offset"), 0), 0), _MAX_OFFSET)
        search = (params.get("search") or "").strip() or None
        return cls(limit, offset, params.get("order") or None, search)


@dataclass(frozen=True)
class BrowsePage:
    rows: list[dict[str, Any]]
    total: int
    offset: int


def _number(raw: str | None, default: int) -> int:
    if raw is None or not raw.strip():
        return default
    match = _NUMBER.match(raw)
    if match is None:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"Invalid numeric query parameter: {raw}",
            "Please provide numeric values for limit and offset.",
        )
    sign, digits = match.group(1), match.group(2).lstrip("0") or "0"
    value = int(digits) if len(digits) <= _DIGITS_READ else 10**_DIGITS_READ
    return -value if sign == "-" else value


def _order(order: str | None, columns: dict[str, str]) -> sql.Composable:
    if order is None:
        for default in ("created_at", "id"):
            if default in columns:
                return sql.SQL(" order by t.{} desc").format(sql.Identifier(default))
        return sql.SQL("")
    clauses: list[sql.Composable] = []
    for part in (piece.strip() for piece in order.split(",")):
        if not part:
            continue
        name, _, direction = part.partition(".")
        identifier(name, "column")
        if name not in columns:
            raise ApiError(
                400,
                "INVALID_INPUT",
                f"Invalid sort column: {name}",
                "Please sort using a valid column from the selected table.",
            )
        direction = direction or "asc"
        if direction.lower() not in ("asc", "desc"):
            raise ApiError(
                400,
                "INVALID_INPUT",
                f"Invalid sort direction: {direction}",
                "Sort direction must be either asc or desc.",
            )
        clauses.append(sql.SQL("t.{} {}").format(sql.Identifier(name), sql.SQL(direction.lower())))
    return sql.SQL(" order by ") + sql.SQL(", ").join(clauses) if clauses else sql.SQL("")


def _cell(name: str, type_name: str, cell_max_bytes: int) -> sql.Composable:
    column = sql.SQL("t.{}").format(sql.Identifier(name))
    if type_name in _SIZED_AS_IS:
        size = sql.SQL("octet_length({})").format(column)
    elif type_name in _SIZED_AS_TEXT:
        size = sql.SQL("octet_length({}::text)").format(column)
    else:
        size = sql.SQL("octet_length(to_jsonb({})::text)").format(column)
    return sql.SQL(
        "{}, case when {} > {} then jsonb_build_object({}, true, 'message', {}) else to_jsonb({}) end"
    ).format(
        sql.Literal(name),
        size,
        sql.Literal(cell_max_bytes),
        sql.Literal(GUARD_FLAG),
        sql.Literal(GUARD_TEXT),
        column,
    )


def _row(columns: dict[str, str], cell_max_bytes: int) -> sql.Composable:
    cells = [_cell(name, type_name, cell_max_bytes) for name, type_name in columns.items()]
    calls = [
        sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(cells[start : start + _COLUMNS_PER_CALL]))
        for start in range(0, len(cells), _COLUMNS_PER_CALL)
    ]
    return sql.SQL(" || ").join(calls) if calls else sql.SQL("'{}'::jsonb")


def _escaped_like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def _columns(cur: AsyncCursor[DictRow], table: str) -> dict[str, str]:
    await cur.execute(
        """
        select a.attname as name, format_type(a.atttypid, null) as type
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
        where n.nspname = 'public' and c.relname = %s and c.relkind in ('r', 'p')
        order by a.attnum
        """,
        (table,),
    )
    return {row["name"]: row["type"] for row in await cur.fetchall()}


async def browse(
    cur: AsyncCursor[DictRow], table: str, request: BrowseRequest, cell_max_bytes: int
) -> BrowsePage:
    """One page of `public.table` and the number of rows the search matches."""
    columns = await _columns(cur, table)
    if not columns:
        raise ApiError(404, "DATABASE_NOT_FOUND", "table not found", LIST_TABLES)
    order = _order(request.order, columns)
    searched = [name for name, type_name in columns.items() if type_name in _SEARCHED]
    where: sql.Composable = sql.SQL("")
    params: list[Any] = []
    if request.search is not None and searched:
        pattern = _escaped_like(request.search)
        where = sql.SQL(" where ") + sql.SQL(" or ").join(
            sql.SQL("t.{}::text ilike %s escape '\\'").format(sql.Identifier(name)) for name in searched
        )
        params = [pattern] * len(searched)
    source = sql.SQL("{} t").format(sql.Identifier("public", table))
    await cur.execute(sql.SQL("select count(*) as total from {}{}").format(source, where), params)
    counted = await cur.fetchone()
    await cur.execute(
        sql.SQL("select {} as row from {}{}{} limit %s offset %s").format(
            _row(columns, cell_max_bytes), source, where, order
        ),
        [*params, request.limit, request.offset],
    )
    rows = [row["row"] for row in await cur.fetchall()]
    return BrowsePage(rows, int(counted["total"]) if counted else 0, request.offset)
