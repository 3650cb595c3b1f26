"""Stripe's objects written into the payments tables, on a cursor of the owner's transaction: products and
prices (the catalog mirror), subscriptions with their items, payment history rows, and which customer pays
for which billing subject. Each write is an upsert keyed by Stripe's id, so a retried event or a second sync
leaves the same rows."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncCursor
from psycopg.types.json import Jsonb

from kilnbase.payments.definitions import Environment
from kilnbase.payments.mirror_upsert import upsert

SUBJECT_TYPE_KEY = "insforge_subject_type"
SUBJECT_ID_KEY = "insforge_subject_id"
CHECKOUT_MODE_KEY = "insforge_checkout_mode"
CHECKOUT_SESSION_KEY = "insforge_checkout_session_id"


def object_id(value: Any) -> str | None:
    """An id Stripe gives as a string, or inside an expanded object."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def timestamp(value: Any) -> datetime | None:
    """A Unix time Stripe gives; None for anything else, a time past year 9999 included (no calendar
    Postgres or Python keeps has it: it must not fail the event)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def subject_of(metadata: Any) -> tuple[str, str] | None:
    """The billing subject Kilnbase stamped on a Stripe object's metadata at checkout."""
    found = string_map(metadata)
    subject_type, subject_id = found.get(SUBJECT_TYPE_KEY), found.get(SUBJECT_ID_KEY)
    return (subject_type, subject_id) if subject_type and subject_id else None


async def upsert_product(cur: AsyncCursor[Any], environment: Environment, item: Mapping[str, Any]) -> None:
    await upsert(
        cur,
        "stripe_products",
        ("environment", "product_id"),
        {
            "environment": environment,
            "product_id": str(item["id"]),
            "name": text(item.get("name")) or "",
            "description": text(item.get("description")) or None,
            "active": bool(item.get("active", True)),
            "default_price_id": object_id(item.get("default_price")),
            "metadata": Jsonb(string_map(item.get("metadata"))),
            "raw": Jsonb(dict(item)),
        },
        touched=("synced_at",),
    )


async def upsert_price(cur: AsyncCursor[Any], environment: Environment, item: Mapping[str, Any]) -> None:
    recurring = item.get("recurring") if isinstance(item.get("recurring"), Mapping) else {}
    decimal = item.get("unit_amount_decimal")
    await upsert(
        cur,
        "stripe_prices",
        ("environment", "price_id"),
        {
            "environment": environment,
            "price_id": str(item["id"]),
            "product_id": object_id(item.get("product")),
            "active": bool(item.get("active", True)),
            "currency": text(item.get("currency")) or "",
            "unit_amount": integer(item.get("unit_amount")),
            "unit_amount_decimal": None if decimal is None else str(decimal),
            "type": text(item.get("type")) or ("recurring" if recurring else "one_time"),
            "lookup_key": text(item.get("lookup_key")),
            "billing_scheme": text(item.get("billing_scheme")),
            "tax_behavior": text(item.get("tax_behavior")),
            "recurring_interval": text(recurring.get("interval")) if recurring else None,
            "recurring_interval_count": integer(recurring.get("interval_count")) if recurring else None,
            "metadata": Jsonb(string_map(item.get("metadata"))),
            "raw": Jsonb(dict(item)),
        },
        touched=("synced_at",),
    )


