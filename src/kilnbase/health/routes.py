"""`GET /api/health`: InsForge's shape, and honest: it asks the database (and Redis, when one is configured)
rather than assuming.

Without the database nothing works: `unhealthy`, 503. Without a configured Redis the server still serves
(rate limits count in Postgres meanwhile; presence across processes and change events between them stop):
`degraded`, still 200, since every process shares the one Redis and a load balancer taking them all out
would make it worse. The URLs themselves are never shown (they may hold a password)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase import INSFORGE_API_VERSION, __version__
from kilnbase.capability import Capability, Core
from kilnbase.http.responses import json_response
from kilnbase.redis_client import REDIS_DOWN, connect_redis

#: How long a Redis ping may take before Redis counts as unavailable.
REDIS_PING_SECONDS = 1.0


class HealthRoutes:
    def __init__(self, core: Core) -> None:
        self.core = core
        settings = core.settings
        #: Each distinct Redis the settings name (rate limits, realtime, gateway quotas), pinged per check.
        configured = (settings.rate_limit_redis_url, settings.realtime.redis_url, settings.ai_redis_url)
        self.redis_urls = sorted({url for url in configured if url})
        self._redis: list[aioredis.Redis] = []

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self._redis = [connect_redis(url) for url in self.redis_urls]
        try:
            yield
        finally:
            for client in self._redis:
                await client.aclose()
            self._redis = []

    async def _redis_check(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            for client in self._redis:
                await asyncio.wait_for(client.ping(), REDIS_PING_SECONDS)
        except REDIS_DOWN:  # (the ping's TimeoutError is an OSError)
            return {"status": "unavailable"}
        return {"status": "ok", "latencyMs": round((time.perf_counter() - started) * 1000, 2)}

    async def health(self, _request: Request) -> Response:
        started = time.perf_counter()
        try:
            await self.core.database.ping()
            database = {"status": "ok", "latencyMs": round((time.perf_counter() - started) * 1000, 2)}
        except Exception:
            database = {"status": "unavailable"}
            down_since = self.core.database.availability.down_since
            if down_since is not None:  # (found down by a request or a probe: `db/availability.py`)
                database["since"] = _iso(down_since)
        checks: dict[str, Any] = {"database": database}
        if self._redis:
            checks["redis"] = await self._redis_check()
        healthy = database["status"] == "ok"
        status = "ok" if all(check["status"] == "ok" for check in checks.values()) else "degraded"
        body = {
            "status": status if healthy else "unhealthy",
            "version": INSFORGE_API_VERSION,
            "service": "Kilnbase",
            "timestamp": _iso(time.time()),
            "kilnbaseVersion": __version__,
            "uptimeSeconds": round(time.time() - self.core.started_at, 1),
            "checks": checks,
        }
        return json_response(body, status=200 if healthy else 503)

    def routes(self) -> list[BaseRoute]:
        return [Route("/api/health", self.health, methods=["GET"])]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def capability(core: Core) -> Capability:
    routes = HealthRoutes(core)
    # Public, as InsForge's is: a client checks the server is up before anything else, with whatever
    # credential it holds, and an agent key's scopes name no `health` group to grant it.
    return Capability("health", routes.routes(), lifespan=routes.running, agent_scoped=False)
