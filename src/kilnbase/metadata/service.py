"""The semantic layer's service: what this backend holds, for admins and the agents they run.

The database part is read as the caller (the admin's `project_admin` role, on the request pool), so it shows
what that role sees; the configuration other capabilities keep in Kilnbase's own schemas (auth settings,
buckets, functions, channels, models) is read on the owner pool, without its secrets. Handing out the API key
is audited. Every section, InsForge's and Kilnbase's additions alike, is shown only to a caller with its
feature group's read scope (`sections`): the whole leaves the others out (and never reads them), a slice or a
table's schema refuses a caller who may not see its section. The schema fingerprint stays in the whole for
every caller: a digest that names nothing, which an agent's mutating tool calls are checked against.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kilnbase import INSFORGE_API_VERSION, audit
from kilnbase.config import Settings
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError, refuse_agent_keys, require_admin_actor
from kilnbase.identity.actor import Actor
from kilnbase.keys.project_keys import KeyRing
from kilnbase.metadata import catalog, project_state, sections
from kilnbase.metadata.markdown import FULL_DETAIL_TABLES, DatabaseView, ProjectView, render
from kilnbase.metadata.sections import AUTH, DATABASE, FUNCTIONS, REALTIME, SECTIONS, STORAGE, Section
from kilnbase.metadata.tables import edges, table_detail

SCHEMA = "public"
#: At most this many tables and views are listed (a project past it is told so).
MAX_RELATIONS = 1000
MAX_ROUTINES = 50
_GB = 1024**3


def _require_section(actor: Actor, section: Section) -> None:
    """An admin who may see `section` (an agent key needs its group's read scope)."""
    require_admin_actor(actor)
    sections.require(actor.principal, section)


def table_name(raw: str) -> tuple[str, str]:
    """`table` or `schema.table` → (schema, table); a name Postgres could not hold is a 400."""
    schema, dot, table = raw.partition(".")
    if not dot:
        schema, table = SCHEMA, raw
    for part in (schema, table):
        if not part or len(part) > 63 or "\x00" in part:
            raise ApiError(
                400, "INVALID_INPUT", f"Invalid table name: {raw!r}.", "Pass a table name such as posts."
            )
    return schema, table


class MetadataService:
    def __init__(self, settings: Settings, database: Database, keys: KeyRing) -> None:
        self.settings = settings
        self.database = database
        self.keys = keys

    # --- slices ------------------------------------------------------------------------------------------

    async def auth(self, actor: Actor) -> dict[str, Any]:
        _require_section(actor, AUTH)
        async with self.database.as_owner() as cur:
            return await project_state.auth(cur)

    async def schema_fingerprint(self, actor: Actor) -> str:
        """The schema's fingerprint as the metadata reports it, for contract checks (an agent's mutating tool
        call names the version it read; a changed schema refuses the call)."""
        require_admin_actor(actor)
        async with self.database.as_caller(actor.principal, read_only=True) as cur:
            return await catalog.fingerprint(cur)

    async def database_slice(self, actor: Actor) -> dict[str, Any]:
        _require_section(actor, DATABASE)
        async with self.database.as_caller(actor.principal, read_only=True) as cur:
            relations = await catalog.relations(cur, SCHEMA, MAX_RELATIONS + 1)
            size = await catalog.size_in_bytes(cur)
            fingerprint = await catalog.fingerprint(cur)
        return self._database_json(relations, size, fingerprint)

    def _database_json(self, relations: list[Any], size: int, fingerprint: str) -> dict[str, Any]:
        listed = relations[:MAX_RELATIONS]

        def entry(row: Any) -> dict[str, Any]:
            return {
                "tableName": row["name"],
                "recordCount": row["row_count"]
                if row["row_count"] is not None or row["kind"] == "view"
                else 0,
                "recordCountEstimated": row["row_count_estimated"],
                "rlsEnabled": row["rls"],
                "anonAccess": list(row["anon"]),
                "authenticatedAccess": list(row["authenticated"]),
            }

        body: dict[str, Any] = {
            "tables": [entry(r) for r in listed if r["kind"] == "table"],
            "views": [{**entry(r), "kind": r["kind"]} for r in listed if r["kind"] != "table"],
            "totalSizeInGB": round(size / _GB, 6),
            "schemaFingerprint": fingerprint,
            "hint": "Use GET /api/metadata/<table> (MCP get-table-schema) for a table's columns, keys, "
            "relationships, indexes, policies and triggers.",
        }
        if len(relations) > MAX_RELATIONS:
            body["truncated"] = True
        return body

    async def storage(self, actor: Actor) -> dict[str, Any]:
        _require_section(actor, STORAGE)
        async with self.database.as_owner() as cur:
            return await project_state.storage(cur, await project_state.installed(cur))

    async def functions(self, actor: Actor) -> list[dict[str, Any]]:
        _require_section(actor, FUNCTIONS)
        async with self.database.as_owner() as cur:
            return await project_state.functions(cur, await project_state.installed(cur))

    async def realtime(self, actor: Actor) -> dict[str, Any]:
        _require_section(actor, REALTIME)
        async with self.database.as_owner() as cur:
            return await project_state.realtime(cur, await project_state.installed(cur))

    # --- the whole ---------------------------------------------------------------------------------------

    async def _project_state(self, shown: tuple[Section, ...]) -> project_state.ProjectState:
        async with self.database.as_owner() as cur:
            return await project_state.read(cur, shown)

    async def overview(self, actor: Actor) -> dict[str, Any]:
        """InsForge's `GET /api/metadata` JSON, with Kilnbase's additions (`ai`, the schema fingerprint, and
        the summaries: `schedules`, `databaseWebhooks`, `advisor`, `kv`, `memory`): the sections this caller
        may see."""
        require_admin_actor(actor)
        shown = sections.visible(actor.principal)

        async def database_part() -> tuple[dict[str, Any] | None, str]:
            if DATABASE not in shown:
                return None, await self.schema_fingerprint(actor)
            found = await self.database_slice(actor)
            return found, found["schemaFingerprint"]

        state, (database, fingerprint) = await asyncio.gather(self._project_state(shown), database_part())
        found = state.sections if database is None else {**state.sections, DATABASE.key: database}
        return {
            **{section.key: found[section.key] for section in SECTIONS if section.key in found},
            "version": INSFORGE_API_VERSION,
            "schemaFingerprint": fingerprint,
        }

    async def markdown(self, actor: Actor) -> str:
        """The backend described for an agent (`markdown.py`): the sections this caller may see."""
        require_admin_actor(actor)
        shown = sections.visible(actor.principal)

        async def database_part() -> tuple[DatabaseView | None, str]:
            async with self.database.as_caller(actor.principal, read_only=True) as cur:
                fingerprint = await catalog.fingerprint(cur)
                if DATABASE not in shown:
                    return None, fingerprint
                relations = await catalog.relations(cur, SCHEMA, MAX_RELATIONS)
                names = [r["name"] for r in relations]
                details = (
                    await catalog.details(cur, SCHEMA, names) if len(names) <= FULL_DETAIL_TABLES else None
                )
                schema_edges = edges(await catalog.schema_foreign_keys(cur, SCHEMA))
                routines = await catalog.routines(cur, SCHEMA, MAX_ROUTINES)
            return DatabaseView(SCHEMA, relations, details, schema_edges, routines), fingerprint

        state, (database, fingerprint) = await asyncio.gather(self._project_state(shown), database_part())
        found = state.sections if database is None else {**state.sections, DATABASE.key: database}
        return render(
            ProjectView(
                version=INSFORGE_API_VERSION,
                fingerprint=fingerprint,
                sections=found,
                installed=state.installed,
            )
        )

    async def agent_context(self, actor: Actor) -> dict[str, Any]:
        """`GET /api/metadata?mcp=true`: the markdown as JSON lines (the official MCP server parses JSON and
        prints it indented, one line per entry), with the fingerprint and version beside it."""
        text = await self.markdown(actor)
        lines = text.rstrip("\n").split("\n")
        fingerprint = lines[1].removeprefix("schema fingerprint: ")
        return {
            "version": INSFORGE_API_VERSION,
            "schemaFingerprint": fingerprint,
            "format": "markdown-lines",
            "backend": lines,
        }

    async def table(self, actor: Actor, raw_name: str) -> dict[str, Any]:
        """`GET /api/metadata/:table`: `{<table>: {...}}` as InsForge answers `get-table-schema`; part of the
        database section, so an agent key needs `database:read`."""
        _require_section(actor, DATABASE)
        schema, name = table_name(raw_name)
        async with self.database.as_caller(actor.principal, read_only=True) as cur:
            relations = await catalog.relations(cur, schema, 1, name)
            if not relations:
                raise ApiError(
                    404,
                    "TABLE_NOT_FOUND",
                    f"Table {raw_name!r} does not exist.",
                    "List the tables with GET /api/metadata/database (MCP get-backend-metadata).",
                )
            found = await catalog.details(cur, schema, [name])
            schema_edges = edges(await catalog.schema_foreign_keys(cur, schema))
        return {raw_name: table_detail(relations[0], found, schema_edges)}

    # --- keys --------------------------------------------------------------------------------------------

    async def api_key(self, actor: Actor) -> dict[str, str]:
        """The project's API key, for an admin, never for an agent key: it holds every right without an agent
        key's limits (scopes, approvals, read-only mode), so no scope reaches it. A refusal is audited too."""
        async with audit.refusals(self.database, actor, "READ_API_KEY", "METADATA", {}):
            require_admin_actor(actor)
            refuse_agent_keys(
                actor,
                "An agent key may not read the project's API key: it would lift the key's scopes, "
                "approvals and read-only mode.",
                "Act with this agent key; ask an admin for a key with the scopes the work needs.",
            )
        await audit.record(self.database, actor, "READ_API_KEY", "METADATA")
        return {"apiKey": self.keys.current("api_key")}

    def anon_key(self, actor: Actor) -> dict[str, str]:
        require_admin_actor(actor)
        return {"anonKey": self.keys.current("anon_key")}

    def project_id(self, actor: Actor) -> dict[str, str | None]:
        require_admin_actor(actor)
        return {"projectId": self.settings.metadata.project_id}
