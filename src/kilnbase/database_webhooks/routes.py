"""`/api/database/webhooks` (admin): webhooks that POST an app table's row changes to a URL, and their
delivery logs. InsForge's routes, shapes and messages. The runner that makes the deliveries is this
capability's background work: it runs in server processes only, never under `kilnbase mcp` over stdio.

The capability is named `webhooks`: agent keys read with `webhooks:read`, and no scope lets one change a
webhook (the service refuses it)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.capability import Capability
from kilnbase.database_webhooks.runner import DeliveryRunner
from kilnbase.database_webhooks.service import DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT, DatabaseWebhooks
from kilnbase.database_webhooks.tools import webhooks_tools
from kilnbase.http.admin_gate import admin_actor, audited_admin_caller
from kilnbase.http.json_body import read_object
from kilnbase.http.query_params import int_param
from kilnbase.http.responses import json_response

#: The furthest into a webhook's logs a page may start.
MAX_LOG_OFFSET = 10_000_000
PREFIX = "/api/database/webhooks"


class WebhookRoutes:
    def __init__(self, webhooks: DatabaseWebhooks) -> None:
        self.webhooks = webhooks

    async def list_webhooks(self, request: Request) -> Response:
        return json_response(await self.webhooks.list(admin_actor(request)))

    async def create_webhook(self, request: Request) -> Response:
        actor = audited_admin_caller(request)
        created = await self.webhooks.create(actor, await read_object(request, optional=False))
        return json_response(created, 201)

    async def get_webhook(self, request: Request) -> Response:
        return json_response(await self.webhooks.get(admin_actor(request), request.path_params["id"]))

    async def update_webhook(self, request: Request) -> Response:
        actor = audited_admin_caller(request)
        body = await read_object(request, optional=False)
        return json_response(await self.webhooks.update(actor, request.path_params["id"], body))

    async def delete_webhook(self, request: Request) -> Response:
        await self.webhooks.delete(audited_admin_caller(request), request.path_params["id"])
        return json_response({"message": "Webhook deleted"})

    async def webhook_logs(self, request: Request) -> Response:
        actor = admin_actor(request)
        limit = int_param(request, "limit", DEFAULT_LOG_LIMIT, 1, MAX_LOG_LIMIT)
        offset = int_param(request, "offset", 0, 0, MAX_LOG_OFFSET)
        return json_response(await self.webhooks.logs(actor, request.path_params["id"], limit, offset))

    def routes(self) -> list[BaseRoute]:
        return [
            Route(PREFIX, self.list_webhooks, methods=["GET"]),
            Route(PREFIX, self.create_webhook, methods=["POST"]),
            Route(PREFIX + "/{id}", self.get_webhook, methods=["GET"]),
            Route(PREFIX + "/{id}", self.update_webhook, methods=["PATCH"]),
            Route(PREFIX + "/{id}", self.delete_webhook, methods=["DELETE"]),
            Route(PREFIX + "/{id}/logs", self.webhook_logs, methods=["GET"]),
        ]


def capability(webhooks: DatabaseWebhooks, runner: DeliveryRunner) -> Capability:
    return Capability(
        "webhooks",
        WebhookRoutes(webhooks).routes(),
        background=runner.running,
        tools=webhooks_tools(webhooks),
    )
