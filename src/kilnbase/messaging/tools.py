"""The messaging capability's MCP tools: the same `Messaging` calls as `/api/messaging` (admin, audited by
the service). Agent keys reach the read tools with `messaging:read`; an agent's `send-message` and
`retry-dead-letter-message` wait for a person's approval (an email goes to someone outside the project)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field

from kilnbase.capability import Tool, given_fields
from kilnbase.identity.actor import Actor
from kilnbase.messaging import definitions
from kilnbase.messaging.service import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, Messaging

MessageId = Annotated[str, Field(description="The message's id (a UUID)", min_length=1, max_length=64)]


def _send_reason(arguments: Mapping[str, Any]) -> str:
    return f"sends an email to {str(arguments.get('to'))[:254]}"


def _retry_reason(arguments: Mapping[str, Any]) -> str:
    return f"sends dead-lettered message {str(arguments.get('id'))[:64]} again"


def messaging_tools(messaging: Messaging) -> list[Tool]:
    async def send_message(
        actor: Actor,
        to: Annotated[str, Field(description="One email address", min_length=1, max_length=254)],
        subject: Annotated[
            str, Field(description="One line", min_length=1, max_length=definitions.MAX_SUBJECT)
        ],
        body: Annotated[
            str, Field(description="The email's HTML", min_length=1, max_length=definitions.MAX_BODY)
        ],
        channel: Annotated[
            Literal["email", "sms", "push"], Field(description="Only email is supported for now")
        ] = "email",
        metadata: Annotated[dict[str, Any] | None, Field(description="Kept with the message")] = None,
    ) -> dict[str, Any]:
        return await messaging.send(actor, given_fields(locals(), definitions.FIELDS))

    async def get_message(actor: Actor, id: MessageId) -> dict[str, Any]:
        return await messaging.get(actor, id)

    async def list_dead_letter_messages(
        actor: Actor,
        limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0,
    ) -> dict[str, Any]:
        rows, total = await messaging.dead_letters(actor, limit, offset)
        return {"messages": rows, "total": total}

    async def retry_dead_letter_message(actor: Actor, id: MessageId) -> dict[str, Any]:
        return await messaging.retry(actor, id)

    return [
        Tool(
            "send-message",
            "Queue a transactional email (to, subject, HTML body); a worker sends it, with retries. "
            "Answers {messageId, status}; get-message follows it. (The MCP server's own idempotencyKey "
            "makes a repeated call answer the first one's result.)",
            send_message,
            read_only=False,
            needs_approval=_send_reason,
        ),
        Tool(
            "get-message",
            "One queued message: status (pending, claimed, sent, dead), attempts, next attempt, last error.",
            get_message,
        ),
        Tool(
            "list-dead-letter-messages",
            "Messages that ran out of attempts (or that the SMTP server refused), most recent first.",
            list_dead_letter_messages,
        ),
        Tool(
            "retry-dead-letter-message",
            "Move a dead-lettered message back to the outbox, to be sent again.",
            retry_dead_letter_message,
            read_only=False,
            needs_approval=_retry_reason,
        ),
    ]
