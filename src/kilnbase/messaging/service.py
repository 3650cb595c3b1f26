"""The service behind `/api/messaging` (admin): queue a message, look one up, list and retry the dead letters.

InsForge's facts (`backend/src/api/routes/messaging/index.routes.ts`, `services/messaging/queue.service.ts`,
`dead-letter.service.ts`): `POST /api/messaging/send` answers 202 `{messageId, status}`; an
`idempotencyKey` seen before answers the first message's id and status (`dead` once it is in the dead-letter
table) when the channel, recipient, subject and body are the same, and 409 `DATABASE_DUPLICATE`
"Idempotency key conflict: different payload" when not. Where InsForge is silent, Kilnbase adds:

- `GET /api/messaging/messages/:id`: the message's status, attempts, next attempt and last error (404
  `NOT_FOUND` for an unknown id), from the outbox or the dead-letter table;
- `GET /api/messaging/dead-letter`, a page (`limit`, `offset`, `Content-Range`), newest first;
- `POST /api/messaging/dead-letter/:id/retry`, which moves a dead message back to the outbox, pending, with
  its attempts counted afresh.
- Sending and retrying need an SMTP server: without one they are 503 `EMAIL_PROVIDER_NOT_CONFIGURED`
  saying what to configure, rather than queueing mail that could only go to the dead-letter table.
- An agent key sends or retries mail only as a call a person approved (`send-message`,
  `retry-dead-letter-message` wait for approval): mail reaches people outside the project, in the project's
  name. Reading needs `messaging:read`.

Every send and retry, refused ones included, is audited (module `MESSAGING`) with the message's id and
channel, never its recipient's address, subject or body.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncCursor
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from kilnbase import audit
from kilnbase.config import MessagingSettings
from kilnbase.db.session import Database
from kilnbase.email import smtp_config
from kilnbase.http.errors import ApiError, require_admin_actor
from kilnbase.identity.actor import Actor
from kilnbase.messaging.definitions import Message, read

MODULE = "MESSAGING"
CHANNEL = "kilnbase_messaging"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_OFFSET = 10_000_000
#: The attempts a message's answer lists, newest last.
MAX_ATTEMPTS_SHOWN = 100

_OUTBOX_COLUMNS = (
    "id::text, channel, status, payload, idempotency_key, claimed_by, claimed_at, lease_expires_at, "
    "retry_count, max_retries, next_attempt_at, provider_message_id, error_message, created_at, updated_at, "
    "sent_at"
)
_DEAD_COLUMNS = (
    "id::text, channel, payload, idempotency_key, retry_count, max_retries, error_message, created_at, "
    "moved_at"
)


def iso(value: datetime | None) -> str | None:
    """JavaScript's `toISOString` (InsForge's timestamps): UTC, milliseconds, `Z`."""
    if value is None:
        return None
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def not_found() -> ApiError:
    return ApiError(
        404,
        "NOT_FOUND",
        "Message not found",
        "Use the messageId that POST /api/messaging/send answered; GET /api/messaging/dead-letter lists "
        "dead ones.",
    )


def _message_id(value: str) -> str:
    """A message id is a UUID; anything else names no message (404, as an unknown one)."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise not_found() from None


def _smtp_not_configured(what: str) -> ApiError:
    return ApiError(
        503,
        "EMAIL_PROVIDER_NOT_CONFIGURED",
        f"Email is not configured on this project, so {what}.",
        smtp_config.CONFIGURE_SMTP,
    )


def _needs_approval(actor: Actor, what: str, tool: str) -> None:
    """Mail reaches people outside the project: an agent key sends it only as a call a person approved."""
    if actor.is_unapproved_agent:
        raise ApiError(
            403,
            "FORBIDDEN",
            f"An agent key may {what} only with a person's approval: the email goes to someone outside "
            "the project, in the project's name.",
            f"Call the {tool} tool (or this route): the call waits for an admin's approval.",
        )


