"""Custom migrations through the API: list, apply (all statements in one transaction, as project_admin on
the request pool, behind the same parser guard as raw SQL, recorded in `system.custom_migrations` in the same
transaction), and dry-run with a risk level. Project migrations of Kilnbase itself are `db/migrate.py`, a
different thing."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.rows import dict_row

from kilnbase.database import migration_risk, sql_guard
from kilnbase.database.database_errors import api_error_from
from kilnbase.db.session import Database, DatabaseIdentity
from kilnbase.http.errors import ApiError

_VERSION = re.compile(r"[0-9]{1,20}")
_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_RESERVED_SCHEMAS = frozenset(
    {"auth", "system", "ai", "storage", "realtime", "pg_catalog", "information_schema"}
)


def _vet(sql: Any) -> tuple[list[str], tuple[Any, ...]]:
    if not isinstance(sql, str) or not sql.strip():
        raise ApiError(400, "MISSING_FIELD", "sql is required", "Send the migration's SQL as 'sql'.")
    try:
        nodes = sql_guard.check(sql)
        statements = sql_guard.split_statements(sql)
    except sql_guard.GuardRefusal as exc:
        raise ApiError(400, "DATABASE_FORBIDDEN", str(exc)) from None
    for node in nodes:
        for child in sql_guard.walk(node):
            schema = getattr(child, "schemaname", None)
            if isinstance(schema, str) and schema.lower() in _RESERVED_SCHEMAS:
                raise ApiError(
                    400, "DATABASE_FORBIDDEN", f"Custom migrations may not touch the {schema} schema."
                )
    return statements, nodes


def dry_run(sql: Any) -> dict[str, Any]:
    try:
        statements, nodes = _vet(sql)
    except ApiError as exc:
        if exc.code == "MISSING_FIELD":
            raise
        return {
            "valid": False,
            "statementCount": 0,
            "statements": [],
            "riskLevel": "DANGER",
            "riskFactors": [exc.message],
        }
    report = migration_risk.assess(nodes)
    return {
        "valid": True,
        "statementCount": len(statements),
        "statements": statements,
        "riskLevel": report.level,
        "riskFactors": report.factors,
    }


async def list_migrations(database: Database) -> dict[str, Any]:
    async with database.as_owner() as cur:
        await cur.execute(
            'select version, name, statements, created_at as "createdAt" from system.custom_migrations '
            "order by version::numeric desc"
        )
        rows = await cur.fetchall()
    return {"migrations": [{**row, "createdAt": row["createdAt"].isoformat()} for row in rows]}


async def apply(database: Database, identity: DatabaseIdentity, body: dict[str, Any]) -> dict[str, Any]:
    version = str(body.get("version", ""))
    name = body.get("name")
    if not _VERSION.fullmatch(version):
        raise ApiError(400, "INVALID_INPUT", "version must be digits, e.g. 20260101120000")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ApiError(400, "INVALID_INPUT", "name must be kebab-case, e.g. add-posts-table")
    statements, _ = _vet(body.get("sql"))
    try:
        async with database.transaction_as(identity) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("select pg_advisory_xact_lock(hashtext('system.custom_migrations'))")
            await cur.execute("select 1 from system.custom_migrations where version = %s", (version,))
            if await cur.fetchone():
                raise ApiError(409, "ALREADY_EXISTS", f"migration {version} was already applied")
            for statement in statements:
                await cur.execute(statement)
            await cur.execute(
                'select version, name, statements, created_at as "createdAt" '
                "from system.record_custom_migration(%s, %s, %s)",
                (version, name, statements),
            )
            row = await cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise ApiError(409, "ALREADY_EXISTS", f"migration {version} was already applied") from None
    except psycopg.Error as exc:
        raise api_error_from(exc) from None
    assert row is not None
    return {**row, "createdAt": row["createdAt"].isoformat(), "message": "Migration executed successfully"}
