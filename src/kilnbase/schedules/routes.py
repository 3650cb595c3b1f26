"""`/api/schedules` (admin): schedules that call a URL on a cron expression or every N seconds, their run
logs, and how long those logs are kept. InsForge's routes, shapes and messages; `/config` is matched before
`/:id`, as there. The runner that makes the calls is this capability's background work (the server's)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.capability import Capability
from kilnbase.http.admin_gate import admin_actor, audited_admin_caller
from kilnbase.http.json_body import read_object
from kilnbase.http.query_params import int_param
from kilnbase.http.responses import json_response
from kilnbase.schedules.runner import ScheduleRunner
from kilnbase.schedules.service import DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT, Schedules
from kilnbase.schedules.tools import schedules_tools

#: The furthest into a schedule's logs a page may start.
MAX_LOG_OFFSET = 10_000_000


class ScheduleRoutes:
    def __init__(self, schedules: Schedules) -> None:
        self.schedules = schedules

    async def list_schedules(self, request: Request) -> Response:
        return json_response(await self.schedules.list(admin_actor(request)))

    async def create_schedule(self, request: Request) -> Response:
        actor = audited_admin_caller(request)
        created = await self.schedules.create(actor, await read_object(request, optional=False))
        return json_response({**created, "message": "Schedule created successfully"}, 201)

    async def get_config(self, request: Request) -> Response:
        return json_response(await self.schedules.config(admin_actor(request)))

    async def update_config(self, request: Request) -> Response:
        actor = audited_admin_caller(request)
        await self.schedules.update_config(actor, await read_object(request, optional=False))
        return json_response({"message": "Schedules config updated successfully"})

    async def get_schedule(self, request: Request) -> Response:
        return json_response(await self.schedules.get(admin_actor(request), request.path_params["id"]))

    async def update_schedule(self, request: Request) -> Response:
        actor = audited_admin_caller(request)
        body = await read_object(request, optional=False)
        updated = await self.schedules.update(actor, request.path_params["id"], body)
        return json_response({**updated, "message": "Schedule updated successfully"})

    async def delete_schedule(self, request: Request) -> Response:
        await self.schedules.delete(audited_admin_caller(request), request.path_params["id"])
        return json_response({"message": "Schedule deleted successfully."})

    async def schedule_logs(self, request: Request) -> Response:
        actor = admin_actor(request)
        limit = int_param(request, "limit", DEFAULT_LOG_LIMIT, 1, MAX_LOG_LIMIT)
        offset = int_param(request, "offset", 0, 0, MAX_LOG_OFFSET)
        return json_response(await self.schedules.logs(actor, request.path_params["id"], limit, offset))

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/schedules", self.list_schedules, methods=["GET"]),
            Route("/api/schedules", self.create_schedule, methods=["POST"]),
            Route("/api/schedules/config", self.get_config, methods=["GET"]),
            Route("/api/schedules/config", self.update_config, methods=["PATCH"]),
            Route("/api/schedules/{id}", self.get_schedule, methods=["GET"]),
            Route("/api/schedules/{id}", self.update_schedule, methods=["PATCH"]),
            Route("/api/schedules/{id}", self.delete_schedule, methods=["DELETE"]),
            Route("/api/schedules/{id}/logs", self.schedule_logs, methods=["GET"]),
        ]


def capability(schedules: Schedules, runner: ScheduleRunner) -> Capability:
    return Capability(
        "schedules",
        ScheduleRoutes(schedules).routes(),
        background=runner.running,
        tools=schedules_tools(schedules),
    )
