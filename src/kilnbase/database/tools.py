"""The database capability's MCP tools: the same `DatabaseAdmin` calls as the HTTP routes, so each runs as
project_admin under the caller's rights and is audited by the service. Names follow InsForge's MCP server
where it has the tool (`get-table-schema`, `run-raw-sql`, `bulk-upsert`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field

from kilnbase.capability import Tool
from kilnbase.database import custom_migrations
from kilnbase.database.admin import CatalogKind, DatabaseAdmin
from kilnbase.database.policy_simulator import DEFAULT_SAMPLE_LIMIT, MAX_SAMPLE_LIMIT, Operation, Role
from kilnbase.database.raw_sql import OWNER_SQL_SCOPE
from kilnbase.database.tables import drop_reason, table_exists
from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import Actor

Table = Annotated[str, Field(description="Table name in the public schema", min_length=1, max_length=63)]
Schema = Annotated[
    str,
    Field(
        description="Schema name; list-database-objects kind=schemas lists them", min_length=1, max_length=63
    ),
]
Columns = Annotated[
    list[dict[str, Any]],
    Field(
        description="Columns: {columnName, type (string|integer|float|boolean|date|datetime|uuid|json or a "
        "Postgres type), isNullable, isUnique, defaultValue?, foreignKey?}. id, created_at and updated_at "
        "are added for you."
    ),
]


def dangerous_sql(sql: Any) -> str | None:
    """Why SQL needs approval when an agent runs it (`custom_migrations.agent_risks`): the migration dry run
    rates it DANGER (drops, TRUNCATE, DELETE or UPDATE without WHERE, RLS switched off, dynamic SQL), or it
    deletes or changes rows of Kilnbase's own tables. SQL that does not parse is not held: it fails on its
    own. What its text cannot tell, SQL whose WHERE turns out to match every row of a table, is held once it
    ran (`whole_table_changes`, raised as `HeldForApproval` by the service)."""
    return "; ".join(custom_migrations.agent_risks(sql)) or None


def dangerous_query(arguments: Mapping[str, Any]) -> str | None:
    """`dangerous_sql` of a tool call's `query`: what run-raw-sql and run-owner-sql both hold."""
    return dangerous_sql(arguments.get("query"))


#: What `update-table-schema`'s `changes` may hold (PATCH /api/database/tables/:t/schema's body).
SCHEMA_CHANGES = (
    "addColumns",
    "dropColumns",
    "updateColumns",
    "addForeignKeys",
    "dropForeignKeys",
    "renameTable",
)


