"""Custom migrations through the API: list, apply (all statements in one transaction, as project_admin on
the request pool, behind the same parser guard as raw SQL, recorded in `system.custom_migrations` in the same
transaction), and dry-run with a risk level. Project migrations of Kilnbase itself are `db/migrate.py`, a
different thing."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from pglast import ast
from pglast.enums import OnConflictAction
from psycopg.rows import dict_row

from kilnbase.capability import HeldForApproval
from kilnbase.database import migration_risk, sql_guard
from kilnbase.database.database_errors import StatementFailed, api_error_from, syntax_error
from kilnbase.db import whole_table_changes
from kilnbase.db.session import Database, DatabaseIdentity
from kilnbase.http.errors import ApiError

_VERSION = re.compile(r"[0-9]{1,20}")
_NAME = re.compile(r"[a-z0-9-]{1,200}")
#: Kilnbase's own schemas (the catalogs apart): an agent's SQL that deletes or changes their rows waits.
_OWNED_SCHEMAS = frozenset(whole_table_changes.OWN_SCHEMAS)
_RESERVED_SCHEMAS = _OWNED_SCHEMAS | {"pg_catalog", "information_schema"}


def _already_applied(version: str) -> ApiError:
    return ApiError(
        409,
        "ALREADY_EXISTS",
        f"migration {version} was already applied",
        "Give a new migration a version of its own; GET /api/database/migrations lists the applied ones.",
    )


def _vet(sql: Any) -> tuple[list[str], tuple[Any, ...]]:
    if not isinstance(sql, str) or not sql.strip():
        raise ApiError(400, "MISSING_FIELD", "sql is required", "Send the migration's SQL as 'sql'.")
    try:
        nodes = sql_guard.check(sql)
        statements = sql_guard.split_statements(sql)
    except sql_guard.SqlSyntaxError as exc:
        raise syntax_error(exc.message, exc.position, sql) from None
    except sql_guard.GuardRefusal as exc:
        raise ApiError(400, "DATABASE_FORBIDDEN", str(exc), sql_guard.REFUSED) from None
    reserved = _schemas_named(nodes, _RESERVED_SCHEMAS)
    if reserved:
        raise ApiError(
            400,
            "DATABASE_FORBIDDEN",
            f"Custom migrations may not touch the {reserved[0]} schema.",
            "Keep custom migrations to your own schemas, such as public.",
        )
    return statements, nodes


def _schemas_named(nodes: tuple[Any, ...], among: frozenset[str]) -> list[str]:
    """The schemas of `among` that the statements name, in the order they first appear (as written)."""
    named: dict[str, None] = {}
    for node in nodes:
        for child in sql_guard.walk(node):
            schema = getattr(child, "schemaname", None)
            if isinstance(schema, str) and schema.lower() in among:
                named[schema] = None
    return list(named)


def _kilnbase_rows_changed(nodes: tuple[Any, ...]) -> list[str]:
    """The tables of Kilnbase's own schemas whose rows the statements delete, update (an upsert's ON
    CONFLICT DO UPDATE among them), merge into or truncate, wherever the statement sits (a WITH, a rule, a
    function's SQL body), as written."""
    targets: dict[str, None] = {}
    for node in nodes:
        for child in sql_guard.walk(node):
            if isinstance(child, ast.DeleteStmt | ast.UpdateStmt | ast.MergeStmt) or _upsert(child):
                relations: tuple[Any, ...] = (child.relation,)
            elif isinstance(child, ast.TruncateStmt):
                relations = tuple(child.relations or ())
            else:
                continue
            for relation in relations:
                schema = getattr(relation, "schemaname", None)
                if isinstance(schema, str) and schema.lower() in _OWNED_SCHEMAS:
                    targets[f"{schema}.{relation.relname}"] = None
    return list(targets)


def _upsert(node: Any) -> bool:
    """An INSERT whose ON CONFLICT DO UPDATE rewrites the rows already there."""
    conflict = node.onConflictClause if isinstance(node, ast.InsertStmt) else None
    return conflict is not None and conflict.action == OnConflictAction.ONCONFLICT_UPDATE


def agent_risks(sql: Any) -> list[str]:
    """Why an agent's SQL (raw SQL, a migration, an import) needs a person (empty: it does not): the dry
    run's factors when it rates the SQL DANGER, and any DELETE, UPDATE, MERGE or TRUNCATE of a table in
    Kilnbase's own schemas.

    Unlike `dry_run`, SQL that names those schemas is rated, not called invalid: raw SQL and imports may read
    them, and the migration rule must not hide a wholesale delete written beside such a read. Their rows
    (users, files, realtime messages) have tools of their own, held where they destroy data, so SQL that
    deletes or changes them waits for a person too (an upsert that updates among them; creating policies
    on them, or inserting new rows, does not).
    SQL that does not parse, or that the guard refuses, is not held: it fails on its own."""
    if not isinstance(sql, str) or not sql.strip():
        return []
    try:
        nodes = sql_guard.check(sql)
    except (sql_guard.SqlSyntaxError, sql_guard.GuardRefusal):
        return []
    report = migration_risk.assess(nodes)
    reasons = list(report.factors) if report.level == "DANGER" else []
    changed = _kilnbase_rows_changed(nodes)
    if changed:
        reasons.append(
            f"DANGER: deletes or changes rows of Kilnbase's own {', '.join(changed)} (users, files, "
            "messages), which have tools of their own"
        )
    return reasons


def version_and_name(body: dict[str, Any], *, required: bool) -> tuple[str, str]:
    """A migration's version and name (InsForge's rules and words); absent ones are refused only when
    `required` (the dry run checks what it is given, so that it refuses what applying would)."""
    version, name = body.get("version"), body.get("name")
    if version is not None or required:
        version = str(version) if isinstance(version, str | int) and not isinstance(version, bool) else ""
        if not _VERSION.fullmatch(version):
            raise ApiError(
                400,
                "INVALID_INPUT",
                "Migration version must be a numeric string of at most 20 digits "
                "(e.g. 0001 or 20260418091500).",
                "Send version as up to 20 digits, e.g. a timestamp such as 20260418091500.",
            )
    if name is not None or required:
        name = name.strip() if isinstance(name, str) else ""
        if not name:
            raise ApiError(
                400,
                "INVALID_INPUT",
                "Migration name is required",
                "Name the migration in kebab-case, e.g. add-posts-table.",
            )
        if not _NAME.fullmatch(name):
            raise ApiError(
                400,
                "INVALID_INPUT",
                "Use lowercase letters, numbers, and hyphens only.",
                "Name the migration in kebab-case, e.g. add-posts-table (at most 200 characters).",
            )
    return str(version or ""), str(name or "")


def dry_run(body: dict[str, Any]) -> dict[str, Any]:
    """What applying `body` would run and how risky it is, without running it. A version or name that
    applying would refuse is refused here too (400), as is a body with no SQL."""
    version_and_name(body, required=False)
    sql = body.get("sql")
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


async def apply(
    database: Database, identity: DatabaseIdentity, body: dict[str, Any], *, hold_wholesale: bool = False
) -> dict[str, Any]:
    """Run and record the migration; with `hold_wholesale` (an agent's, not yet approved), roll it back and
    raise `HeldForApproval` when it deleted or updated every row of a table (`whole_table_changes`)."""
    version, name = version_and_name(body, required=True)
    statements, _ = _vet(body.get("sql"))
    try:
        async with database.transaction_as(identity) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("select pg_advisory_xact_lock(hashtext('system.custom_migrations'))")
            await cur.execute("select 1 from system.custom_migrations where version = %s", (version,))
            if await cur.fetchone():
                raise _already_applied(version)
            before = await whole_table_changes.counts(conn) if hold_wholesale else None
            for statement in statements:
                try:
                    await cur.execute(statement)
                except psycopg.Error as exc:
                    raise StatementFailed(exc, statement) from None
            if before is not None and (reasons := await whole_table_changes.wholesale(conn, before)):
                raise HeldForApproval("; ".join(reasons))
            await cur.execute(
                'select version, name, statements, created_at as "createdAt" '
                "from system.record_custom_migration(%s, %s, %s)",
                (version, name, statements),
            )
            row = await cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise _already_applied(version) from None
    except StatementFailed as failed:
        raise api_error_from(failed.error, failed.statement) from None
    except psycopg.Error as exc:
        raise api_error_from(exc) from None
    assert row is not None
    return {**row, "createdAt": row["createdAt"].isoformat(), "message": "Migration executed successfully"}
