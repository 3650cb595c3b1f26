"""The realtime capability's MCP tools: the same `RealtimeAdmin` calls as `/api/realtime` (admin, as the
caller, audited), and publishing as SQL does (`realtime.publish`), so subscribers and webhooks receive it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from kilnbase.capability import Tool
from kilnbase.identity.actor import Actor
from kilnbase.realtime.channels import MAX_PATTERN_LENGTH, MAX_WEBHOOKS, RealtimeAdmin

ChannelId = Annotated[str, Field(description="The channel's id (a UUID)", min_length=1, max_length=36)]
Pattern = Annotated[
    str,
    Field(
        description="Channel name or pattern: letters, digits, : and -, % as a wildcard (e.g. order:%)",
        min_length=1,
        max_length=MAX_PATTERN_LENGTH,
    ),
]
Description = Annotated[str | None, Field(max_length=2000)]
WebhookUrls = Annotated[
    list[Annotated[str, Field(max_length=2048)]] | None,
    Field(description="URLs every message is POSTed to", max_length=MAX_WEBHOOKS),
]


def _given(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def realtime_tools(admin: RealtimeAdmin) -> list[Tool]:
    async def list_channels(actor: Actor) -> list[dict[str, Any]]:
        return await admin.list_channels(actor)

    async def create_channel(
        actor: Actor,
        pattern: Pattern,
        description: Description = None,
        webhookUrls: WebhookUrls = None,
        enabled: bool = True,
    ) -> dict[str, Any]:
        body = _given(pattern=pattern, description=description, webhookUrls=webhookUrls, enabled=enabled)
        return await admin.create_channel(actor, body)

    async def update_channel(
        actor: Actor,
        channelId: ChannelId,
        pattern: Annotated[str | None, Field(min_length=1, max_length=MAX_PATTERN_LENGTH)] = None,
        description: Description = None,
        webhookUrls: WebhookUrls = None,
        enabled: bool | None = None,
    ) -> dict[str, Any]:
        body = _given(pattern=pattern, description=description, webhookUrls=webhookUrls, enabled=enabled)
        return await admin.update_channel(actor, channelId, body)

    async def delete_channel(actor: Actor, channelId: ChannelId) -> dict[str, Any]:
        return await admin.delete_channel(actor, channelId)

    async def publish_message(
        actor: Actor,
        channel: Annotated[
            str, Field(description="Channel name, e.g. order:42", min_length=1, max_length=255)
        ],
        event: Annotated[str, Field(description="Event name", min_length=1, max_length=255)],
        payload: Annotated[dict[str, Any], Field(description="A JSON object")],
    ) -> dict[str, Any]:
        return await admin.publish(actor, channel, event, payload)

    async def list_messages(
        actor: Actor,
        channelId: Annotated[str | None, Field(max_length=36)] = None,
        eventName: Annotated[str | None, Field(max_length=255)] = None,
        limit: Annotated[int, Field(ge=1, le=1000)] = 100,
        offset: Annotated[int, Field(ge=0, le=10_000_000)] = 0,
    ) -> list[dict[str, Any]]:
        if channelId is not None:
            # A mistyped id would list nothing, which an agent reads as "nothing was ever sent on it". (The
            # REST route keeps InsForge's empty list.)
            await admin.get_channel(actor, channelId)
        return await admin.list_messages(
            actor, channel_id=channelId, event_name=eventName, limit=limit, offset=offset
        )

    async def purge_messages(actor: Actor) -> dict[str, int]:
        return await admin.purge_messages(actor)

    return [
        Tool("list-channels", "List the realtime channels (patterns, webhooks, enabled).", list_channels),
        Tool(
            "create-channel",
            "Create a channel that clients may subscribe and publish to.",
            create_channel,
            False,
        ),
        Tool(
            "update-channel",
            "Change a channel's pattern, description, webhooks or enabled state.",
            update_channel,
            False,
        ),
        Tool(
            "delete-channel",
            "Delete a channel (its stored messages stay, without the link).",
            delete_channel,
            read_only=False,
            needs_approval=lambda arguments: f"deletes realtime channel {arguments.get('channelId')}",
        ),
        Tool(
            "publish-message",
            "Publish an event to a channel's subscribers and webhooks (as the server, like SQL does).",
            publish_message,
            False,
        ),
        Tool("list-messages", "Stored messages, newest first, by channel and event.", list_messages),
        Tool(
            "purge-messages",
            "Delete every stored message, on every channel (DELETE /api/realtime/messages).",
            purge_messages,
            read_only=False,
            # Always held for an agent: it deletes every stored message at once, and they have no undo.
            needs_approval=lambda arguments: "deletes every stored realtime message",
        ),
    ]
