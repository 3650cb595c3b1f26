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
    await cur.execute(
        "insert into payments.stripe_products (environment, product_id, name, description, active, "
        "default_price_id, metadata, raw, synced_at) values (%s, %s, %s, %s, %s, %s, %s, %s, now()) "
        "on conflict (environment, product_id) do update set name = excluded.name, "
        "description = excluded.description, active = excluded.active, "
        "default_price_id = excluded.default_price_id, metadata = excluded.metadata, raw = excluded.raw, "
        "synced_at = now()",
        (
            environment,
            str(item["id"]),
            text(item.get("name")) or "",
            text(item.get("description")) or None,
            bool(item.get("active", True)),
            object_id(item.get("default_price")),
            Jsonb(string_map(item.get("metadata"))),
            Jsonb(dict(item)),
        ),
    )


async def upsert_price(cur: AsyncCursor[Any], environment: Environment, item: Mapping[str, Any]) -> None:
    recurring = item.get("recurring") if isinstance(item.get("recurring"), Mapping) else {}
    decimal = item.get("unit_amount_decimal")
    await cur.execute(
        "insert into payments.stripe_prices (environment, price_id, product_id, active, currency, "
        "unit_amount, "
        "unit_amount_decimal, type, lookup_key, billing_scheme, tax_behavior, recurring_interval, "
        "recurring_interval_count, metadata, raw, synced_at) "
        "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now()) "
        "on conflict (environment, price_id) do update set product_id = excluded.product_id, "
        "active = excluded.active, currency = excluded.currency, unit_amount = excluded.unit_amount, "
        "unit_amount_decimal = excluded.unit_amount_decimal, type = excluded.type, "
        "lookup_key = excluded.lookup_key, billing_scheme = excluded.billing_scheme, "
        "tax_behavior = excluded.tax_behavior, recurring_interval = excluded.recurring_interval, "
        "recurring_interval_count = excluded.recurring_interval_count, metadata = excluded.metadata, "
        "raw = excluded.raw, synced_at = now()",
        (
            environment,
            str(item["id"]),
            object_id(item.get("product")),
            bool(item.get("active", True)),
            text(item.get("currency")) or "",
            integer(item.get("unit_amount")),
            None if decimal is None else str(decimal),
            text(item.get("type")) or ("recurring" if recurring else "one_time"),
            text(item.get("lookup_key")),
            text(item.get("billing_scheme")),
            text(item.get("tax_behavior")),
            text(recurring.get("interval")) if recurring else None,
            integer(recurring.get("interval_count")) if recurring else None,
            Jsonb(string_map(item.get("metadata"))),
            Jsonb(dict(item)),
        ),
    )


async def map_customer(
    cur: AsyncCursor[Any], environment: Environment, subject: tuple[str, str], customer_id: str
) -> None:
    await cur.execute(
        "insert into payments.customer_mappings (environment, subject_type, subject_id, "
        "provider_customer_id) "
        "values (%s, %s, %s, %s) on conflict (provider, environment, subject_type, subject_id) do update set "
        "provider_customer_id = excluded.provider_customer_id, updated_at = now()",
        (environment, subject[0], subject[1], customer_id),
    )


async def subject_of_customer(
    cur: AsyncCursor[Any], environment: Environment, customer_id: str | None
) -> tuple[str, str] | None:
    if customer_id is None:
        return None
    await cur.execute(
        "select subject_type, subject_id from payments.customer_mappings where provider = 'stripe' "
        "and environment = %s and provider_customer_id = %s order by updated_at desc limit 1",
        (environment, customer_id),
    )
    row = await cur.fetchone()
    return (row["subject_type"], row["subject_id"]) if row else None


async def customer_of_subject(
    cur: AsyncCursor[Any], environment: Environment, subject: tuple[str, str]
) -> str | None:
    await cur.execute(
        "select provider_customer_id from payments.customer_mappings where provider = 'stripe' "
        "and environment = %s and subject_type = %s and subject_id = %s",
        (environment, subject[0], subject[1]),
    )
    row = await cur.fetchone()
    return str(row["provider_customer_id"]) if row else None


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
    await cur.execute(
        "insert into payments.stripe_subscriptions (environment, subscription_id, customer_id, subject_type, "
        "subject_id, status, current_period_start, current_period_end, cancel_at_period_end, cancel_at, "
        "canceled_at, trial_start, trial_end, latest_invoice_id, metadata, raw, synced_at) "
        "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now()) "
        "on conflict (environment, subscription_id) do update set customer_id = excluded.customer_id, "
        "subject_type = coalesce(excluded.subject_type, payments.stripe_subscriptions.subject_type), "
        "subject_id = coalesce(excluded.subject_id, payments.stripe_subscriptions.subject_id), "
        "status = excluded.status, current_period_start = excluded.current_period_start, "
        "current_period_end = excluded.current_period_end, cancel_at_period_end = "
        "excluded.cancel_at_period_end, "
        "cancel_at = excluded.cancel_at, canceled_at = excluded.canceled_at, trial_start = "
        "excluded.trial_start, "
        "trial_end = excluded.trial_end, latest_invoice_id = excluded.latest_invoice_id, "
        "metadata = excluded.metadata, raw = excluded.raw, synced_at = now(), updated_at = now()",
        (
            environment,
            subscription_id,
            object_id(item.get("customer")),
            subject[0] if subject else None,
            subject[1] if subject else None,
            text(item.get("status")) or "incomplete",
            timestamp(start),
            timestamp(end),
            bool(item.get("cancel_at_period_end", False)),
            timestamp(item.get("cancel_at")),
            timestamp(item.get("canceled_at")),
            timestamp(item.get("trial_start")),
            timestamp(item.get("trial_end")),
            object_id(item.get("latest_invoice")),
            Jsonb(string_map(item.get("metadata"))),
            Jsonb(dict(item)),
        ),
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
        await cur.execute(
            "insert into payments.stripe_subscription_items (environment, subscription_item_id, "
            "subscription_id, "
            "product_id, price_id, quantity, metadata) values (%s, %s, %s, %s, %s, %s, %s) "
            "on conflict (environment, subscription_item_id) do update set subscription_id = "
            "excluded.subscription_id, "
            "product_id = excluded.product_id, price_id = excluded.price_id, quantity = excluded.quantity, "
            "metadata = excluded.metadata, updated_at = now()",
            (
                environment,
                str(entry["id"]),
                subscription_id,
                object_id(price.get("product")) if price else None,
                object_id(entry.get("price")),
                integer(entry.get("quantity")),
                Jsonb(string_map(entry.get("metadata"))),
            ),
        )
