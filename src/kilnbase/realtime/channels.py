"""The realtime admin service: channels, message history, statistics, retention, purge, permissions.

Every method takes the `Actor` and refuses anyone but an admin; changes are recorded in the audit log, with
refusals and failures. Channels and messages are read and written as the caller (project_admin, who owns
them); the retention setting lives in `realtime.config`, which only Kilnbase's owner reads, as does the
webhook signing secret beside it. Shapes follow InsForge's `realtime-api.schema.ts`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from kilnbase import audit
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError, refuse_agent_keys, require_admin_actor
from kilnbase.identity.actor import Actor

MODULE = "REALTIME"
#: InsForge's rule: letters, digits and hyphens, `:` between parts, `%` as the wildcard (`_` is a LIKE
#: wildcard too, so it is not allowed).
PATTERN = re.compile(r"^[a-zA-Z0-9-]+(:[a-zA-Z0-9%:-]+)*$")
MAX_PATTERN_LENGTH = 200
MAX_WEBHOOKS = 20
_PATTERN_HINT = (
    "Send a pattern such as chat:lobby or orders:%: letters, digits and hyphens, ':' between parts."
)
_RETENTION_HINT = 'Send only {"retentionDays": N} (days to keep messages), or null to keep them forever.'
_WEBHOOKS_HINT = f"Send webhookUrls as an array of at most {MAX_WEBHOOKS} http(s) URLs, or null for none."

CHANNEL_JSON = (
    "json_build_object('id', id, 'pattern', pattern, 'description', description, 'webhookUrls', "
    "webhook_urls, 'enabled', enabled, 'createdAt', created_at, 'updatedAt', updated_at)"
)
MESSAGE_JSON = (
    "json_build_object('id', id, 'eventName', event_name, 'channelId', channel_id, 'channelName', "
    "channel_name, 'payload', payload, 'senderType', sender_type, 'senderId', sender_id, 'wsAudienceCount', "
    "ws_audience_count, 'whAudienceCount', wh_audience_count, 'whDeliveredCount', wh_delivered_count, "
    "'createdAt', created_at)"
)
_POLICIES = """
select coalesce(json_agg(json_build_object('policyName', policyname, 'tableName', tablename, 'command', cmd,
    'roles', roles, 'using', qual, 'withCheck', with_check) order by policyname), '[]'::json) as policies
