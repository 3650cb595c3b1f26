"""`/api/messaging` (admin): queue a transactional message, look one up, list and retry the dead letters.
InsForge's `POST /api/messaging/send`, and Kilnbase's routes beside it (`service.py` says which are whose).
The worker that sends is this capability's background work: it runs in server processes only, never under
`kilnbase mcp` over stdio.

Agent keys read with `messaging:read`; their sends and retries wait for a person's approval (the REST
approval gate holds them as the `send-message` and `retry-dead-letter-message` tools' calls)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.capability import Capability
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.json_body import read_object
from kilnbase.http.query_params import int_param
from kilnbase.http.request_context import actor_of, require_credential
from kilnbase.http.responses import json_response, paginated_response
from kilnbase.messaging.runner import MessageRunner
from kilnbase.messaging.service import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, Messaging
from kilnbase.messaging.tools import messaging_tools

PREFIX = "/api/messaging"


class MessagingRoutes:
    def __init__(self, messaging: Messaging) -> None:
        self.messaging = messaging

    async def send(self, request: Request) -> Response:
        # Any valid credential (401 without one); the service refuses, and audits, a caller that is no admin.
        actor = actor_of(request, require_credential(request))
        queued = await self.messaging.send(actor, await read_object(request, optional=False))
        return json_response(queued, 202)

    async def get_message(self, request: Request) -> Response:
        return json_response(await self.messaging.get(admin_actor(request), request.path_params["id"]))

    async def dead_letter(self, request: Request) -> Response:
        actor = admin_actor(request)
        limit = int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = int_param(request, "offset", 0, 0, MAX_OFFSET)
        rows, total = await self.messaging.dead_letters(actor, limit, offset)
        return paginated_response(rows, total, offset)

    async def retry(self, request: Request) -> Response:
        actor = actor_of(request, require_credential(request))
        return json_response(await self.messaging.retry(actor, request.path_params["id"]), 202)

    def routes(self) -> list[BaseRoute]:
        return [
            Route(PREFIX + "/send", self.send, methods=["POST"]),
            Route(PREFIX + "/messages/{id}", self.get_message, methods=["GET"]),
            Route(PREFIX + "/dead-letter", self.dead_letter, methods=["GET"]),
            Route(PREFIX + "/dead-letter/{id}/retry", self.retry, methods=["POST"]),
        ]


def capability(messaging: Messaging, runner: MessageRunner) -> Capability:
    return Capability(
        "messaging",
        MessagingRoutes(messaging).routes(),
        background=runner.running,
        tools=messaging_tools(messaging),
    )