async def upsert_transaction(
    cur: AsyncCursor[Any], environment: Environment, fields: Mapping[str, Any]
) -> None:
    """One payment history row per Stripe object (`object_type`, `object_id`): a later event about the same
    payment updates it (a pending payment that succeeds, a failed one retried)."""
    subject = fields.get("subject")
    await cur.execute(
        "insert into payments.transactions (environment, type, status, subject_type, subject_id, "
        "provider_customer_id, customer_email_snapshot, provider_object_type, provider_object_id, "
        "related_object_ids, amount, currency, description, paid_at, failed_at, provider_created_at, raw) "
        "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "on conflict (provider, environment, provider_object_type, provider_object_id) do update set "
        "type = excluded.type, status = case when payments.transactions.status in "
        "('refunded', 'partially_refunded') then payments.transactions.status else excluded.status end, "
        "subject_type = coalesce(excluded.subject_type, payments.transactions.subject_type), "
        "subject_id = coalesce(excluded.subject_id, payments.transactions.subject_id), "
        "provider_customer_id = coalesce(excluded.provider_customer_id, "
        "payments.transactions.provider_customer_id), "
        "customer_email_snapshot = coalesce(excluded.customer_email_snapshot, "
        "payments.transactions.customer_email_snapshot), "
        "related_object_ids = payments.transactions.related_object_ids || excluded.related_object_ids, "
        "amount = coalesce(excluded.amount, payments.transactions.amount), "
        "currency = coalesce(excluded.currency, payments.transactions.currency), "
        "description = coalesce(excluded.description, payments.transactions.description), "
        "paid_at = coalesce(excluded.paid_at, payments.transactions.paid_at), "
        "failed_at = excluded.failed_at, raw = excluded.raw, updated_at = now()",
        (
            environment,
            fields["type"],
            fields["status"],
            subject[0] if subject else None,
            subject[1] if subject else None,
            fields.get("customer_id"),
            fields.get("email"),
            fields["object_type"],
            fields["object_id"],
            Jsonb({k: v for k, v in (fields.get("related") or {}).items() if v}),
            fields.get("amount"),
            fields.get("currency"),
            fields.get("description"),
            fields.get("paid_at"),
            fields.get("failed_at"),
            fields.get("created_at"),
            Jsonb(dict(fields.get("raw") or {})),
        ),
    )


async def upsert_subscription(
    cur: AsyncCursor[Any], environment: Environment, item: Mapping[str, Any], subject: tuple[str, str] | None
) -> None:
    """A subscription and its items as Stripe describes them now (items no longer listed are removed).
    The period is the subscription's, or (Stripe's API since 2025) its first item's."""
    items_list = item.get("items")
    items = (
        [i for i in (items_list.get("data") or []) if isinstance(i, Mapping)]
        if isinstance(items_list, Mapping)
        else []
    )
    first = items[0] if items else {}
    start = item.get("current_period_start") or first.get("current_period_start")
    end = item.get("current_period_end") or first.get("current_period_end")
    subscription_id = str(item["id"])
    await upsert(
        cur,
        "stripe_subscriptions",
        ("environment", "subscription_id"),
        {
            "environment": environment,
            "subscription_id": subscription_id,
            "customer_id": object_id(item.get("customer")),
            "subject_type": subject[0] if subject else None,
            "subject_id": subject[1] if subject else None,
            "status": text(item.get("status")) or "incomplete",
            "current_period_start": timestamp(start),
            "current_period_end": timestamp(end),
            "cancel_at_period_end": bool(item.get("cancel_at_period_end", False)),
            "cancel_at": timestamp(item.get("cancel_at")),
            "canceled_at": timestamp(item.get("canceled_at")),
            "trial_start": timestamp(item.get("trial_start")),
            "trial_end": timestamp(item.get("trial_end")),
            "latest_invoice_id": object_id(item.get("latest_invoice")),
            "metadata": Jsonb(string_map(item.get("metadata"))),
            "raw": Jsonb(dict(item)),
        },
        touched=("synced_at", "updated_at"),
        kept=("subject_type", "subject_id"),
    )
    kept = [str(i["id"]) for i in items if isinstance(i.get("id"), str)]
    await cur.execute(
        "delete from payments.stripe_subscription_items where environment = %s and subscription_id = %s "
        "and not (subscription_item_id = any(%s))",
        (environment, subscription_id, kept),
    )
    for entry in items:
        if not isinstance(entry.get("id"), str):
            continue
        price = entry.get("price") if isinstance(entry.get("price"), Mapping) else {}
        await upsert(
            cur,
            "stripe_subscription_items",
            ("environment", "subscription_item_id"),
            {
                "environment": environment,
                "subscription_item_id": str(entry["id"]),
                "subscription_id": subscription_id,
                "product_id": object_id(price.get("product")) if price else None,
                "price_id": object_id(entry.get("price")),
                "quantity": integer(entry.get("quantity")),
                "metadata": Jsonb(string_map(entry.get("metadata"))),
            },
            touched=("updated_at",),
        )
