"""The audit log as an MCP tool: an agent can read back what it (and everyone else) did."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from kilnbase import audit
from kilnbase.capability import Tool
from kilnbase.db.session import Database
from kilnbase.http.errors import require_admin_actor
from kilnbase.identity.actor import Actor


def logs_tools(database: Database) -> list[Tool]:
    async def search_audit_logs(
        actor: Actor,
        action: str | None = None,
        module: Annotated[str | None, Field(description="DATABASE, AUTH, AI, SECRETS, MCP, ...")] = None,
        limit: Annotated[int, Field(ge=1, le=200)] = 50,
        offset: Annotated[int, Field(ge=0)] = 0,
    ) -> dict[str, Any]:
        require_admin_actor(actor)
        rows, total = await audit.search(database, limit=limit, offset=offset, action=action, module=module)
        return {"data": rows, "total": total}

    return [
        Tool("search-audit-logs", "Audit entries, newest first, by action and module.", search_audit_logs)
    ]
