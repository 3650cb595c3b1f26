"""The logs capability's service: the audit trail (search, statistics, pruning), the log sources an agent
reads, and the MCP server's tool-call reports (`POST /api/usage/mcp`), which land in the audit log."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio.to_thread

from kilnbase import audit
from kilnbase.config import Settings
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError, require_admin_actor, require_person
from kilnbase.identity.actor import Actor
from kilnbase.identity.principal import CredentialKind
from kilnbase.logs import sources
from kilnbase.logs.request_log import RequestLog
from kilnbase.logs.sources import LogQuery

MCP_MODULE = "MCP"
_TOOL_NAME_CHARS = 128


class LogsService:
    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self.request_log = RequestLog(settings.logs, database)

    # --- the audit trail ---------------------------------------------------------------------------------

    async def audits(self, caller: Actor, **filters: Any) -> tuple[list[dict[str, Any]], int]:
        """A page of the audit trail (`filters` as `audit.search` takes them) and the total that match."""
        require_admin_actor(caller)
        return await audit.search(self.database, **filters)

    async def audit_stats(self, actor: Actor, days: int) -> dict[str, Any]:
        """InsForge's `{totalLogs, uniqueActors, uniqueModules, actionsByModule, recentActivity}` over the
        last `days` days."""
        require_admin_actor(actor)
        since = datetime.now(UTC) - timedelta(days=days)
        async with self.database.as_owner() as cur:
            await cur.execute(
                "select count(*) as total, count(distinct actor) as actors, "
                "count(distinct module) as modules "
                "from system.audit_logs where created_at >= %s",
                (since,),
            )
            totals = await cur.fetchone() or {}
            await cur.execute(
                "select module, count(*) as n from system.audit_logs where created_at >= %s group by module "
                "order by module",
                (since,),
            )
            by_module = {row["module"]: int(row["n"]) for row in await cur.fetchall()}
        recent, _total = await audit.search(self.database, limit=10, offset=0, start_date=since.isoformat())
        return {
            "totalLogs": int(totals.get("total", 0)),
            "uniqueActors": int(totals.get("actors", 0)),
            "uniqueModules": int(totals.get("modules", 0)),
            "actionsByModule": by_module,
            "recentActivity": recent,
        }

    async def prune_audits(self, actor: Actor, days_to_keep: int) -> dict[str, Any]:
        """`DELETE /api/logs/audits?days_to_keep=N`: entries older than N days go; the pruning is recorded.
        Not by an agent key, whatever its scopes: the trail is how people review and replay what agents did,
        and an agent that could prune it could erase the record of its own calls."""
        require_person(
            actor,
            "An agent key may not prune the audit trail.",
            "Ask a person with admin rights to prune it (DELETE /api/logs/audits with the API key).",
        )
        async with self.database.as_owner() as cur:
            await cur.execute(
                "delete from system.audit_logs where created_at < now() - make_interval(days => %s)",
                (days_to_keep,),
            )
            deleted = cur.rowcount
            await audit.record(
                cur, actor, "CLEAR_AUDIT_LOGS", "LOGS", {"daysToKeep": days_to_keep, "deleted": deleted}
            )
        return {"message": "Audit logs cleared successfully", "deleted": deleted}

    # --- log sources -------------------------------------------------------------------------------------

    def sources(self, actor: Actor) -> list[dict[str, str]]:
        require_admin_actor(actor)
        tokens = {
            "insforge.logs": "request-log",
            "postgREST.logs": "records-request-log",
            "postgres.logs": "postgres.log" if self._postgres_log_file() else "pg_stat_activity",
            "function.logs": "functions.logs",
        }
        return [
            {"id": str(number), "name": name, "token": tokens[name]}
            for number, name in enumerate(sources.SOURCES, 1)
        ]

    def _postgres_log_file(self) -> Path | None:
        path = self.settings.data_dir / "log" / "postgres.log"
        return path if path.is_file() else None

    async def source_logs(self, actor: Actor, source: str, query: LogQuery) -> dict[str, Any]:
        """`{logs, total}` of one source (InsForge's `GET /api/logs/:source`)."""
        require_admin_actor(actor)
        if source not in sources.SOURCES:
            raise ApiError(
                404,
                "LOG_SOURCE_NOT_FOUND",
                f"Unknown log source {source!r}.",
                f"Use one of: {', '.join(sources.SOURCES)} (GET /api/logs/sources).",
            )
        lines: list[dict[str, Any]]
        if source in ("insforge.logs", "postgREST.logs"):
            await self.request_log.flush()
            async with self.database.as_owner() as cur:
                lines = await sources.request_lines(cur, query, records_only=source == "postgREST.logs")
        elif source == "postgres.logs":
            path = self._postgres_log_file()
            if path is not None:
                lines = await anyio.to_thread.run_sync(sources.postgres_file_lines, path, query)
            else:
                async with self.database.as_owner() as cur:
                    lines = await sources.postgres_activity_lines(cur, query)
        else:
            async with self.database.as_owner() as cur:
                lines = await sources.function_lines(cur, query)
        for line in lines:
            line["source"] = source
        return {"logs": lines, "total": len(lines)}

    async def source_stats(self, actor: Actor) -> list[dict[str, Any]]:
        """`GET /api/logs/stats`: per source, the lines available (up to 1,000, as InsForge counts) and the
        time of the last."""
        stats = []
        for source in sources.SOURCES:
            lines = (await self.source_logs(actor, source, LogQuery(limit=1000)))["logs"]
            stamps = [line["timestamp"] for line in lines if line["timestamp"]]
            stats.append(
                {"source": source, "count": len(lines), "lastActivity": max(stamps) if stamps else None}
            )
        return stats

    async def search(
        self, actor: Actor, text: str, source: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """`GET /api/logs/search`: lines of one source, or of all, that contain `text`, newest first (among
        the newest 1,000 of each source)."""
        names = (source,) if source else sources.SOURCES
        found: list[dict[str, Any]] = []
        for name in names:
            found += (await self.source_logs(actor, name, LogQuery(limit=1000, search=text)))["logs"]
        found.sort(key=lambda line: line["timestamp"] or "", reverse=True)
        return found[offset : offset + limit], len(found)

    # --- MCP usage ---------------------------------------------------------------------------------------

    async def record_mcp_usage(self, actor: Actor, tool_name: Any, success: Any) -> dict[str, bool]:
        """A tool call the official MCP server reports (API key only, as InsForge's `verifyApiKey`)."""
        if actor.principal.kind is not CredentialKind.API_KEY:
            raise ApiError(
                401,
                "AUTH_INVALID_API_KEY",
                "This endpoint needs the project's API key.",
                "Send it as x-api-key.",
            )
        if not isinstance(tool_name, str) or not tool_name.strip():
            raise ApiError(400, "INVALID_INPUT", "tool_name is required", "Send {tool_name, success}.")
        if not isinstance(success, bool):
            raise ApiError(400, "INVALID_INPUT", "success must be a boolean", "Send {tool_name, success}.")
        tool = tool_name.strip()[:_TOOL_NAME_CHARS]
        await audit.record(
            self.database,
            dataclasses.replace(actor, tool=tool),
            "MCP_TOOL_CALL",
            MCP_MODULE,
            {"toolName": tool, "success": success},
            outcome="success" if success else "failed",
        )
        return {"success": True}

    async def mcp_usage(self, actor: Actor, limit: int, success: bool) -> dict[str, Any]:
        """`GET /api/usage/mcp`: the latest reported tool calls,
        `{records: [{tool_name, success, created_at}]}`."""
        require_admin_actor(actor)
        async with self.database.as_owner() as cur:
            await cur.execute(
                "select id::text, tool, outcome = 'success' as success, created_at from system.audit_logs "
                "where module = %s and action = 'MCP_TOOL_CALL' and (outcome = 'success') = %s "
                "order by created_at desc limit %s",
                (MCP_MODULE, success, limit),
            )
            rows = await cur.fetchall()
        return {
            "records": [
                {
                    "id": row["id"],
                    "tool_name": row["tool"],
                    "success": row["success"],
                    "created_at": row["created_at"].isoformat().replace("+00:00", "Z"),
                }
                for row in rows
            ]
        }
