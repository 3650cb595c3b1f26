"""Applying a verified webhook event without refusing it for ever: a value the tables cannot hold (an amount
past bigint) fails that event alone. Its changes are rolled back to a savepoint, the
event is recorded `failed` with the reason, and the provider is answered 2xx: refusing it would only make
Stripe or Razorpay send the same event again for days, with the same outcome."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import AsyncCursor


async def apply(cur: AsyncCursor[Any], project: Callable[[], Awaitable[bool]]) -> tuple[str, str | None]:
    """`(processing_status, last_error)` of projecting an event inside a savepoint of `cur`'s transaction."""
    try:
        async with cur.connection.transaction():
            handled = await project()
    except psycopg.errors.DataError as exc:
        return "failed", f"The event holds a value Kilnbase cannot store: {exc.diag.message_primary or exc}"
    return ("processed" if handled else "ignored"), None


def storable(payload: bytes) -> bytes:
    """A verified body whose JSON Postgres can keep: `jsonb` refuses the NUL character (`\\u0000`), which
    JSON allows, so it becomes U+FFFD (the replacement character) rather than failing the event's record."""
    return payload.replace(b"\\u0000", b"\\ufffd")
