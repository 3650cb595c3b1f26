"""`GET /api/logs/audits`: the audit trail, filtered and paginated (admin)."""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kilnbase.http.errors import ApiError
from kilnbase.http.request_context import require_admin
from kilnbase.logs import audit
from kilnbase.server.runtime import runtime_of


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(400, "INVALID_INPUT", f"'{name}' must be an integer from {low} to {high}.")
    return value


def _date_param(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "INVALID_INPUT", f"'{name}' must be an ISO 8601 date or timestamp.") from None
    return raw


async def list_audits(request: Request) -> Response:
    require_admin(request)
    limit = _int_param(request, "limit", 100, 1, 1000)
    offset = _int_param(request, "offset", 0, 0, 10_000_000)
    rows, total = await audit.query(
        runtime_of(request).database,
        limit=limit,
        offset=offset,
        actor=request.query_params.get("actor"),
        action=request.query_params.get("action"),
        module=request.query_params.get("module"),
        start_date=_date_param(request, "start_date"),
        end_date=_date_param(request, "end_date"),
    )
    return JSONResponse({"data": rows, "pagination": {"limit": limit, "offset": offset, "total": total}})


routes: list[BaseRoute] = [Route("/api/logs/audits", list_audits, methods=["GET"])]
