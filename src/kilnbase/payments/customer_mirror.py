"""The providers' customers written into `payments.customers` (migration 0350), on a cursor of the owner's
transaction: from a Stripe sync or `customer.*` event, and from a Razorpay sync. The whole object is kept
as `raw`, because the customers list reads the card and the country from it (`customers.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg import AsyncCursor
from psycopg.types.json import Jsonb

from kilnbase.payments.definitions import Environment
from kilnbase.payments.mirror import string_map, text, timestamp
from kilnbase.payments.razorpay_mirror import notes_of

_INSERT = (
    "insert into payments.customers (provider, environment, provider_customer_id, email, name, phone, "
    "deleted, metadata, raw, provider_created_at, synced_at) "
    "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now()) "
    "on conflict (provider, environment, provider_customer_id) do update set "
)
_REPLACE = (
    "email = excluded.email, name = excluded.name, phone = excluded.phone, deleted = excluded.deleted, "
    "metadata = excluded.metadata, raw = excluded.raw, provider_created_at = excluded.provider_created_at, "
    "synced_at = now(), updated_at = now()"
)
# A deletion event carries little more than the id: what was known of the customer stays on show.
_MARK_DELETED = "deleted = true, synced_at = now(), updated_at = now()"


async def upsert_stripe_customer(
    cur: AsyncCursor[Any], environment: Environment, customer: Mapping[str, Any]
) -> bool:
    """A Stripe customer as Stripe describes it now (a `deleted` one keeps its last known details);
    False when the object has no id."""
    customer_id = text(customer.get("id"))
    if not customer_id:
        return False
    deleted = customer.get("deleted") is True
    await cur.execute(
        _INSERT + (_MARK_DELETED if deleted else _REPLACE),
        (
            "stripe",
            environment,
            customer_id,
            text(customer.get("email")),
            text(customer.get("name")),
            text(customer.get("phone")),
            deleted,
            Jsonb({} if deleted else string_map(customer.get("metadata"))),
            Jsonb(dict(customer)),
            timestamp(customer.get("created")),
        ),
    )
    return True


async def mark_missing_stripe_customers(
    cur: AsyncCursor[Any], environment: Environment, listed_ids: list[str]
) -> None:
    """A full sync lists every customer Stripe keeps: one it no longer lists was deleted there."""
    await cur.execute(
        "update payments.customers set deleted = true, synced_at = now(), updated_at = now() "
        "where provider = 'stripe' and environment = %s and not deleted "
        "and not (provider_customer_id = any(%s))",
        (environment, listed_ids),
    )


async def forget_stripe_customer(cur: AsyncCursor[Any], environment: Environment, customer_id: str) -> None:
    """A deleted Stripe customer pays for no billing subject any more (InsForge drops its mappings), so the
    subject's next checkout makes a new customer."""
    await cur.execute(
        "delete from payments.customer_mappings where provider = 'stripe' and environment = %s "
        "and provider_customer_id = %s",
        (environment, customer_id),
    )


async def upsert_razorpay_customer(
    cur: AsyncCursor[Any], environment: Environment, entity: Mapping[str, Any]
) -> None:
    """A Razorpay customer (Razorpay deletes none: each one listed is current); its `contact` is the phone,
    its notes the metadata."""
    await cur.execute(
        _INSERT + _REPLACE,
        (
            "razorpay",
            environment,
            str(entity["id"]),
            text(entity.get("email")) or None,
            text(entity.get("name")) or None,
            text(entity.get("contact")) or None,
            False,
            Jsonb(notes_of(entity.get("notes"))),
            Jsonb(dict(entity)),
            timestamp(entity.get("created_at")),
        ),
    )
