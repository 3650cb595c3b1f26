"""`/mcp` on the API port: MCP's streamable HTTP transport, stateless, JSON responses.

Stateless because every call carries its own bearer credential and the server keeps nothing between calls
(so it works the same under several workers and behind a load balancer). The SDK's DNS-rebinding check is
off: it protects servers that answer unauthenticated requests on localhost, and `/mcp` answers nothing
without a credential (401), which a browser on another origin cannot attach.

The route is offered as one more capability, built from the others' tools, so its session manager starts
and stops in the app's one lifespan.
"""

from __future__ import annotations

from collections.abc import Sequence

from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from kilnbase.capability import Capability, Core
from kilnbase.http.request_context import credential_in
from kilnbase.mcp_server.server import build_server

PATH = "/mcp"


class _Authenticated:
    """Refuses a call without a credential before the MCP transport reads it."""

    def __init__(self, transport: StreamableHTTPASGIApp) -> None:
        self.transport = transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        credential_in(scope)
        await self.transport(scope, receive, send)


def mcp_capability(offered: Sequence[Capability], core: Core) -> Capability:
    server = build_server(offered, core)
    server.streamable_http_app(
        stateless_http=True,
        json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    manager = server.session_manager
    endpoint = _Authenticated(StreamableHTTPASGIApp(manager))
    return Capability(
        "mcp",
        [Route(PATH, endpoint, methods=["GET", "POST", "DELETE"])],
        lifespan=manager.run,
    )
