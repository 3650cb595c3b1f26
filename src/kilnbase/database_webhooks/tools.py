"""The database webhooks capability's MCP tools: the same `DatabaseWebhooks` calls as
`/api/database/webhooks` (admin, audited by the service). Agent keys reach the read tools with
`webhooks:read`; the service refuses an agent's create, update or delete whatever its scopes, so those tools
serve a person's MCP client (the API key, `kilnbase mcp`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from kilnbase.capability import Tool, given_fields
from kilnbase.database_webhooks import definitions
from kilnbase.database_webhooks.service import DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT, DatabaseWebhooks
from kilnbase.identity.actor import Actor

WebhookId = Annotated[str, Field(description="The webhook's id (a UUID)", min_length=1, max_length=64)]
Name = Annotated[str, Field(min_length=1, max_length=definitions.MAX_NAME)]
Events = Annotated[
    list[Literal["INSERT", "UPDATE", "DELETE"]],
    Field(description="The row changes sent", min_length=1, max_length=3),
]
Url = Annotated[
    str, Field(description="Where each change is POSTed (http or https)", max_length=definitions.MAX_URL)
]
Secret = Annotated[
    str | None,
    Field(
        description="Signs each request: X-InsForge-Signature: sha256=HMAC-SHA256(secret, body)",
        max_length=definitions.MAX_SECRET,
    ),
]


def webhooks_tools(webhooks: DatabaseWebhooks) -> list[Tool]:
    async def list_database_webhooks(actor: Actor) -> dict[str, Any]:
        return {"webhooks": await webhooks.list(actor)}

    async def get_database_webhook(actor: Actor, id: WebhookId) -> dict[str, Any]:
        return await webhooks.get(actor, id)

    async def get_database_webhook_logs(
        actor: Actor,
        id: WebhookId,
        limit: Annotated[int, Field(ge=1, le=MAX_LOG_LIMIT)] = DEFAULT_LOG_LIMIT,
        offset: Annotated[int, Field(ge=0, le=10_000_000)] = 0,
    ) -> dict[str, Any]:
        return {"logs": await webhooks.logs(actor, id, limit, offset)}

    async def create_database_webhook(
        actor: Actor,
        name: Name,
        tableName: Annotated[str, Field(description="A table in public, or schema.table", max_length=127)],
        events: Events,
        url: Url,
        secret: Secret = None,
        enabled: bool = True,
    ) -> dict[str, Any]:
        return await webhooks.create(actor, given_fields(locals(), definitions.CREATE_FIELDS))

    async def update_database_webhook(
        actor: Actor,
        id: WebhookId,
        name: Name | None = None,
        events: Events | None = None,
        url: Url | None = None,
        secret: Secret = None,
        enabled: Annotated[bool | None, Field(description="false: stop sending; true: send again")] = None,
    ) -> dict[str, Any]:
        return await webhooks.update(actor, id, given_fields(locals(), definitions.CREATE_FIELDS))

    async def delete_database_webhook(actor: Actor, id: WebhookId) -> dict[str, Any]:
        await webhooks.delete(actor, id)
        return {"message": "Webhook deleted"}

    return [
        Tool(
            "list-database-webhooks",
            "The database webhooks: which table's changes each sends, and where.",
            list_database_webhooks,
        ),
        Tool("get-database-webhook", "One database webhook by id.", get_database_webhook),
        Tool(
            "get-database-webhook-logs",
            "A database webhook's delivery attempts, newest first: event, payload, status code, error.",
            get_database_webhook_logs,
        ),
        Tool(
            "create-database-webhook",
            "POST each INSERT, UPDATE or DELETE of a table's rows to a URL (not for agent keys).",
            create_database_webhook,
            read_only=False,
        ),
        Tool(
            "update-database-webhook",
            "Change a database webhook, or switch it off and on (not for agent keys).",
            update_database_webhook,
            read_only=False,
        ),
        Tool(
            "delete-database-webhook",
            "Delete a database webhook, its trigger and its logs (not for agent keys).",
            delete_database_webhook,
            read_only=False,
        ),
    ]
