"""`GET /api/logs/audits`: the audit trail, filtered and paginated (admin)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kilnbase.http.query_params import int_param, timestamp_param
from kilnbase.http.request_context import require_admin
from kilnbase.logs import audit
from kilnbase.server.runtime import runtime_of


async def list_audits(request: Request) -> Response:
    require_admin(request)
    limit = int_param(request, "limit", 100, 1, 1000)
    offset = int_param(request, "offset", 0, 0, 10_000_000)
    rows, total = await audit.query(
        runtime_of(request).database,
        limit=limit,
        offset=offset,
        actor=request.query_params.get("actor"),
        action=request.query_params.get("action"),
        module=request.query_params.get("module"),
        start_date=timestamp_param(request, "start_date"),
        end_date=timestamp_param(request, "end_date"),
    )
    return JSONResponse({"data": rows, "pagination": {"limit": limit, "offset": offset, "total": total}})


routes: list[BaseRoute] = [Route("/api/logs/audits", list_audits, methods=["GET"])]
