"""`GET /api/health`: InsForge's shape, and honest: it asks the database rather than assuming."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase import INSFORGE_API_VERSION, __version__
from kilnbase.capability import Capability, Core
from kilnbase.http.responses import json_response


class HealthRoutes:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def health(self, _request: Request) -> Response:
        started = time.perf_counter()
        try:
            await self.core.database.ping()
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
            "uptimeSeconds": round(time.time() - self.core.started_at, 1),
            "checks": {"database": database},
        }
        return json_response(body, status=200 if healthy else 503)

    def routes(self) -> list[BaseRoute]:
        return [Route("/api/health", self.health, methods=["GET"])]


def capability(core: Core) -> Capability:
    return Capability("health", HealthRoutes(core).routes())