from pg_policies
where schemaname = 'realtime' and tablename = %s and policyname <> 'kilnbase_owner'
"""


def _invalid_request(message: str, next_actions: str) -> ApiError:
    return ApiError(400, "REALTIME_INVALID_CHANNEL_REQUEST", message, next_actions)


def _pattern_taken(pattern: str) -> ApiError:
    return ApiError(
        409,
        "ALREADY_EXISTS",
        f"A channel with pattern {pattern} already exists.",
        "Choose another pattern, or change the existing channel (GET /api/realtime/channels lists them).",
    )


def _not_found() -> ApiError:
    return ApiError(
        404,
        "REALTIME_CHANNEL_NOT_FOUND",
        "Channel not found",
        "List the channels with GET /api/realtime/channels.",
    )


def validate_pattern(pattern: Any) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise _invalid_request("pattern: Channel pattern is required", _PATTERN_HINT)
    if len(pattern) > MAX_PATTERN_LENGTH or not PATTERN.match(pattern):
        raise ApiError(
            400,
            "REALTIME_INVALID_CHANNEL_PATTERN",
            "Invalid channel pattern. Use alphanumeric characters, colons, hyphens, and % for wildcards.",
            f"{_PATTERN_HINT} At most {MAX_PATTERN_LENGTH} characters.",
        )
    return pattern


def _webhook_urls(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(url, str) for url in value):
        raise _invalid_request("webhookUrls: Expected an array of URLs", _WEBHOOKS_HINT)
    if len(value) > MAX_WEBHOOKS:
        raise _invalid_request(f"webhookUrls: At most {MAX_WEBHOOKS} URLs", _WEBHOOKS_HINT)
    for url in value:
        if not re.match(r"^https?://[^\s/]+", url) or len(url) > 2048:
            raise _invalid_request(f"webhookUrls: Invalid url: {url[:100]}", _WEBHOOKS_HINT)
    return list(value)


def _refuse_agents_choosing_webhooks(actor: Actor, fields: dict[str, Any]) -> None:
    """A channel's webhooks receive every message published on it: an agent key may not choose where they go
    (as for database webhooks), only take them away."""
    if fields.get("webhook_urls"):
        refuse_agent_keys(
            actor,
            "Agent keys may not set a channel's webhookUrls: a webhook receives every message published "
            "on the channel.",
            "Leave webhookUrls out (or null), and ask the project admin to set them (with the project's "
            "API key or the dashboard).",
        )


def channel_fields(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """The columns a create or update body sets, checked as InsForge's schemas check them."""
    unknown = set(body) - {"pattern", "description", "webhookUrls", "enabled"}
    if unknown:
        raise _invalid_request(
            f"Unknown fields: {', '.join(sorted(unknown))}",
            "A channel takes only pattern, description, webhookUrls and enabled.",
        )
    fields: dict[str, Any] = {}
    if creating or "pattern" in body:
        fields["pattern"] = validate_pattern(body.get("pattern"))
    if "description" in body:
        description = body["description"]
        if description is not None and not isinstance(description, str):
            raise _invalid_request("description: Expected string", "Send description as a string, or null.")
        fields["description"] = description
    if "webhookUrls" in body:
        fields["webhook_urls"] = None if body["webhookUrls"] is None else _webhook_urls(body["webhookUrls"])
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise _invalid_request("enabled: Expected boolean", "Send enabled as true or false.")
        fields["enabled"] = body["enabled"]
    elif creating:
        fields["enabled"] = True
    return fields


def _uuid(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", value):
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"{field}: Invalid uuid",
            f"Send {field} as a channel's id, a UUID (GET /api/realtime/channels lists them).",
        )
    return value


