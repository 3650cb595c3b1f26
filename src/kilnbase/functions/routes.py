"""HTTP edge of functions: `/api/functions` management (admin) and `ANY /functions/:slug[/*]` invocation."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.capability import Capability
from kilnbase.functions.invocation import PREFIX as INVOCATIONS
from kilnbase.functions.invocation import Invocation
from kilnbase.functions.service import FunctionsService
from kilnbase.functions.tools import functions_tools
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.json_body import read_object
from kilnbase.http.responses import json_response


class FunctionRoutes:
    def __init__(self, service: FunctionsService) -> None:
        self.service = service

    async def list_functions(self, request: Request) -> Response:
        return json_response(await self.service.list(admin_actor(request)))

    async def get_function(self, request: Request) -> Response:
        return json_response(await self.service.get(admin_actor(request), request.path_params["slug"]))

    async def create_function(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(
            await self.service.create(actor, await read_object(request, optional=False)), 201
        )

    async def update_function(self, request: Request) -> Response:
        actor = admin_actor(request)
        body = await read_object(request, optional=False)
        return json_response(await self.service.update(actor, request.path_params["slug"], body))

    async def delete_function(self, request: Request) -> Response:
        return json_response(await self.service.delete(admin_actor(request), request.path_params["slug"]))

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/functions", self.list_functions, methods=["GET"]),
            Route("/api/functions", self.create_function, methods=["POST"]),
            Route("/api/functions/{slug}", self.get_function, methods=["GET"]),
            Route("/api/functions/{slug}", self.update_function, methods=["PUT"]),
            Route("/api/functions/{slug}", self.delete_function, methods=["DELETE"]),
            Route(f"{INVOCATIONS}{{rest:path}}", Invocation(self.service.runtime)),
        ]


def capability(service: FunctionsService) -> Capability:
    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with service.runtime.running():
            yield

    return Capability(
        "functions",
        FunctionRoutes(service).routes(),
        lifespan=lifespan,
        tools=functions_tools(service),
        body_limits={INVOCATIONS: "upload"},
        invocations=INVOCATIONS,
    )
