"""`GET /api/logs/audits`: the audit trail, filtered and paginated (admin)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase import audit
from kilnbase.capability import Capability
from kilnbase.db.session import Database
from kilnbase.http.query_params import int_param, timestamp_param
from kilnbase.http.request_context import require_admin
from kilnbase.http.responses import json_response
from kilnbase.logs.tools import logs_tools


class LogRoutes:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def list_audits(self, request: Request) -> Response:
        require_admin(request)
        limit = int_param(request, "limit", 100, 1, 1000)
        offset = int_param(request, "offset", 0, 0, 10_000_000)
        rows, total = await audit.search(
            self.database,
            limit=limit,
            offset=offset,
            actor=request.query_params.get("actor"),
            action=request.query_params.get("action"),
            module=request.query_params.get("module"),
            start_date=timestamp_param(request, "start_date"),
            end_date=timestamp_param(request, "end_date"),
        )
        return json_response({"data": rows, "pagination": {"limit": limit, "offset": offset, "total": total}})

    def routes(self) -> list[BaseRoute]:
        return [Route("/api/logs/audits", self.list_audits, methods=["GET"])]


def capability(database: Database) -> Capability:
    return Capability("logs", LogRoutes(database).routes(), tools=logs_tools(database))
