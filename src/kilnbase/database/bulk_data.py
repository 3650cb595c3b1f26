"""Bulk data for admins: upsert rows from a CSV/JSON file, export tables as SQL or JSON, import a SQL file.

An upsert is one `INSERT ... SELECT FROM jsonb_array_elements(...)`, so a file of any size is one bound
parameter; an agent's that rewrote every row of a table is rolled back (`whole_table_changes`). Imports go
through the raw SQL guard and run in one transaction: a failing file imports nothing.
Everything here runs as the calling admin (project_admin) on the request pool, exports included: a table's
data passes through casts and functions an admin defined, which must never run with the owner's rights.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg import AsyncCursor, sql
from psycopg.rows import DictRow, dict_row

from kilnbase.capability import HeldForApproval
from kilnbase.database import sql_guard
from kilnbase.database.database_errors import LIST_TABLES, api_error_from
from kilnbase.database.tables import identifier
from kilnbase.db import whole_table_changes
from kilnbase.db.session import Database, DatabaseIdentity
from kilnbase.http.errors import ApiError

MAX_EXPORT_ROWS = 10_000
#: A row's value the table refused (no SQL of the caller's is involved in an upload).
_FIX_THE_FILE = (
    "Fix the value the message names in the file (each cell must read as its column's type), then upload "
    "it again; nothing was written."
)


def parse_rows(content: bytes, filename: str) -> list[dict[str, Any]]:
    """Rows of a `.json` (array of objects) or `.csv` (header row) file; a file with none (`[]`, a header
    alone, nothing) is refused, as InsForge refuses it: an upload that changes nothing is a mistake to say."""
    rows = _rows_of(content, filename)
    if not rows:
        raise ApiError(
            400,
            "INVALID_INPUT",
            "No records found in file",
            "Send a file with at least one row: a .json array of objects, or a .csv with a header row and "
            "rows under it.",
        )
    return rows


def _rows_of(content: bytes, filename: str) -> list[dict[str, Any]]:
    lower = filename.lower()
    text = content.decode("utf-8-sig", errors="replace")
    if lower.endswith(".json"):
        try:
            rows = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ApiError(
                400,
                "INVALID_INPUT",
                f"The JSON file does not parse: {exc}",
                "Fix the JSON: the file must hold an array of objects, one per row.",
            ) from None
        if isinstance(rows, dict):
            rows = [rows]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ApiError(
                400,
                "INVALID_INPUT",
                "The JSON file must hold an array of objects.",
                'Put the rows in a JSON array of objects, e.g. [{"title": "Hello"}].',
            )
        return rows
    if lower.endswith(".csv"):
        # A cell may be as large as the file (InsForge's parser has no limit of its own; the upload limit
        # bounds the file): Python's reader refuses a cell past 128 KiB unless its process-wide limit is
        # raised, which is only ever raised here. `newline=""`: lines may end in \n, \r\n or a lone \r.
        csv.field_size_limit(max(csv.field_size_limit(), len(text)))
        # (With both, Python's reader, which is not strict, has nothing left to refuse.)
        reader = csv.DictReader(io.StringIO(text, newline=""))
        # An empty cell takes the column's default, as an absent key does.
        return [{k: v for k, v in row.items() if k is not None and v != ""} for row in reader]
    raise ApiError(
        400,
        "INVALID_INPUT",
        "Upload a .csv or .json file.",
        "Send rows as a .json file (an array of objects) or a .csv file (a header row first).",
    )


async def bulk_upsert(
    database: Database,
    identity: DatabaseIdentity,
    *,
    schema: str,
    table_name: str,
    rows: list[dict[str, Any]],
    upsert_key: str | None,
    hold_wholesale: bool = False,
) -> dict[str, Any]:
    """Insert the rows, or with `upsert_key` update those whose key is taken, in one statement; with
    `hold_wholesale` (an agent's, not yet approved), roll it back and raise `HeldForApproval` when it
    updated (or, through a trigger, deleted) every row of a table (`whole_table_changes`), as an agent's SQL
    is held."""
    identifier(schema, "schema")
    identifier(table_name, "table")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    target = sql.Identifier(schema, table_name)
    try:
        async with database.transaction_as(identity) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "select column_name::text as name, column_default::text as default "
                "from information_schema.columns where table_schema = %s and table_name = %s",
                (schema, table_name),
            )
            known = {row["name"]: row["default"] for row in await cur.fetchall()}
            if not known:
                raise ApiError(
                    404, "DATABASE_NOT_FOUND", f"table {schema}.{table_name} not found", LIST_TABLES
                )
            unknown = [c for c in columns if c not in known]
            if unknown:
                raise ApiError(
                    400,
                    "DATABASE_VALIDATION_ERROR",
                    f"Unknown columns: {', '.join(unknown)}",
                    "Send only the table's columns; GET /api/database/tables/{table}/schema lists those of "
                    "a table in public.",
                )
            if upsert_key is not None and upsert_key not in known:
                raise ApiError(
                    400,
                    "DATABASE_VALIDATION_ERROR",
                    f"upsertKey {upsert_key} is not a column",
                    "Send upsertKey as a column with a unique constraint, or leave it out to insert every "
                    "row.",
                )
            affected = 0
            if rows:
                statement = _upsert_statement(target, columns, known, upsert_key)
                before = await whole_table_changes.counts(conn) if hold_wholesale else None
                await cur.execute(statement, (orjson.dumps(rows).decode(),))
                affected = max(cur.rowcount, 0)
                if before is not None and (reasons := await whole_table_changes.wholesale(conn, before)):
                    raise HeldForApproval("; ".join(reasons))
    except psycopg.Error as exc:
        raise api_error_from(exc, fix=_FIX_THE_FILE) from None
    return {
        "success": True,
        "message": f"Successfully upserted {affected} rows into {table_name}",
        "table": table_name,
        "rowsAffected": affected,
        "totalRecords": len(rows),
    }


def _upsert_statement(
    target: sql.Composable, columns: list[str], defaults: dict[str, str | None], upsert_key: str | None
) -> sql.Composed:
    """One `INSERT ... SELECT` over the rows as a JSON array parameter; a missing key takes the column's
    default (its expression as the catalog prints it)."""
    names = [sql.Identifier(c) for c in columns]
    values = [
        sql.SQL("CASE WHEN e ? {} THEN (p).{} ELSE {} END").format(
            sql.Literal(c), sql.Identifier(c), sql.SQL((defaults.get(c) or "NULL").replace("%", "%%"))
        )
        for c in columns
    ]
    statement = sql.SQL(
        "INSERT INTO {target} ({names}) SELECT {values} "
        "FROM jsonb_array_elements(%s::jsonb) AS e, jsonb_populate_record(NULL::{target}, e) AS p"
    ).format(target=target, names=sql.SQL(", ").join(names), values=sql.SQL(", ").join(values))
    if upsert_key is None:
        return statement
    updates = [sql.SQL("{} = EXCLUDED.{}").format(n, n) for n in names if n != sql.Identifier(upsert_key)]
    conflict = sql.SQL(" ON CONFLICT ({}) ").format(sql.Identifier(upsert_key))
    action = (
        sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(updates)) if updates else sql.SQL("DO NOTHING")
    )
    return sql.Composed([statement, conflict, action])


@dataclass(frozen=True)
class ExportRequest:
    """`POST /advance/export`'s body, checked."""

    fmt: str
    tables: list[str] | None
    row_limit: int | None
    include_data: bool
    include_functions: bool

    @classmethod
    def parse(cls, body: dict[str, Any]) -> ExportRequest:
        fmt = body.get("format", "sql")
        if fmt not in ("sql", "json"):
            raise ApiError(
                400,
                "INVALID_INPUT",
                "format must be sql or json",
                'Send format "sql" or "json", or leave it out for sql.',
            )
        row_limit = body.get("rowLimit")
        if row_limit is not None and (
            not isinstance(row_limit, int)
            or isinstance(row_limit, bool)
            or not 0 < row_limit <= MAX_EXPORT_ROWS
        ):
            raise ApiError(
                400,
                "INVALID_INPUT",
                f"rowLimit must be between 1 and {MAX_EXPORT_ROWS}",
                "Send rowLimit as a whole number in that range, or leave it out for every row.",
            )
        requested = body.get("tables")
        if requested is not None and (
            not isinstance(requested, list) or not all(isinstance(t, str) for t in requested)
        ):
            raise ApiError(
                400,
                "INVALID_INPUT",
                "tables must be an array of table names",
                'Send tables as an array of table names, e.g. ["posts"], or leave it out for every table.',
            )
        return cls(
            fmt=fmt,
            tables=requested,
            row_limit=row_limit,
            include_data=body.get("includeData", True) is not False,
            include_functions=body.get("includeFunctions") is True,
        )


async def export(database: Database, identity: DatabaseIdentity, request: ExportRequest) -> dict[str, Any]:
    try:
        async with database.transaction_as(identity, read_only=True) as conn:
            return await _export(conn.cursor(row_factory=dict_row), request)
    except psycopg.Error as exc:
        raise api_error_from(exc) from None


async def _export(cur: AsyncCursor[DictRow], request: ExportRequest) -> dict[str, Any]:
    timestamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    row_limit = request.row_limit
    truncated: list[str] = []
    await cur.execute("select tablename from pg_tables where schemaname = 'public' order by tablename")
    existing = [r["tablename"] for r in await cur.fetchall()]
    tables = request.tables if request.tables is not None else existing
    missing = [t for t in tables if t not in existing]
    if missing:
        raise ApiError(404, "DATABASE_NOT_FOUND", f"tables not found: {', '.join(missing)}", LIST_TABLES)
    if request.fmt == "json":
        data: dict[str, Any] = {"timestamp": timestamp, "tables": {}, "functions": []}
        for table in tables:
            rows, total = await _rows(cur, table, row_limit) if request.include_data else ([], 0)
            if row_limit and total > row_limit:
                truncated.append(table)
            data["tables"][table] = {
                "schema": await _columns(cur, table),
                "rows": rows,
                "recordCount": total,
            }
        if request.include_functions:
            data["functions"] = await _functions(cur)
        return {"format": "json", "data": data, "timestamp": timestamp, "truncatedTables": truncated}
    parts = [f"-- Database export\n-- Generated on: {timestamp}\n"]
    for table in tables:
        parts.append(await _table_ddl(cur, table))
        if request.include_data:
            rows, total = await _rows(cur, table, row_limit)
            if row_limit and total > row_limit:
                truncated.append(table)
            parts.extend(await _insert_lines(cur, table, rows))
    if request.include_functions:
        parts.extend(f"{definition};\n" for definition in await _functions(cur))
    return {"format": "sql", "data": "\n".join(parts), "timestamp": timestamp, "truncatedTables": truncated}


async def _rows(cur: AsyncCursor[DictRow], table: str, limit: int | None) -> tuple[list[dict[str, Any]], int]:
    target = sql.Identifier("public", table)
    await cur.execute(sql.SQL("select count(*) as n from {}").format(target))
    count = await cur.fetchone()
    query = sql.SQL("select coalesce(json_agg(t), '[]')::text as rows from (select * from {} {}) t").format(
        target, sql.SQL("limit {}").format(sql.Literal(limit)) if limit else sql.SQL("")
    )
    await cur.execute(query)
    row = await cur.fetchone()
    rows: list[dict[str, Any]] = orjson.loads(row["rows"]) if row else []
    return rows, int(count["n"]) if count else 0


async def _columns(cur: AsyncCursor[DictRow], table: str) -> list[dict[str, Any]]:
    await cur.execute(
        "select column_name as name, data_type as type, is_nullable = 'YES' as nullable, "
        "column_default as default from information_schema.columns "
        "where table_schema = 'public' and table_name = %s order by ordinal_position",
        (table,),
    )
    return [dict(r) for r in await cur.fetchall()]


async def _functions(cur: AsyncCursor[DictRow]) -> list[str]:
    await cur.execute(
        "select pg_get_functiondef(p.oid) as def from pg_proc p "
        "join pg_namespace n on n.oid = p.pronamespace "
        "where n.nspname = 'public' and p.prokind = 'f' and not exists "
        "(select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e') order by p.proname"
    )
    return [r["def"] for r in await cur.fetchall()]


async def _table_ddl(cur: AsyncCursor[DictRow], table: str) -> str:
    await cur.execute(
        """
        select string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod)
                          || case when a.attnotnull then ' NOT NULL' else '' end
                          || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), ''),
                          ', ' order by a.attnum)
               as columns,
               c.relrowsecurity as rls
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
        left join pg_attrdef d on d.adrelid = c.oid and d.adnum = a.attnum
        where n.nspname = 'public' and c.relname = %s
        group by c.relrowsecurity
        """,
        (table,),
    )
    row = await cur.fetchone()
    assert row is not None
    await cur.execute(
        "select pg_get_constraintdef(con.oid) as def, con.conname as name from pg_constraint con "
        "join pg_class c on c.oid = con.conrelid join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = 'public' and c.relname = %s and con.contype in ('p', 'u', 'f', 'c') "
        "order by con.contype desc, con.conname",
        (table,),
    )
    constraints = await cur.fetchall()
    quoted = await _quote_ident(cur, table)
    lines = [f"-- Table: {table}", f"CREATE TABLE IF NOT EXISTS {quoted} ({row['columns']});"]
    for constraint in constraints:
        lines.append(
            f"ALTER TABLE {quoted} ADD CONSTRAINT "
            f"{await _quote_ident(cur, constraint['name'])} {constraint['def']};"
        )
    if row["rls"]:
        lines.append(f"ALTER TABLE {quoted} ENABLE ROW LEVEL SECURITY;")
    await cur.execute(
        "select policyname, cmd, roles::text[] as roles, qual, with_check, permissive from pg_policies "
        "where schemaname = 'public' and tablename = %s and policyname <> 'project_admin_policy' "
        "order by policyname",
        (table,),
    )
    for policy in await cur.fetchall():
        name = await _quote_ident(cur, policy["policyname"])
        statement = f"CREATE POLICY {name} ON {quoted} AS {policy['permissive']}"
        statement += f" FOR {policy['cmd']} TO {', '.join(policy['roles'])}"
        if policy["qual"]:
            statement += f" USING ({policy['qual']})"
        if policy["with_check"]:
            statement += f" WITH CHECK ({policy['with_check']})"
        lines.append(statement + ";")
    return "\n".join(lines) + "\n"


async def _quote_ident(cur: AsyncCursor[DictRow], name: str) -> str:
    return sql.Identifier(name).as_string(cur.connection)


async def _insert_lines(cur: AsyncCursor[DictRow], table: str, rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = [f"-- Data for table: {table}"]
    target = sql.Identifier(table).as_string(cur.connection)
    for row in rows:
        columns = ", ".join(sql.Identifier(c).as_string(cur.connection) for c in row)
        values = ", ".join(_literal(cur, v) for v in row.values())
        lines.append(f"INSERT INTO {target} ({columns}) VALUES ({values});")
    return [*lines, ""]


def _literal(cur: AsyncCursor[DictRow], value: Any) -> str:
    if isinstance(value, dict | list):
        value = orjson.dumps(value).decode()
    return sql.Literal(value).as_string(cur.connection)


async def import_sql(
    database: Database,
    identity: DatabaseIdentity,
    content: bytes,
    filename: str,
    truncate: bool,
    *,
    hold_wholesale: bool = False,
) -> dict[str, Any]:
    """Run the file's statements in one transaction; with `hold_wholesale` (an agent's), roll them back and
    raise `HeldForApproval` when they deleted or updated every row of a table (`whole_table_changes`)."""
    if not filename.lower().endswith(".sql"):
        raise ApiError(
            400,
            "INVALID_INPUT",
            "Upload a .sql file.",
            "Send a .sql file (its name must end in .sql) as the 'file' field.",
        )
    text = content.decode("utf-8", errors="replace")
    try:
        nodes = sql_guard.check(text)
        statements = sql_guard.split_statements(text)
    except sql_guard.GuardRefusal as exc:
        raise ApiError(403, "DATABASE_FORBIDDEN", str(exc), sql_guard.REFUSED) from None
    touched: list[str] = []
    for node in nodes:
        relation = getattr(node, "relation", None)
        name = getattr(relation, "relname", None)
        if isinstance(name, str) and name not in touched:
            touched.append(name)
    rows_imported = 0
    try:
        async with database.transaction_as(identity) as conn:
            cur = conn.cursor(row_factory=dict_row)
            if truncate:
                await cur.execute("select tablename from pg_tables where schemaname = 'public'")
                existing = {r["tablename"] for r in await cur.fetchall()}
                for name in touched:
                    if name in existing:
                        await cur.execute(
                            sql.SQL("TRUNCATE {} CASCADE").format(sql.Identifier("public", name))
                        )
            before = await whole_table_changes.counts(conn) if hold_wholesale else None
            for statement, node in zip(statements, nodes, strict=False):
                await cur.execute(statement)
                if type(node).__name__ == "InsertStmt":
                    rows_imported += max(cur.rowcount, 0)
            if before is not None and (reasons := await whole_table_changes.wholesale(conn, before)):
                raise HeldForApproval("; ".join(reasons))
    except psycopg.Error as exc:
        raise api_error_from(exc) from None
    return {
        "success": True,
        "message": "SQL file imported successfully",
        "filename": filename,
        "tables": touched,
        "rowsImported": rows_imported,
        "fileSize": len(content),
    }
