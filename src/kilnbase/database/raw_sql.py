"""Raw SQL for admins: `/advance/rawsql` as project_admin behind the parser guard, with a 30 s statement
timeout; `/advance/rawsql/unrestricted` as the owner. Both are audited.

Not through `Database.as_caller`: that helper pipelines, and a pipeline cannot carry a multi-statement
script. The role and timeout are set transaction-locally on a pool connection instead, the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row

from kilnbase.database import sql_guard
from kilnbase.database.database_errors import api_error_from
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError
from kilnbase.http.principal import Principal
from kilnbase.logs import audit

STATEMENT_TIMEOUT = "30s"


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


async def run(
    database: Database,
    principal: Principal,
    query: str,
    params: list[Any],
    *,
    explain: bool,
    unrestricted: bool,
    ip: str | None,
) -> RawSqlResult:
    if unrestricted:
        statements = sql_guard.split_statements(query) if query.strip() else []
    else:
        try:
            nodes = sql_guard.check(query)
        except sql_guard.GuardRefusal as exc:
            raise ApiError(
                403, "DATABASE_FORBIDDEN", str(exc), "Use plain SQL on tables, views and functions."
            ) from None
        statements = sql_guard.split_statements(query)
        if explain and not all(type(node).__name__ == "SelectStmt" for node in nodes):
            raise ApiError(400, "INVALID_INPUT", "explain is available for SELECT statements only")
    if not statements:
        raise ApiError(400, "INVALID_INPUT", "query must contain at least one SQL statement")
    if params and len(statements) > 1:
        raise ApiError(400, "INVALID_INPUT", "params can only be used with a single statement")
    result = await _execute(database, statements, params, explain=explain, unrestricted=unrestricted)
    action = ("EXPLAIN" if explain else "EXECUTE") + "_RAW_SQL" + ("_UNRESTRICTED" if unrestricted else "")
    await audit.record(
        database,
        actor=principal.actor,
        action=action,
        module="DATABASE",
        details={
            "query": query[:300],
            "paramCount": len(params),
            "rowsAffected": result.row_count,
            "executionRole": "root" if unrestricted else "project_admin",
        },
        ip=ip,
    )
    return result


async def _execute(
    database: Database, statements: list[str], params: list[Any], *, explain: bool, unrestricted: bool
) -> RawSqlResult:
    result = RawSqlResult([], 0, [])
    try:
        async with database.pool.connection() as conn, conn.transaction(force_rollback=explain):
            cur = psycopg.AsyncRawCursor(conn, row_factory=dict_row)
            await cur.execute("select set_config('statement_timeout', $1, true)", (STATEMENT_TIMEOUT,))
            if not unrestricted:
                await cur.execute("select set_config('role', 'project_admin', true)")
            for statement in statements:
                text = f"EXPLAIN (FORMAT JSON, ANALYZE, BUFFERS) {statement}" if explain else statement
                await cur.execute(text, params or None)
                rows = await cur.fetchall() if cur.description else []
                fields = [{"name": c.name, "dataTypeID": c.type_code} for c in cur.description or ()]
                result = RawSqlResult(
                    _json_safe(rows), len(rows) if cur.description else max(cur.rowcount, 0), fields
                )
            if unrestricted and not explain:
                await cur.execute("select system.reassign_public_objects_to_project_admin()")
    except psycopg.Error as exc:
        raise api_error_from(exc) from None
    return result
