"""`/mcp` on the API port: MCP's streamable HTTP transport, stateless, JSON responses.

Stateless because every call carries its own bearer credential and the server keeps nothing between calls
(so it works the same under several workers and behind a load balancer). The SDK's DNS-rebinding check is
off: it protects servers that answer unauthenticated requests on localhost, and `/mcp` answers nothing
without a credential (401), which a browser on another origin cannot attach.

The route is offered as one more capability, built from the others' tools, so its session manager starts
and stops in the app's one lifespan; with it come the routes where people decide the change requests that
agents' high-risk calls become (`approvals.py`).

The MCP server itself is built once the app is up (`McpEndpoint`), not before: importing the SDK and making
a JSON schema for each tool takes 0.5 to 0.7 s, a third of a restart, and nothing but `/mcp` needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from kilnbase.capability import Capability, Core
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import parse, read_object
from kilnbase.http.query_params import int_param
from kilnbase.http.request_context import credential_in
from kilnbase.http.responses import json_response
from kilnbase.mcp_server.approvals import STATUSES, Approvals

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from kilnbase.mcp_server.server import Fingerprint

PATH = "/mcp"
log = logging.getLogger("kilnbase.mcp")


class McpEndpoint:
    """`/mcp`: a credential is checked first, then the MCP transport reads the call.

    While the app runs (`running`, its lifespan), a task builds the server in a thread, so that the app
    answers everything else meanwhile, then runs its session manager until the app stops. A call that comes
    before the server is ready waits for it; if it could not be built, the log says why and calls get 503."""

    def __init__(self, build: Callable[[], StreamableHTTPSessionManager]) -> None:
        self.build = build
        #: Set once the server is ready or failed (None outside the app's lifespan).
        self._settled: asyncio.Event | None = None
        self._transport: ASGIApp | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        settled, stop = asyncio.Event(), asyncio.Event()
        self._settled = settled
        task = asyncio.create_task(self._serve(settled, stop), name="kilnbase-mcp")
        try:
            yield
        finally:
            stop.set()
            try:
                await task
            finally:
                self._settled = None

    async def _serve(self, settled: asyncio.Event, stop: asyncio.Event) -> None:
        """Build, then serve until `stop`; whatever happens (a failure, a cancellation), calls waiting for the
        server are let go, to find it ready or get 503."""
        try:
            try:
                manager = await anyio.to_thread.run_sync(self.build)
            except Exception:
                log.exception("The MCP server could not be built: /mcp answers 503 until a restart.")
                return
            if stop.is_set():  # the app stopped while it was built
                return
            # What the app built at start was frozen out of the collector's sight (`app.py`); the server,
            # built since, lives as long: the SDK and the tools' schemas are some 50,000 objects.
            gc.collect(1)
            gc.freeze()
            from mcp.server.streamable_http_manager import StreamableHTTPASGIApp  # (imported by the build)

            try:
                async with manager.run():
                    self._transport = StreamableHTTPASGIApp(manager)
                    settled.set()
                    await stop.wait()
            except Exception:
                log.exception("The MCP server stopped: /mcp answers 503 until a restart.")
        finally:
            self._transport = None
            settled.set()

    async def ready(self) -> None:
        """Wait until the server is ready or failed (at once outside the app's lifespan)."""
        settled = self._settled
        if settled is not None and not settled.is_set():
            await settled.wait()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        credential_in(scope)
        await self.ready()
        transport = self._transport
        if transport is None:
            raise ApiError(
                503,
                "MCP_UNAVAILABLE",
                "The MCP server is not running.",
                "If the server is not stopping, its log says why the MCP server stopped or could not start; "
                "restart the server once that is fixed.",
            )
        await transport(scope, receive, send)


class DecisionBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    note: str | None = Field(default=None, max_length=2000)


class ApprovalRoutes:
    """`/api/approvals`: the change requests agents made, for a person to decide."""

    def __init__(self, approvals: Approvals, mcp_ready: Callable[[], Awaitable[None]]) -> None:
        self.approvals = approvals
        #: An approval runs its call with the MCP server's tools (`Approvals.runs_with`), which are there once
        #: the server is built, a second or so after the app starts: an approval waits for it, as `/mcp` does.
        self.mcp_ready = mcp_ready

    async def list_requests(self, request: Request) -> Response:
        status = request.query_params.get("status")
        if status is not None and status not in STATUSES:
            raise ApiError(
                400,
                "INVALID_INPUT",
                f"status must be one of {', '.join(STATUSES)}.",
                "Use one of those, or leave status out for every request.",
            )
        limit = int_param(request, "limit", 50, 1, 200)
        return json_response(await self.approvals.list_requests(admin_actor(request), status, limit))

    async def get(self, request: Request) -> Response:
        actor, request_id = admin_actor(request), request.path_params["id"]
        return json_response(await self.approvals.get(actor, request_id, in_full=True))

    async def approve(self, request: Request) -> Response:
        actor = admin_actor(request)
        body = parse(DecisionBody, await read_object(request))
        await self.mcp_ready()
        return json_response(await self.approvals.approve(actor, request.path_params["id"], body.note))

    async def reject(self, request: Request) -> Response:
        actor = admin_actor(request)
        body = parse(DecisionBody, await read_object(request))
        return json_response(await self.approvals.reject(actor, request.path_params["id"], body.note))

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/approvals", self.list_requests, methods=["GET"]),
            Route("/api/approvals/{id}", self.get, methods=["GET"]),
            Route("/api/approvals/{id}/approve", self.approve, methods=["POST"]),
            Route("/api/approvals/{id}/reject", self.reject, methods=["POST"]),
        ]


def mcp_capability(
    offered: Sequence[Capability], core: Core, fingerprint: Fingerprint, approvals: Approvals
) -> Capability:
    def build() -> StreamableHTTPSessionManager:
        from mcp.server.transport_security import TransportSecuritySettings

        from kilnbase.mcp_server.server import build_server

        server = build_server(offered, core, approvals, fingerprint)
        server.streamable_http_app(
            stateless_http=True,
            json_response=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        return server.session_manager

    endpoint = McpEndpoint(build)
    return Capability(
        "mcp",
        [
            Route(PATH, endpoint, methods=["GET", "POST", "DELETE"]),
            *ApprovalRoutes(approvals, endpoint.ready).routes(),
        ],
        lifespan=endpoint.running,
    )