def outbox_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """InsForge's `OutboxMessage` (without the claim token), with `sentAt`."""
    return {
        "id": row["id"],
        "channel": row["channel"],
        "status": row["status"],
        "payload": row["payload"],
        "idempotencyKey": row["idempotency_key"],
        "claimedBy": row["claimed_by"],
        "claimedAt": iso(row["claimed_at"]),
        "leaseExpiresAt": iso(row["lease_expires_at"]),
        "retryCount": row["retry_count"],
        "maxRetries": row["max_retries"],
        "nextAttemptAt": iso(row["next_attempt_at"]),
        "providerMessageId": row["provider_message_id"],
        "errorMessage": row["error_message"],
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
        "sentAt": iso(row["sent_at"]),
    }


def dead_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """InsForge's `DeadLetterMessage`."""
    return {
        "id": row["id"],
        "channel": row["channel"],
        "payload": row["payload"],
        "idempotencyKey": row["idempotency_key"],
        "retryCount": row["retry_count"],
        "maxRetries": row["max_retries"],
        "errorMessage": row["error_message"],
        "createdAt": iso(row["created_at"]),
        "movedAt": iso(row["moved_at"]),
    }


async def _lock_key(cur: AsyncCursor[DictRow], key: str | None) -> None:
    """Calls with the same idempotency key, one at a time (until the transaction ends)."""
    if key is not None:
        await cur.execute("select pg_advisory_xact_lock(hashtextextended('messaging:' || %s, 0))", (key,))


