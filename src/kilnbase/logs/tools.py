"""The audit log as an MCP tool: an agent can read back what it (and everyone else) did."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from kilnbase import audit
from kilnbase.capability import Tool
from kilnbase.db.session import Database
from kilnbase.http.errors import require_admin_actor
from kilnbase.identity.actor import Actor
from kilnbase.logs.service import LogsService
from kilnbase.logs.sources import LogQuery


def logs_tools(database: Database) -> list[Tool]:
    async def search_audit_logs(
        actor: Actor,
        action: str | None = None,
        module: Annotated[str | None, Field(description="DATABASE, AUTH, AI, SECRETS, MCP, ...")] = None,
        limit: Annotated[int, Field(ge=1, le=200)] = 50,
        offset: Annotated[int, Field(ge=0, le=10_000_000)] = 0,
    ) -> dict[str, Any]:
        require_admin_actor(actor)
        rows, total = await audit.search(database, limit=limit, offset=offset, action=action, module=module)
        return {"data": rows, "total": total}

    return [
        Tool("search-audit-logs", "Audit entries, newest first, by action and module.", search_audit_logs)
    ]


def source_tools(service: LogsService) -> list[Tool]:
    async def get_container_logs(
        actor: Actor,
        source: Literal["insforge.logs", "postgREST.logs", "postgres.logs", "function.logs"],
        limit: Annotated[int, Field(ge=1, le=200)] = 20,
        search: Annotated[str | None, Field(max_length=200, description="text the lines contain")] = None,
    ) -> dict[str, Any]:
        return await service.source_logs(actor, source, LogQuery(limit=limit, search=search))

    return [
        Tool(
            "get-container-logs",
            "The newest lines of a log: insforge.logs (API requests), postgREST.logs (records API), "
            "postgres.logs (the database), function.logs (edge functions). Secrets are removed.",
            get_container_logs,
        )
    ]