class RealtimeAdmin:
    def __init__(self, database: Database) -> None:
        self.database = database

    @contextlib.asynccontextmanager
    async def _audited(self, actor: Actor, action: str, details: dict[str, Any]) -> AsyncIterator[None]:
        try:
            async with audit.refusals(self.database, actor, action, MODULE, details):
                require_admin_actor(actor)
                yield
        except psycopg.Error as exc:
            await audit.record(
                self.database,
                actor,
                action,
                MODULE,
                {**details, "error": type(exc).__name__},
                outcome="failed",
            )
            raise
        await audit.record(self.database, actor, action, MODULE, details)

    # --- channels ------------------------------------------------------------------------------------------

    async def list_channels(self, actor: Actor) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        async with self.database.as_caller(actor.principal, read_only=True) as cur:
            await cur.execute(f"select {CHANNEL_JSON} as c from realtime.channels order by created_at desc")
        return [row["c"] for row in await cur.fetchall()]

    async def get_channel(self, actor: Actor, channel_id: str) -> dict[str, Any]:
        require_admin_actor(actor)
        if _uuid_or_none(channel_id) is None:
            raise _not_found()
        async with self.database.as_caller(actor.principal, read_only=True) as cur:
            await cur.execute(
                f"select {CHANNEL_JSON} as c from realtime.channels where id = %s", (channel_id,)
            )
        row = await cur.fetchone()
        if row is None:
            raise _not_found()
        return dict(row["c"])

    async def create_channel(self, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
        async with self._audited(actor, "CREATE_REALTIME_CHANNEL", {"pattern": body.get("pattern")}):
            fields = channel_fields(body, creating=True)
            _refuse_agents_choosing_webhooks(actor, fields)
            columns = ", ".join(fields)
            placeholders = ", ".join(["%s"] * len(fields))
            try:
                async with self.database.as_caller(actor.principal) as cur:
                    await cur.execute(
                        f"insert into realtime.channels ({columns}) values ({placeholders}) "
                        f"returning {CHANNEL_JSON} as c",
                        list(fields.values()),
                    )
            except pg_errors.UniqueViolation:
                raise _pattern_taken(fields["pattern"]) from None
            row = await cur.fetchone()
        assert row is not None
        return dict(row["c"])

    async def update_channel(self, actor: Actor, channel_id: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._audited(
            actor, "UPDATE_REALTIME_CHANNEL", {"id": channel_id, "fields": sorted(body)}
        ):
            if _uuid_or_none(channel_id) is None:
                raise _not_found()
            fields = channel_fields(body, creating=False)
            _refuse_agents_choosing_webhooks(actor, fields)
            if not fields:
                return await self.get_channel(actor, channel_id)
            assignments = ", ".join(f"{column} = %s" for column in fields)
            try:
                async with self.database.as_caller(actor.principal) as cur:
                    await cur.execute(
                        f"update realtime.channels set {assignments} where id = %s "
                        f"returning {CHANNEL_JSON} as c",
                        [*fields.values(), channel_id],
                    )
            except pg_errors.UniqueViolation:
                raise _pattern_taken(fields["pattern"]) from None
            row = await cur.fetchone()
            if row is None:
                raise _not_found()
        return dict(row["c"])

    async def delete_channel(self, actor: Actor, channel_id: str) -> dict[str, Any]:
        async with self._audited(actor, "DELETE_REALTIME_CHANNEL", {"id": channel_id}):
            if _uuid_or_none(channel_id) is None:
                raise _not_found()
            async with self.database.as_caller(actor.principal) as cur:
                await cur.execute(
                    "delete from realtime.channels where id = %s returning pattern", (channel_id,)
                )
            if await cur.fetchone() is None:
                raise _not_found()
        return {"message": "Channel deleted"}

    # --- messages ------------------------------------------------------------------------------------------

    async def list_messages(
        self, actor: Actor, *, channel_id: str | None, event_name: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        conditions, params = ["true"], []
        if _uuid(channel_id, "channelId"):
            conditions.append("channel_id = %s")
            params.append(channel_id)
        if event_name:
            conditions.append("event_name = %s")
            params.append(event_name)
        async with self.database.as_caller(actor.principal, read_only=True) as cur:
            await cur.execute(
                f"select {MESSAGE_JSON} as m from realtime.messages where {' and '.join(conditions)} "
                "order by created_at desc, id limit %s offset %s",
                [*params, limit, offset],
            )
        return [row["m"] for row in await cur.fetchall()]

    async def publish(
        self, actor: Actor, channel: str, event: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """Publish as the server does from SQL (`realtime.publish`): stored now, delivered to subscribers
        and webhooks once committed. 404 when no enabled channel matches the name."""
        details = {"channel": channel, "event": event}
        async with self._audited(actor, "PUBLISH_REALTIME_MESSAGE", details):
            async with self.database.as_caller(actor.principal) as cur:
                await cur.execute(
                    "select realtime.publish(%s, %s, %s)::text as id", (channel, event, Jsonb(payload))
                )
                row = await cur.fetchone()
            if row is None or row["id"] is None:
                raise ApiError(
                    404,
                    "REALTIME_CHANNEL_NOT_FOUND",
                    f"No enabled channel matches {channel}.",
                    "Create a channel whose pattern matches it (create-channel), or enable it.",
                )
            details["id"] = row["id"]
        return {"id": row["id"], "channel": channel, "event": event}

    async def purge_messages(self, actor: Actor) -> dict[str, int]:
        details: dict[str, Any] = {}
        async with self._audited(actor, "CLEAR_REALTIME_MESSAGES", details):
            async with self.database.as_caller(actor.principal) as cur:
                await cur.execute(
                    "with gone as (delete from realtime.messages where created_at <= now() returning 1) "
                    "select count(*)::int as deleted from gone"
                )
            row = await cur.fetchone()
            deleted = int(row["deleted"]) if row else 0
            details["deleted"] = deleted
        return {"deleted": deleted}

    async def message_stats(
        self, actor: Actor, *, channel_id: str | None, since: str | None
    ) -> dict[str, Any]:
        require_admin_actor(actor)
        conditions, params = ["true"], []
        if _uuid(channel_id, "channelId"):
            conditions.append("channel_id = %s")
            params.append(channel_id)
        if since:
            conditions.append("created_at >= %s::timestamptz")
            params.append(since)
        where = " and ".join(conditions)
        try:
            async with self.database.as_caller(actor.principal, read_only=True) as cur:
                await cur.execute(
                    "select count(*)::int as total, coalesce(sum(wh_audience_count), 0)::bigint as audience, "
                    "coalesce(sum(wh_delivered_count), 0)::bigint as delivered "
                    f"from realtime.messages where {where}",
                    params,
                )
                totals = await cur.fetchone()
                await cur.execute(
                    "select coalesce(json_agg(json_build_object('eventName', event_name, 'count', n)), '[]') "
                    "as t "
                    f"from (select event_name, count(*)::int as n from realtime.messages where {where} "
                    "group by event_name order by n desc, event_name limit 10) top",
                    params,
                )
        except (pg_errors.InvalidDatetimeFormat, pg_errors.DatetimeFieldOverflow):
            raise ApiError(
                400,
                "INVALID_INPUT",
                "since: Invalid date",
                "Send since as an ISO 8601 date or timestamp, e.g. 2026-04-18T09:15:00Z.",
            ) from None
        top = await cur.fetchone()
        assert totals is not None and top is not None
        audience, delivered = int(totals["audience"]), int(totals["delivered"])
        return {
            "totalMessages": int(totals["total"]),
            "whDeliveryRate": delivered / audience if audience else 0,
            "topEvents": top["t"],
            "retentionDays": (await self._config())["retentionDays"],
        }

    # --- config and permissions ----------------------------------------------------------------------------

    async def _config(self) -> dict[str, Any]:
        async with self.database.as_owner() as cur:
            await cur.execute("select retention_days from realtime.config")
            row = await cur.fetchone()
        return {"retentionDays": row["retention_days"] if row else None}

    async def get_config(self, actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        return await self._config()

    async def update_config(self, actor: Actor, body: dict[str, Any]) -> dict[str, str]:
        days = body.get("retentionDays", "missing")
        async with self._audited(
            actor, "UPDATE_REALTIME_CONFIG", {"retentionDays": body.get("retentionDays")}
        ):
            if set(body) != {"retentionDays"}:
                raise ApiError(
                    400,
                    "INVALID_INPUT",
                    "retentionDays: Required (a positive integer or null)",
                    _RETENTION_HINT,
                )
            if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days <= 0):
                raise ApiError(
                    400,
                    "INVALID_INPUT",
                    "retentionDays: Expected a positive integer or null",
                    _RETENTION_HINT,
                )
            async with self.database.as_owner() as cur:
                await cur.execute(
                    "update realtime.config set retention_days = %s, updated_at = now()", (days,)
                )
        return {"message": "Retention config updated successfully"}

    async def webhook_secret(self, actor: Actor) -> str:
        """The secret that signs webhook deliveries (`X-InsForge-Signature`), for the receiver to check. Not
        for an agent key: with it, an agent could sign messages of its own to every receiver."""
        require_admin_actor(actor)
        refuse_agent_keys(
            actor,
            "An agent key may not read the webhook signing secret: with it, anyone can sign deliveries that "
            "the project's webhook receivers trust.",
            "Ask the project admin for it (with the project's API key or the dashboard).",
        )
        async with self.database.as_owner() as cur:
            await cur.execute("select webhook_secret from realtime.config")
            row = await cur.fetchone()
        assert row is not None
        return str(row["webhook_secret"])

    async def permissions(self, actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        async with self.database.as_owner() as cur:
            await cur.execute(_POLICIES, ("channels",))
            subscribe = await cur.fetchone()
            await cur.execute(_POLICIES, ("messages",))
            publish = await cur.fetchone()
        assert subscribe is not None and publish is not None
        return {
            "subscribe": {"policies": subscribe["policies"]},
            "publish": {"policies": publish["policies"]},
        }


def _uuid_or_none(value: str) -> str | None:
    try:
        return _uuid(value, "id")
    except ApiError:
        return None