def checked_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` as the service takes it, refused when it would change nothing. The route keeps InsForge's
    leniency (unknown keys ignored); a tool call that did nothing while reporting success would leave an
    agent believing a column it misnamed (`addColumn`) now exists."""
    unknown = [key for key in changes if key not in SCHEMA_CHANGES]
    rename = changes.get("renameTable")
    if rename is not None and not (isinstance(rename, dict) and rename.get("newTableName")):
        unknown.append("renameTable (it takes {newTableName})")
    if unknown or not any(changes.get(key) for key in SCHEMA_CHANGES):
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"changes does not take {', '.join(unknown)}; nothing was changed."
            if unknown
            else "changes names no change; nothing was changed.",
            f"Send at least one of {', '.join(SCHEMA_CHANGES)}, e.g. "
            '{"addColumns": [{"columnName": "title", "type": "string", "isNullable": true}]}.',
        )
    return changes


def dropped_columns(arguments: Mapping[str, Any]) -> str | None:
    """Why a schema change needs approval when an agent makes it: it drops columns, and their data, as
    `ALTER TABLE ... DROP COLUMN` does in SQL, which the migration dry run rates DANGER."""
    changes = arguments.get("changes")
    dropped = changes.get("dropColumns") if isinstance(changes, Mapping) else None
    if not dropped:
        return None
    names = ", ".join(str(name) for name in dropped) if isinstance(dropped, list) else str(dropped)
    return f"drops columns {names} of table {arguments.get('tableName')} and their data"


def database_tools(admin: DatabaseAdmin) -> list[Tool]:
    async def list_tables(actor: Actor, schema: Schema = "public") -> list[str]:
        tables = await admin.list_tables(actor, schema)  # (the admin check first)
        if not tables:
            await admin.require_schema(schema)
        return tables

    async def get_table_schema(actor: Actor, tableName: Table) -> dict[str, Any]:
        return await admin.table_schema(actor, tableName)

    async def list_database_objects(
        actor: Actor, kind: CatalogKind, schema: Schema = "public"
    ) -> dict[str, Any]:
        listing = await admin.catalog(actor, kind, schema)  # (the admin check first)
        if kind != "schemas":
            await admin.require_schema(schema)
        return listing

    async def run_raw_sql(
        actor: Actor,
        query: Annotated[str, Field(description="SQL, run as project_admin under a statement timeout")],
        params: Annotated[list[Any] | None, Field(description="Values for $1, $2, ...")] = None,
    ) -> dict[str, Any]:
        result = await admin.raw_sql(actor, query, list(params or []))
        return result.as_json()

    async def run_owner_sql(actor: Actor, query: str, params: list[Any] | None = None) -> dict[str, Any]:
        result = await admin.raw_sql(actor, query, list(params or []), unrestricted=True)
        return result.as_json()

    async def explain_sql(actor: Actor, query: str) -> dict[str, Any]:
        result = await admin.raw_sql(actor, query, [], explain=True)
        return result.as_json()

    async def create_table(
        actor: Actor, tableName: Table, columns: Columns, rlsEnabled: bool = True
    ) -> dict[str, Any]:
        return await admin.create_table(
            actor, {"tableName": tableName, "columns": columns, "rlsEnabled": rlsEnabled}
        )

    async def update_table_schema(
        actor: Actor,
        tableName: Table,
        changes: Annotated[
            dict[str, Any],
            Field(
                description="{addColumns?, dropColumns?, updateColumns?, addForeignKeys?, dropForeignKeys?, "
                "renameTable?}, as PATCH /api/database/tables/:t/schema takes"
            ),
        ],
    ) -> dict[str, Any]:
        return await admin.update_table(actor, tableName, checked_changes(changes))

    async def delete_table(actor: Actor, tableName: Table) -> dict[str, Any]:
        return await admin.delete_table(actor, tableName)

    async def simulate_policy(
        actor: Actor,
        table: Annotated[str, Field(description="The table, in `schema`", min_length=1, max_length=63)],
        operation: Operation,
        role: Annotated[Role, Field(description="The request role the operation runs as")],
        claims: Annotated[
            dict[str, Any] | None,
            Field(description='JWT claims, e.g. {"sub": "<user id>"} for auth.uid(); role is set for you'),
        ] = None,
        row: Annotated[
            dict[str, Any] | None, Field(description="INSERT's values, or UPDATE's SET (required for UPDATE)")
        ] = None,
        match: Annotated[
            dict[str, Any] | None,
            Field(description="WHERE column = value (null: IS NULL) for SELECT, UPDATE and DELETE"),
        ] = None,
        sampleLimit: Annotated[int, Field(ge=0, le=MAX_SAMPLE_LIMIT)] = DEFAULT_SAMPLE_LIMIT,
        schema: Schema = "public",
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"schema": schema, "table": table, "operation": operation, "role": role}
        body |= {"claims": claims, "row": row, "match": match, "sampleLimit": sampleLimit}
        return await admin.simulate_policy(actor, body)

    async def list_migrations(actor: Actor) -> dict[str, Any]:
        return await admin.list_migrations(actor)

    async def dry_run_migration(actor: Actor, sql: str) -> dict[str, Any]:
        return admin.dry_run_migration(actor, {"sql": sql})

    async def apply_migration(
        actor: Actor,
        version: Annotated[str, Field(description="A unique, increasing version, e.g. 20261204120000")],
        name: Annotated[
            str, Field(description="Lowercase letters, digits and hyphens, e.g. add-posts-table")
        ],
        sql: str,
    ) -> dict[str, Any]:
        return await admin.apply_migration(actor, {"version": version, "name": name, "sql": sql})

    async def bulk_upsert(
        actor: Actor,
        table: Table,
        content: Annotated[str, Field(description="The rows, as CSV text (with a header) or a JSON array")],
        format: Literal["csv", "json"] = "json",
        upsertKey: str | None = None,
    ) -> dict[str, Any]:
        return await admin.bulk_upsert(
            actor,
            schema="public",
            table=table,
            content=content.encode(),
            filename=f"rows.{format}",
            upsert_key=upsertKey,
            as_tool=True,  # an agent's that rewrote every row is held, and an approval runs it again
        )

    async def table_dropped(arguments: Mapping[str, Any]) -> str | None:
        """Why an agent's delete-table waits for a person: it drops the table and its data. A table that
        is not there is not held: the call fails on its own with 404, and no one is asked to approve it. (Nor
        dropped if made in the meantime: the service looks again, in the drop's transaction, and holds it.)"""
        table = arguments.get("tableName")
        if isinstance(table, str) and "\x00" not in table:
            async with admin.database.as_owner() as cur:
                if not await table_exists(cur, table):
                    return None
        return drop_reason(str(table))

    return [
        Tool("list-tables", "List the tables of a schema.", list_tables),
        Tool(
            "get-table-schema",
            "A table's columns, keys, indexes, RLS state and policies, and row count.",
            get_table_schema,
        ),
        Tool(
            "list-database-objects",
            "List schemas, functions, indexes, policies or triggers.",
            list_database_objects,
        ),
        Tool(
            "run-raw-sql",
            "Run SQL as project_admin (audited; DDL reloads the schema).",
            run_raw_sql,
            read_only=False,
            needs_approval=dangerous_query,
        ),
        Tool(
            "run-owner-sql",
            "Run SQL as the database owner (POST /api/database/advance/rawsql/unrestricted), once approved.",
            run_owner_sql,
            read_only=False,
            # The scope grants the owner's privileges, not a way around a person: the SQL run-raw-sql would
            # hold (a drop, TRUNCATE, a write without WHERE, Kilnbase's own tables) is held here too.
            needs_approval=dangerous_query,
            needs_scope=OWNER_SQL_SCOPE,
            # Not on `/mcp`: an agent key's owner-level SQL (`database:owner-sql`) is held as this tool's
            # call by the REST approval gate, before it runs (as above) or once it changed every row of a
            # table, and an approval runs it here.
            offered=False,
        ),
        Tool("explain-sql", "Show the query plan of a statement without running it.", explain_sql),
        Tool(
            "simulate-policy",
            "Check RLS policies: run a SELECT, INSERT, UPDATE or DELETE as anon, authenticated or "
            "project_admin with the JWT claims given, always rolled back, and get the decision (bypass, "
            "denied, partial, allowed), rows visible/total/affected, the applicable policies and why. "
            "Simulated writes need database:write.",
            simulate_policy,
        ),
        Tool("create-table", "Create a table (RLS on unless rlsEnabled is false).", create_table, False),
        Tool(
            "update-table-schema",
            "Add, drop, rename or change columns and foreign keys.",
            update_table_schema,
            read_only=False,
            needs_approval=dropped_columns,
        ),
        Tool(
            "delete-table",
            "Drop a table and its data.",
            delete_table,
            read_only=False,
            needs_approval=table_dropped,
        ),
        Tool("list-migrations", "The custom migrations applied so far.", list_migrations),
        Tool(
            "dry-run-migration",
            "Check migration SQL without running it: statements and a risk level (SAFE/WARNING/DANGER).",
            dry_run_migration,
        ),
        Tool(
            "apply-migration",
            "Apply migration SQL in one transaction and record it.",
            apply_migration,
            read_only=False,
            needs_approval=lambda arguments: dangerous_sql(arguments.get("sql")),
        ),
        Tool(
            "bulk-upsert",
            "Insert or update many rows from CSV or JSON text (an agent's that updates every row of a table "
            "waits for approval).",
            bulk_upsert,
            False,
        ),
    ]
