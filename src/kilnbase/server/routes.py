"""`GET /api/health`: InsForge's shape, and honest: it asks the database rather than assuming."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kilnbase import INSFORGE_API_VERSION, __version__
from kilnbase.server.runtime import runtime_of


async def health(request: Request) -> Response:
    runtime = runtime_of(request)
    started = time.perf_counter()
    try:
        await runtime.database.ping()
        database = {"status": "ok", "latencyMs": round((time.perf_counter() - started) * 1000, 2)}
    except Exception:
        database = {"status": "unavailable"}
    healthy = database["status"] == "ok"
    body = {
        "status": "ok" if healthy else "unhealthy",
        "version": INSFORGE_API_VERSION,
        "service": "Kilnbase",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "kilnbaseVersion": __version__,
        "uptimeSeconds": round(time.time() - runtime.started_at, 1),
        "checks": {"database": database},
    }
    return JSONResponse(body, status_code=200 if healthy else 503)


routes: list[BaseRoute] = [Route("/api/health", health, methods=["GET"])]
