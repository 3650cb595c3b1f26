"""`/api/memory` (the project's API key, or an agent key): remember, recall, index. InsForge's routes, all
POST with a JSON body, and its answers to a caller without a key (`401 AUTH_INVALID_API_KEY "No API key
provided"`, or `"Invalid API key"` for a key that is wrong).

Recall and index are reads though they are POSTs (the query travels in the body): an agent key reaches them
with `memory:read`, and in read-only mode; remember needs `memory:write`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.capability import Capability
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import read_json
from kilnbase.http.request_context import actor_of, principal_or_none
from kilnbase.http.responses import json_response
from kilnbase.identity.actor import Actor
from kilnbase.identity.principal import CredentialKind
from kilnbase.memory.service import Memory, no_api_key
from kilnbase.memory.tools import memory_tools

_KEY_PREFIXES = ("Bearer ik_", "Bearer kba_")


def _caller(request: Request) -> Actor:
    """Any valid credential; the service refuses (and, for a change, audits) one that is not a key."""
    principal = principal_or_none(request.scope)
    if principal is None:
        presented = request.headers.get("authorization", "").startswith(_KEY_PREFIXES)
        if presented or request.headers.get("x-api-key"):
            raise ApiError(
                401, "AUTH_INVALID_API_KEY", "Invalid API key", "Check the API key (kilnbase keys prints it)."
            )
        raise no_api_key()
    if principal.kind is CredentialKind.NONE:
        raise no_api_key()
    return actor_of(request, principal)


class MemoryRoutes:
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    async def remember(self, request: Request) -> Response:
        actor = _caller(request)
        return json_response(await self.memory.remember(actor, await read_json(request, optional=True)))

    async def recall(self, request: Request) -> Response:
        actor = _caller(request)
        return json_response(await self.memory.recall(actor, await read_json(request, optional=True)))

    async def index(self, request: Request) -> Response:
        actor = _caller(request)
        return json_response(await self.memory.index(actor, await read_json(request, optional=True)))

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/memory/remember", self.remember, methods=["POST"]),
            Route("/api/memory/recall", self.recall, methods=["POST"]),
            Route("/api/memory/index", self.index, methods=["POST"]),
        ]


def capability(memory: Memory) -> Capability:
    return Capability(
        "memory",
        MemoryRoutes(memory).routes(),
        tools=memory_tools(memory),
        reads=("/api/memory/recall", "/api/memory/index"),
    )
