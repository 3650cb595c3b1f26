"""The database admin service: every operation of `/api/database` outside the records API, for any caller.

Each method takes the `Actor`, checks it is an admin, runs the work as project_admin (owner-level SQL only
where asked for and allowed), records the audit entry, refused and failed attempts included, and reloads this
process's schema cache after DDL (other processes hear of it from the DDL event trigger). The HTTP routes,
and later the MCP tools, only parse and shape around these calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Literal

from kilnbase import audit
from kilnbase.capability import HeldForApproval
from kilnbase.config import Settings
from kilnbase.database import browse, bulk_data, catalog, custom_migrations, raw_sql
from kilnbase.database.policy_simulator import PolicySimulator, SimulationRequest
from kilnbase.database.tables import TableService, identifier
from kilnbase.db.schema_cache import SchemaCache
from kilnbase.db.session import Database
from kilnbase.http.agent_scopes import read_only_refusal, scope_refusal
from kilnbase.http.errors import ApiError, require_admin_actor
from kilnbase.identity.actor import Actor
from kilnbase.identity.agent_keys import AgentKeys

MODULE = "DATABASE"
CatalogKind = Literal["schemas", "functions", "indexes", "policies", "triggers"]


def _refuse_agents_destructive_import(actor: Actor, content: bytes, truncate: bool) -> None:
    """An agent's import may not do what would wait for a person's approval as SQL or a migration (drops,
    TRUNCATE, DELETE or UPDATE without WHERE, RLS switched off, dynamic SQL, and, found once it ran, a
    change of every row of a table: `import_sql`), nor truncate: an import is raw SQL by another door, and
    no tool holds it for approval, so such a file is refused (403) and the agent is sent to the doors that
    do."""
    if actor.principal.agent is None:
        return
    reasons = custom_migrations.agent_risks(content.decode("utf-8", errors="replace"))
    if truncate:
        reasons.append("truncate empties the tables the file writes to")
    if reasons:
        raise _agent_import_refused(reasons)


def _agent_import_refused(reasons: list[str]) -> ApiError:
    return ApiError(
        403,
        "FORBIDDEN",
        "An agent's SQL import cannot make destructive changes: " + "; ".join(reasons),
        "Send this SQL as a migration (POST /api/database/migrations, or the apply-migration tool), "
        "where a person approves it, or import without it.",
    )


def _agent_bulk_upsert_refused(reason: str) -> ApiError:
    """An agent key's multipart bulk upsert (`POST /api/database/advance/bulk-upsert`) that updated every row
    of a table of two or more: rolled back and refused, as the records API's upsert of every row is, rather
    than held. The REST approval gate holds a request by storing it as a tool's call, and it could store
    this one only by buffering every agent upload (up to the upload limit, 100 MB by default) in case it
    turns out to need a person, since only the upsert itself tells; and the route takes any `schema`,
    where the `bulk-upsert` tool takes the public schema's tables. The tool, which takes the rows inline,
    is held and replayed exactly: the agent is sent there, or to send only the rows to change."""
    return ApiError(
        403,
        "FORBIDDEN",
        f"An agent key may not update every row of a table by bulk upsert: the upload {reason}, so nothing "
        "was changed.",
        "Send only the rows to change, so that a row is left as it was (or leave upsertKey out to insert "
        "new rows only); to rewrite every row, call the bulk-upsert MCP tool with the same rows, which "
        "waits for a person's approval.",
    )


def _refuse_agents_simulated_write(actor: Actor, request: SimulationRequest, agent_keys: AgentKeys) -> None:
    """An agent's INSERT, UPDATE or DELETE simulation needs what the write itself would: `database:write`,
    and read-only mode off. It is rolled back, but it runs: an INSERT draws sequence values, and triggers
    run, which no rollback undoes, and a read scope changes nothing (`tests/security/test_read_scopes.py`).
    A SELECT simulation runs in a read-only transaction, so `database:read` reaches it."""
    if not actor.is_unapproved_agent or request.operation == "SELECT":
        return
    if agent_keys.read_only:
        raise read_only_refusal()
    if not actor.principal.allows("database", "write"):
        raise scope_refusal("database", "write", "simulate-policy")


class DatabaseAdmin:
    def __init__(
        self, settings: Settings, database: Database, schema_cache: SchemaCache, agent_keys: AgentKeys
    ) -> None:
        self.database = database
        self.schema_cache = schema_cache
        self.agent_keys = agent_keys
        self.admin_timeout = settings.db_admin_statement_timeout
        self.column_key_version = settings.column_key_version
        self.browse_max_rows = settings.db_browse_max_rows
        self.browse_cell_max_bytes = settings.db_browse_cell_max_bytes
        self.policy_simulator = PolicySimulator(database)

    @contextlib.asynccontextmanager
    async def _audited(
        self, actor: Actor, action: str, details: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """Record `action` once the block ends: a success (with what the block added to `details`), a
        failure in the database, a refusal before anything ran, or an agent's SQL held for a person once
        it ran (rolled back: the trail shows the attempt, not only the change request it became)."""
        try:
            async with audit.refusals(self.database, actor, action, MODULE, details):
                require_admin_actor(actor)
                yield details
        except HeldForApproval as exc:
            await audit.record(
                self.database, actor, action, MODULE, {**details, "heldFor": exc.reason}, outcome="held"
            )
            raise
        await audit.record(self.database, actor, action, MODULE, details)

    async def _schema_changed(self) -> None:
        """DDL notifies every process; this one reloads at once so the caller's next request sees it."""
        await self.schema_cache.reload()

    # --- tables --------------------------------------------------------------------------------------------

    async def require_schema(self, schema: str) -> None:
        """404 for a schema that does not exist. The agent's listing tools ask it first: to an agent that
        mistyped the name, an empty list reads as "there is nothing in it yet". The REST routes keep
        InsForge's empty list."""
        if not await catalog.schema_exists(self.database, schema):
            raise ApiError(
                404,
                "DATABASE_NOT_FOUND",
                f"Schema '{schema}' does not exist.",
                "List the schemas with GET /api/database/schemas.",
            )

    async def list_tables(self, actor: Actor, schema: str = "public") -> list[str]:
        require_admin_actor(actor)
        return await TableService(self.database, actor.principal).list_tables(schema)

    async def table_schema(self, actor: Actor, table: str) -> dict[str, Any]:
        require_admin_actor(actor)
        return await TableService(self.database, actor.principal).table_schema(table)

    async def browse_table(self, actor: Actor, table: str, params: dict[str, str]) -> browse.BrowsePage:
        """A page of a table's rows for a person looking at it (`database/browse.py`), as the admin, in a
        read-only transaction: it is a read (read-only mode reaches it), and a page runs the app's code (an
        app type's cast to json, a sort's comparison), which must not write, as an explained statement or a
        SELECT simulation cannot. The rows are the table's data, which `database:read` does not reach (its
        tools show schemas, policies, counts and plans; a simulation withholds its sample rows): an agent
        key browses only with a scope that reads rows too (`records:read`, `*:read`)."""
        require_admin_actor(actor)
        if actor.principal.agent is not None and not actor.principal.allows("records", "read"):
            raise scope_refusal("records", "read")
        request = browse.BrowseRequest.parse(params, self.browse_max_rows)
        async with TableService(self.database, actor.principal).cursor(read_only=True) as cur:
            return await browse.browse(cur, identifier(table, "table"), request, self.browse_cell_max_bytes)

    async def create_table(self, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
        async with self._audited(actor, "CREATE_TABLE", {"table": body.get("tableName")}) as details:
            tables = TableService(self.database, actor.principal, self.column_key_version)
            result = await tables.create_table(body)
            details["columns"] = [c.get("columnName") for c in result["columns"]]
        await self._schema_changed()
        return result

    async def update_table(self, actor: Actor, table: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._audited(actor, "UPDATE_TABLE", {"table": table}) as details:
            tables = TableService(self.database, actor.principal, self.column_key_version)
            result = await tables.update_table(table, body)
            details["operations"] = result["operations"]
        await self._schema_changed()
        return result

    async def delete_table(self, actor: Actor, table: str) -> dict[str, Any]:
        async with self._audited(actor, "DELETE_TABLE", {"table": table}):
            tables = TableService(self.database, actor.principal)
            result = await tables.delete_table(table, hold=actor.is_unapproved_agent)
        await self._schema_changed()
        return result

    async def catalog(self, actor: Actor, kind: CatalogKind, schema: str) -> dict[str, Any]:
        require_admin_actor(actor)
        if kind == "schemas":
            return await catalog.schemas(self.database)
        listing = {
            "functions": catalog.functions,
            "indexes": catalog.indexes,
            "policies": catalog.policies,
            "triggers": catalog.triggers,
        }[kind]
        return await listing(self.database, schema)

    async def simulate_policy(self, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
        """Run one data operation as a request role and report what RLS decided (`policy_simulator`),
        audited as InsForge audits it (`SIMULATE_RLS_POLICY`). Sample rows are the table's data, which
        `database:read` does not reach otherwise (its tools show schemas, policies, counts and plans): an
        agent key gets them only with a scope that reads rows (`records:read`)."""
        details: dict[str, Any] = {
            key: str(body.get(key))[:63] if body.get(key) is not None else None
            for key in ("schema", "table", "operation", "role")
        }
        async with self._audited(actor, "SIMULATE_RLS_POLICY", details):
            request = SimulationRequest.of(body)
            details["schema"] = request.schema_name
            _refuse_agents_simulated_write(actor, request, self.agent_keys)
            sample_rows = actor.principal.agent is None or actor.principal.allows("records", "read")
            result = await self.policy_simulator.simulate(request, sample_rows=sample_rows)
            details["decision"] = result["decision"]
        return result

    # --- SQL -----------------------------------------------------------------------------------------------

    async def raw_sql(
        self,
        actor: Actor,
        query: str,
        params: list[Any],
        *,
        explain: bool = False,
        unrestricted: bool = False,
    ) -> raw_sql.RawSqlResult:
        action = (
            ("EXPLAIN" if explain else "EXECUTE") + "_RAW_SQL" + ("_UNRESTRICTED" if unrestricted else "")
        )
        details: dict[str, Any] = {
            "query": query[:300],
            "paramCount": len(params),
            "executionRole": "owner" if unrestricted else "project_admin",
        }
        async with self._audited(actor, action, details):
            statements = raw_sql.check_allowed(
                actor, query, params, explain=explain, unrestricted=unrestricted
            )
            result = await raw_sql.run(
                self.database,
                actor,
                statements,
                params,
                explain=explain,
                unrestricted=unrestricted,
                admin_timeout=self.admin_timeout,
            )
            details["rowsAffected"] = result.row_count
        if not explain:
            await self._schema_changed()
        return result

    async def list_migrations(self, actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        return await custom_migrations.list_migrations(self.database)

    async def apply_migration(self, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
        details: dict[str, Any] = {
            "version": str(body.get("version", ""))[:40],
            "name": str(body.get("name", ""))[:200],
        }
        async with self._audited(actor, "APPLY_MIGRATION", details):
            result = await custom_migrations.apply(
                self.database, actor.principal, body, hold_wholesale=actor.is_unapproved_agent
            )
            details["statementCount"] = len(result["statements"])
        await self._schema_changed()
        return result

    def dry_run_migration(self, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
        require_admin_actor(actor)
        return custom_migrations.dry_run(body)

    # --- bulk data -----------------------------------------------------------------------------------------

    async def bulk_upsert(
        self,
        actor: Actor,
        *,
        schema: str,
        table: str,
        content: bytes,
        filename: str,
        upsert_key: str | None,
        as_tool: bool = False,
    ) -> dict[str, Any]:
        """Upsert the file's rows. An agent's upsert that updated every row of a table of two or more is
        rolled back: as the `bulk-upsert` tool's call (`as_tool`), which an approval runs again, it is held
        (`HeldForApproval`, as an agent's SQL is); as the multipart route's, it is refused
        (`_agent_bulk_upsert_refused` says why no approval holds it)."""
        async with self._audited(actor, "BULK_UPSERT", {"table": table, "filename": filename}) as details:
            try:
                result = await bulk_data.bulk_upsert(
                    self.database,
                    actor.principal,
                    schema=schema,
                    table_name=table,
                    rows=bulk_data.parse_rows(content, filename),
                    upsert_key=upsert_key,
                    hold_wholesale=actor.is_unapproved_agent,
                )
            except HeldForApproval as exc:
                if as_tool:
                    raise
                raise _agent_bulk_upsert_refused(exc.reason) from None
            details["rowsAffected"] = result["rowsAffected"]
        return result

    async def export(self, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
        async with self._audited(actor, "EXPORT_DATABASE", {"format": body.get("format", "sql")}):
            return await bulk_data.export(self.database, actor.principal, bulk_data.ExportRequest.parse(body))

    async def import_sql(self, actor: Actor, content: bytes, filename: str, truncate: bool) -> dict[str, Any]:
        details: dict[str, Any] = {"filename": filename, "truncate": truncate}
        async with self._audited(actor, "IMPORT_DATABASE", details):
            _refuse_agents_destructive_import(actor, content, truncate)
            try:
                result = await bulk_data.import_sql(
                    self.database,
                    actor.principal,
                    content,
                    filename,
                    truncate,
                    hold_wholesale=actor.is_unapproved_agent,
                )
            except HeldForApproval as exc:
                # (SQL that changed every row of a table: no tool runs an import for an approval to run.)
                raise _agent_import_refused([exc.reason]) from None
            details["rowsImported"] = result["rowsImported"]
        await self._schema_changed()
        return result
