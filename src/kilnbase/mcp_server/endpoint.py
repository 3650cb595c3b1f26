"""`/mcp` on the API port: MCP's streamable HTTP transport, stateless, JSON responses.

Stateless because every call carries its own bearer credential and the server keeps nothing between calls
(so it works the same under several workers and behind a load balancer). The SDK's DNS-rebinding check is
off: it protects servers that answer unauthenticated requests on localhost, and `/mcp` answers nothing
without a credential (401), which a browser on another origin cannot attach.

The route is offered as one more capability, built from the others' tools, so its session manager starts
and stops in the app's one lifespan; with it come the routes where people decide the change requests that
agents' high-risk calls become (`approvals.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from kilnbase.capability import Capability, Core
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import parse, read_object
from kilnbase.http.query_params import int_param
from kilnbase.http.request_context import admin_actor, credential_in
from kilnbase.http.responses import json_response
from kilnbase.mcp_server.approvals import STATUSES, Approvals
from kilnbase.mcp_server.server import Fingerprint, build_server

PATH = "/mcp"


class _Authenticated:
    """Refuses a call without a credential before the MCP transport reads it."""

    def __init__(self, transport: StreamableHTTPASGIApp) -> None:
        self.transport = transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        credential_in(scope)
        await self.transport(scope, receive, send)


class DecisionBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    note: str | None = Field(default=None, max_length=2000)


class ApprovalRoutes:
    """`/api/approvals`: the change requests agents made, for a person to decide."""

    def __init__(self, approvals: Approvals) -> None:
        self.approvals = approvals

    async def list_requests(self, request: Request) -> Response:
        status = request.query_params.get("status")
        if status is not None and status not in STATUSES:
            raise ApiError(400, "INVALID_INPUT", f"status must be one of {', '.join(STATUSES)}.")
        limit = int_param(request, "limit", 50, 1, 200)
        return json_response(await self.approvals.list_requests(admin_actor(request), status, limit))

    async def get(self, request: Request) -> Response:
        return json_response(await self.approvals.get(admin_actor(request), request.path_params["id"]))

    async def approve(self, request: Request) -> Response:
        actor = admin_actor(request)
        body = parse(DecisionBody, await read_object(request))
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
    server = build_server(offered, core, approvals, fingerprint)
    server.streamable_http_app(
        stateless_http=True,
        json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    manager = server.session_manager
    endpoint = _Authenticated(StreamableHTTPASGIApp(manager))
    return Capability(
        "mcp",
        [Route(PATH, endpoint, methods=["GET", "POST", "DELETE"]), *ApprovalRoutes(approvals).routes()],
        lifespan=manager.run,
    )
