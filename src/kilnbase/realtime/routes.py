"""HTTP edge of realtime: Socket.IO at `/socket.io/` (where `@insforge/sdk` connects), and InsForge's admin
API under `/api/realtime` (channels, messages, stats, config, permissions). Handlers parse and shape only;
`RealtimeAdmin` does the work and the audit."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from kilnbase.capability import Capability
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.json_body import read_object
from kilnbase.http.query_params import int_param, timestamp_param
from kilnbase.http.responses import json_response
from kilnbase.realtime.channels import RealtimeAdmin
from kilnbase.realtime.service import RealtimeService
from kilnbase.realtime.tools import realtime_tools

PREFIX = "/api/realtime"
#: Socket.IO's default path, which the SDK's `io(baseUrl)` connects to.
SOCKET_PATH = "/socket.io"


class RealtimeRoutes:
    def __init__(self, admin: RealtimeAdmin) -> None:
        self.admin = admin

    async def list_channels(self, request: Request) -> Response:
        return json_response(await self.admin.list_channels(admin_actor(request)))

    async def create_channel(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.admin.create_channel(actor, await read_object(request)), 201)

    async def get_channel(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.admin.get_channel(actor, request.path_params["id"]))

    async def update_channel(self, request: Request) -> Response:
        actor = admin_actor(request)
        body = await read_object(request)
        return json_response(await self.admin.update_channel(actor, request.path_params["id"], body))

    async def delete_channel(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.admin.delete_channel(actor, request.path_params["id"]))

    async def list_messages(self, request: Request) -> Response:
        actor = admin_actor(request)
        messages = await self.admin.list_messages(
            actor,
            channel_id=request.query_params.get("channelId") or None,
            event_name=request.query_params.get("eventName") or None,
            limit=int_param(request, "limit", 100, 1, 1000),
            offset=int_param(request, "offset", 0, 0, 10_000_000),
        )
        return json_response(messages)

    async def purge_messages(self, request: Request) -> Response:
        return json_response(await self.admin.purge_messages(admin_actor(request)))

    async def message_stats(self, request: Request) -> Response:
        actor = admin_actor(request)
        stats = await self.admin.message_stats(
            actor,
            channel_id=request.query_params.get("channelId") or None,
            since=timestamp_param(request, "since"),
        )
        return json_response(stats)

    async def get_config(self, request: Request) -> Response:
        return json_response(await self.admin.get_config(admin_actor(request)))

    async def update_config(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(
            await self.admin.update_config(actor, await read_object(request, optional=False))
        )

    async def webhook_secret(self, request: Request) -> Response:
        return json_response({"secret": await self.admin.webhook_secret(admin_actor(request))})

    async def permissions(self, request: Request) -> Response:
        return json_response(await self.admin.permissions(admin_actor(request)))

    def routes(self) -> list[BaseRoute]:
        return [
            Route(f"{PREFIX}/channels", self.list_channels, methods=["GET"]),
            Route(f"{PREFIX}/channels", self.create_channel, methods=["POST"]),
            Route(f"{PREFIX}/channels/{{id}}", self.get_channel, methods=["GET"]),
            Route(f"{PREFIX}/channels/{{id}}", self.update_channel, methods=["PUT"]),
            Route(f"{PREFIX}/channels/{{id}}", self.delete_channel, methods=["DELETE"]),
            Route(f"{PREFIX}/messages", self.list_messages, methods=["GET"]),
            Route(f"{PREFIX}/messages", self.purge_messages, methods=["DELETE"]),
            Route(f"{PREFIX}/messages/stats", self.message_stats, methods=["GET"]),
            Route(f"{PREFIX}/config", self.get_config, methods=["GET"]),
            Route(f"{PREFIX}/config", self.update_config, methods=["PATCH"]),
            Route(f"{PREFIX}/config/webhook-secret", self.webhook_secret, methods=["GET"]),
            Route(f"{PREFIX}/permissions", self.permissions, methods=["GET"]),
        ]


def capability(service: RealtimeService) -> Capability:
    return Capability(
        "realtime",
        [*RealtimeRoutes(service.admin).routes(), Mount(SOCKET_PATH, app=service.sockets.asgi_app)],
        lifespan=service.running,
        tools=realtime_tools(service.admin),
    )