class Messaging:
    def __init__(self, database: Database, settings: MessagingSettings) -> None:
        self._database = database
        self._settings = settings

    async def send(self, actor: Actor, body: Mapping[str, Any]) -> dict[str, Any]:
        """Queue a message (202 `{messageId, status}`), or answer the one its idempotency key names."""
        details: dict[str, Any] = {"channel": body.get("channel")}
        async with audit.refusals(self._database, actor, "SEND_MESSAGE", MODULE, details):
            require_admin_actor(actor)
            _needs_approval(actor, "send an email", "send-message")
            message = read(body)
            async with self._database.as_owner() as cur:
                await _lock_key(cur, message.idempotency_key)
                earlier = await self._earlier(cur, message)
                if earlier is not None:
                    details.update(messageId=earlier["messageId"], replayed=True)
                    await audit.record(cur, actor, "SEND_MESSAGE", MODULE, details)
                    return earlier
                if not smtp_config.is_usable(await smtp_config.load(cur)):
                    raise _smtp_not_configured("messages cannot be sent")
                await cur.execute(
                    "insert into messaging.outbox (channel, payload, idempotency_key, max_retries) "
                    "values (%s, %s, %s, %s) returning id::text",
                    (
                        message.channel,
                        Jsonb(message.payload()),
                        message.idempotency_key,
                        self._settings.max_retries,
                    ),
                )
                row = await cur.fetchone()
                assert row is not None
                await cur.execute("select pg_notify(%s, '')", (CHANNEL,))
                details.update(messageId=row["id"], replayed=False)
                await audit.record(cur, actor, "SEND_MESSAGE", MODULE, details)
        return {"messageId": row["id"], "status": "pending"}

    async def _earlier(self, cur: AsyncCursor[DictRow], message: Message) -> dict[str, Any] | None:
        """The message queued before under the same key (409 when its payload differs), or None."""
        if message.idempotency_key is None:
            return None
        await cur.execute(
            "select id::text, status, channel, payload from messaging.outbox where idempotency_key = %(key)s "
            "union all select id::text, 'dead', channel, payload from messaging.dead_letter "
            "where idempotency_key = %(key)s limit 1",
            {"key": message.idempotency_key},
        )
        row = await cur.fetchone()
        if row is None:
            return None
        if not message.same_as(row["payload"], row["channel"]):
            raise ApiError(
                409,
                "DATABASE_DUPLICATE",
                "Idempotency key conflict: different payload",
                "Send a new idempotencyKey for a different message, or the same payload to get the first "
                "message's id.",
            )
        return {"messageId": row["id"], "status": row["status"]}

    async def get(self, actor: Actor, message_id: str) -> dict[str, Any]:
        """The message, from the outbox (`pending`, `claimed`, `sent`) or the dead-letter table (`dead`),
        with its attempts."""
        require_admin_actor(actor)
        found = _message_id(message_id)
        async with self._database.as_owner() as cur:
            await cur.execute(f"select {_OUTBOX_COLUMNS} from messaging.outbox where id = %s", (found,))
            row = await cur.fetchone()
            if row is not None:
                shaped = outbox_json(row)
            else:
                await cur.execute(
                    f"select {_DEAD_COLUMNS} from messaging.dead_letter where id = %s", (found,)
                )
                dead = await cur.fetchone()
                if dead is None:
                    raise not_found()
                shaped = {"status": "dead", "nextAttemptAt": None, **dead_json(dead)}
            await cur.execute(
                "select attempt_number, worker_id, status, error_message, duration_ms, attempted_at "
                "from messaging.delivery_attempts where message_id = %s order by attempted_at desc, "
                "attempt_number desc limit %s",
                (found, MAX_ATTEMPTS_SHOWN),
            )
            attempts = await cur.fetchall()
        shaped["attempts"] = [
            {
                "attemptNumber": attempt["attempt_number"],
                "workerId": attempt["worker_id"],
                "status": attempt["status"],
                "errorMessage": attempt["error_message"],
                "durationMs": attempt["duration_ms"],
                "attemptedAt": iso(attempt["attempted_at"]),
            }
            for attempt in reversed(attempts)
        ]
        return shaped

    async def dead_letters(self, actor: Actor, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """A page of the dead-letter table, the most recently moved first, and how many there are."""
        require_admin_actor(actor)
        limit = min(max(1, limit), MAX_LIMIT)
        offset = min(max(0, offset), MAX_OFFSET)
        async with self._database.as_owner() as cur:
            await cur.execute("select count(*) as total from messaging.dead_letter")
            counted = await cur.fetchone()
            await cur.execute(
                f"select {_DEAD_COLUMNS} from messaging.dead_letter order by moved_at desc, id "
                "limit %s offset %s",
                (limit, offset),
            )
            rows = await cur.fetchall()
        return [dead_json(row) for row in rows], int(counted["total"]) if counted else 0

    async def retry(self, actor: Actor, message_id: str) -> dict[str, Any]:
        """Move a dead message back to the outbox, pending, its attempts counted afresh (InsForge's
        `revive`)."""
        details: dict[str, Any] = {"messageId": message_id}
        async with audit.refusals(self._database, actor, "RETRY_MESSAGE", MODULE, details):
            require_admin_actor(actor)
            _needs_approval(actor, "retry an email", "retry-dead-letter-message")
            found = _message_id(message_id)
            details["messageId"] = found
            async with self._database.as_owner() as cur:
                await cur.execute("select idempotency_key from messaging.dead_letter where id = %s", (found,))
                row = await cur.fetchone()
                if row is None:
                    raise not_found()
                await _lock_key(cur, row["idempotency_key"])
                if not smtp_config.is_usable(await smtp_config.load(cur)):
                    raise _smtp_not_configured("a message cannot be retried")
                await cur.execute(
                    "with revived as (delete from messaging.dead_letter where id = %s returning *) "
                    "insert into messaging.outbox (id, channel, status, payload, idempotency_key, "
                    "retry_count, max_retries, next_attempt_at, created_at) "
                    "select id, channel, 'pending', payload, idempotency_key, 0, %s, now(), created_at "
                    "from revived returning channel",
                    (found, self._settings.max_retries),
                )
                moved = await cur.fetchone()
                if moved is None:  # (retried meanwhile by another call)
                    raise not_found()
                await cur.execute("select pg_notify(%s, '')", (CHANNEL,))
                details["channel"] = moved["channel"]
                await audit.record(cur, actor, "RETRY_MESSAGE", MODULE, details)
        return {"messageId": found, "status": "pending"}
