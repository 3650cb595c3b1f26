"""Raw SQL for admins.

`/advance/rawsql` runs as project_admin on the request pool (logged in as the authenticator, so SQL that
steps out of the role finds no privileges), behind the parser guard as defence in depth, with the admin's
statement timeout. `/advance/rawsql/unrestricted` is the only owner path: a separate pool, refused to
credentials whose scopes leave it out (agent keys). `database/admin.py` audits every attempt, refused and
failed ones too, with the role the SQL really ran as. An agent key's SQL on either path that deleted or
updated every row of a table is rolled back and held for a person (`run`).

Not through `Database.as_caller`: that helper pipelines, and a pipeline cannot carry a multi-statement
script.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from kilnbase.capability import HeldForApproval
from kilnbase.database import sql_guard
from kilnbase.database.database_errors import StatementFailed, api_error_from, syntax_error
from kilnbase.db import whole_table_changes
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import Actor

#: The scope a credential needs for owner-level SQL (credentials without scopes have every scope).
OWNER_SQL_SCOPE = "database:owner-sql"
#: The most values one statement takes: the protocol counts them in 16 bits.
MAX_PARAMS = 65535


@dataclass
class RawSqlResult:
    rows: list[dict[str, Any]]
    row_count: int
    fields: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "rowCount": self.row_count, "fields": self.fields}


def _json_safe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Row values as JSON would carry them (numeric and other exotic types as text, as node-pg does)."""
    result: list[dict[str, Any]] = orjson.loads(orjson.dumps(rows, default=str))
    return result


def _statements(query: str, *, explain: bool, unrestricted: bool) -> list[str]:
    try:
        if unrestricted:
            return sql_guard.split_statements(query) if query.strip() else []
        nodes = sql_guard.check(query)
    except sql_guard.SqlSyntaxError as exc:
        raise syntax_error(exc.message, exc.position, query) from None
    except sql_guard.GuardRefusal as exc:
        raise ApiError(403, "DATABASE_FORBIDDEN", str(exc), sql_guard.REFUSED) from None
    if explain and not all(type(node).__name__ == "SelectStmt" for node in nodes):
        raise ApiError(
            400,
            "INVALID_INPUT",
            "explain is available for SELECT statements only",
            "Leave explain out, or send only SELECT statements with it.",
        )
    return sql_guard.split_statements(query)


def check_allowed(
    actor: Actor, query: str, params: list[Any], *, explain: bool, unrestricted: bool
) -> list[str]:
    """The statements to run, or ApiError when this actor may not run this SQL here."""
    if unrestricted and not actor.principal.has_scope(OWNER_SQL_SCOPE):
        raise ApiError(
            403,
            "DATABASE_FORBIDDEN",
            "This credential may not run owner-level SQL.",
            "Use /api/database/advance/rawsql, which runs as project_admin.",
        )
    statements = _statements(query, explain=explain, unrestricted=unrestricted)
    if not statements:
        raise ApiError(
            400,
            "INVALID_INPUT",
            "query must contain at least one SQL statement",
            "Send at least one statement as query, not only comments or semicolons.",
        )
    if len(params) > MAX_PARAMS:
        # libpq refuses the statement before sending it, with no SQLSTATE, which reads as a lost connection.
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"params can hold at most {MAX_PARAMS} values (PostgreSQL's limit for one statement)",
            "Send fewer values: pass a list as one array parameter ($1::int[]), or split the work.",
        )
    if params and len(statements) > 1:
        raise ApiError(
            400,
            "INVALID_INPUT",
            "params can only be used with a single statement",
            "Send one statement with its $n params, or several statements without params.",
        )
    return statements


async def run(
    database: Database,
    actor: Actor,
    statements: list[str],
    params: list[Any],
    *,
    explain: bool,
    unrestricted: bool,
    admin_timeout: str,
) -> RawSqlResult:
    """Run checked statements: as project_admin on the request pool, or as the owner on its own pool."""
    # An agent's SQL that deleted or updated every row of a table waits for a person, whatever its WHERE
    # says (`whole_table_changes`): rolled back here, held as its tool's call by the edge that took it
    # (owner-level SQL as `run-owner-sql`'s). An explained SELECT changes nothing; people, and an approved
    # call, pay nothing.
    wholesale = actor.is_unapproved_agent and not explain
    try:
        if unrestricted:
            async with database.owner_pool.connection() as conn, conn.transaction(force_rollback=explain):
                await conn.execute("select set_config('statement_timeout', %s, true)", (admin_timeout,))
                if explain:
                    await conn.execute("set transaction read only")
                before = await whole_table_changes.counts(conn) if wholesale else None
                # The admin's own SQL names the app's objects as Postgres's default path does; Kilnbase's
                # statements around it resolve in pg_catalog alone, as every owner session does
                # (`db/pool.catalog_only`).
                await conn.execute("select set_config('search_path', '\"$user\", public', true)")
                result = await _execute(conn, statements, params, explain=explain)
                await conn.execute("select set_config('search_path', 'pg_catalog', true)")
                if before is not None and (reasons := await whole_table_changes.wholesale(conn, before)):
                    raise HeldForApproval("; ".join(reasons))
                if not explain:
                    await conn.execute("select system.reassign_public_objects_to_project_admin()")
            return result
        # EXPLAIN ANALYZE runs the statement: keep nothing of it. Rolling back is not enough: a SELECT can
        # move a sequence (nextval, setval), which no rollback undoes, and explain is a read (the MCP tool
        # reaches read-scoped agent keys, and read-only mode): a read-only transaction refuses every write.
        async with database.transaction_as(
            actor.principal, read_only=explain, statement_timeout=admin_timeout, force_rollback=explain
        ) as conn:
            before = await whole_table_changes.counts(conn) if wholesale else None
            result = await _execute(conn, statements, params, explain=explain)
            if before is not None and (reasons := await whole_table_changes.wholesale(conn, before)):
                raise HeldForApproval("; ".join(reasons))
            return result
    except StatementFailed as failed:
        raise api_error_from(failed.error, failed.statement) from None
    except psycopg.Error as exc:
        raise api_error_from(exc) from None


def _as_node_pg_sends(value: Any) -> Any:
    """A parameter as InsForge's driver (node-postgres) sends it where psycopg would not take it: an object
    as its JSON text, also inside an array (psycopg cannot adapt a dict), so that `insert ... values ($1)`
    into a json column works as it does on InsForge. Text goes untyped: Postgres reads it as the column's
    type."""
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    if isinstance(value, list):
        return [_as_node_pg_sends(item) for item in value]
    return value


async def _execute(
    conn: AsyncConnection[Any], statements: list[str], params: list[Any], *, explain: bool
) -> RawSqlResult:
    params = [_as_node_pg_sends(value) for value in params]
    result = RawSqlResult([], 0, [])
    cur = psycopg.AsyncRawCursor(conn, row_factory=dict_row)
    for statement in statements:
        text = f"EXPLAIN (FORMAT JSON, ANALYZE, BUFFERS) {statement}" if explain else statement
        try:
            await cur.execute(text, params or None)
        except psycopg.Error as exc:
            raise StatementFailed(exc, text) from None
        rows = await cur.fetchall() if cur.description else []
        fields = [{"name": c.name, "dataTypeID": c.type_code} for c in cur.description or ()]
        result = RawSqlResult(
            _json_safe(rows), len(rows) if cur.description else max(cur.rowcount, 0), fields
        )
    return result
