"""`/api/logs` (admin): the audit trail as InsForge serves it (a bare array with `Content-Range`), its
statistics and pruning, the log sources; and `/api/usage/mcp`, where the MCP server reports tool calls."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.capability import Capability
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import read_object
from kilnbase.http.query_params import int_param, timestamp_param
from kilnbase.http.request_context import actor_of, require_credential
from kilnbase.http.responses import json_response, paginated_response
from kilnbase.logs.service import LogsService
from kilnbase.logs.sources import LogQuery
from kilnbase.logs.tools import logs_tools, source_tools


def _moment(request: Request, *names: str) -> datetime | None:
    for name in names:
        raw = timestamp_param(request, name)
        if raw is not None:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            return moment if moment.tzinfo else moment.astimezone()
    return None


class LogRoutes:
    def __init__(self, service: LogsService) -> None:
        self.service = service

    async def list_audits(self, request: Request) -> Response:
        actor = admin_actor(request)
        limit = int_param(request, "limit", 100, 1, 1000)
        offset = int_param(request, "offset", 0, 0, 10_000_000)
        rows, total = await self.service.audits(
            actor,
            limit=limit,
            offset=offset,
            actor=request.query_params.get("actor"),
            action=request.query_params.get("action"),
            module=request.query_params.get("module"),
            start_date=timestamp_param(request, "start_date"),
            end_date=timestamp_param(request, "end_date"),
        )
        return paginated_response(rows, total, offset)

    async def audit_stats(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.service.audit_stats(actor, int_param(request, "days", 7, 1, 3650)))

    async def prune_audits(self, request: Request) -> Response:
        actor = admin_actor(request)
        days = int_param(request, "days_to_keep", 90, 1, 36500)
        return json_response(await self.service.prune_audits(actor, days))

    async def sources(self, request: Request) -> Response:
        return json_response(self.service.sources(admin_actor(request)))

    async def source_stats(self, request: Request) -> Response:
        return json_response(await self.service.source_stats(admin_actor(request)))

    async def search(self, request: Request) -> Response:
        actor = admin_actor(request)
        text = request.query_params.get("q")
        if not text or len(text) > 200:
            raise ApiError(
                400,
                "INVALID_INPUT",
                "Search query parameter (q) is required (at most 200 characters).",
                "Send the text to look for as q, e.g. ?q=timeout.",
            )
        limit = int_param(request, "limit", 100, 1, 1000)
        offset = int_param(request, "offset", 0, 0, 1000)
        rows, total = await self.service.search(
            actor, text, request.query_params.get("source"), limit, offset
        )
        return paginated_response(rows, total, offset)

    async def source_logs(self, request: Request) -> Response:
        actor = admin_actor(request)
        search = request.query_params.get("q") or request.query_params.get("search") or None
        if search is not None and len(search) > 200:
            raise ApiError(
                400,
                "INVALID_INPUT",
                "'q' must be at most 200 characters.",
                "Shorten q to at most 200 characters.",
            )
        query = LogQuery(
            limit=int_param(request, "limit", 100, 1, 1000),
            search=search,
            start=_moment(request, "start_time", "after_timestamp"),
            end=_moment(request, "end_time", "before_timestamp"),
        )
        return json_response(await self.service.source_logs(actor, request.path_params["source"], query))

    async def report_mcp_usage(self, request: Request) -> Response:
        actor = actor_of(request, require_credential(request))
        body = await read_object(request)
        return json_response(
            await self.service.record_mcp_usage(actor, body.get("tool_name"), body.get("success", True))
        )

    async def mcp_usage(self, request: Request) -> Response:
        actor = admin_actor(request)
        limit = int_param(request, "limit", 5, 1, 1000)
        success = request.query_params.get("success", "true") == "true"
        return json_response(await self.service.mcp_usage(actor, limit, success))

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/logs/audits", self.list_audits, methods=["GET"]),
            Route("/api/logs/audits", self.prune_audits, methods=["DELETE"]),
            Route("/api/logs/audits/stats", self.audit_stats, methods=["GET"]),
            Route("/api/logs/sources", self.sources, methods=["GET"]),
            Route("/api/logs/stats", self.source_stats, methods=["GET"]),
            Route("/api/logs/search", self.search, methods=["GET"]),
            Route("/api/logs/{source}", self.source_logs, methods=["GET"]),
            Route("/api/usage/mcp", self.report_mcp_usage, methods=["POST"]),
            Route("/api/usage/mcp", self.mcp_usage, methods=["GET"]),
        ]


def capability(service: LogsService) -> Capability:
    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with service.request_log.running():
            yield

    return Capability(
        "logs",
        LogRoutes(service).routes(),
        lifespan=lifespan,
        tools=[*logs_tools(service.database), *source_tools(service)],
    )
