"""The log of a provider's webhook events, `payments.webhook_events`, the same for every provider: a verified
event is recorded once per provider, environment and event id (a retry counts an attempt), and applied in
the transaction that records it, so a retry of an event already processed or ignored changes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncCursor
from psycopg.types.json import Jsonb

from kilnbase.payments import event_outcome
from kilnbase.payments.definitions import Environment


@dataclass(frozen=True)
class ReceivedEvent:
    """A verified event as the log keeps it: the provider's id and type, and what it is about."""

    event_id: str
    event_type: str
    livemode: bool
    account_id: str | None
    object_type: str | None
    object_id: str | None
    payload: dict[str, Any]


async def record_and_apply(
    cur: AsyncCursor[Any],
    provider: str,
    environment: Environment,
    event: ReceivedEvent,
    project: Callable[[], Awaitable[bool]],
) -> bool:
    """Record `event` and, unless it is a retry of one already processed or ignored, apply it (`project`,
    `event_outcome.apply`); whether it was processed now."""
    await cur.execute(
        "insert into payments.webhook_events as e (provider, environment, provider_event_id, event_type, "
        "livemode, account_id, object_type, object_id, payload) values (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "on conflict (provider, environment, provider_event_id) do update set "
        "attempt_count = e.attempt_count + 1, received_at = now(), updated_at = now() "
        "returning processing_status, (xmax = 0) as inserted",
        (
            provider,
            environment,
            event.event_id,
            event.event_type,
            event.livemode,
            event.account_id,
            event.object_type,
            event.object_id,
            Jsonb(event.payload),
        ),
    )
    recorded = await cur.fetchone()
    assert recorded is not None
    if not recorded["inserted"] and recorded["processing_status"] in ("processed", "ignored"):
        return False
    status, error = await event_outcome.apply(cur, project)
    await cur.execute(
        "update payments.webhook_events set processing_status = %s, processed_at = now(), last_error = %s, "
        "updated_at = now() where provider = %s and environment = %s and provider_event_id = %s",
        (status, error, provider, environment, event.event_id),
    )
    return status == "processed"
