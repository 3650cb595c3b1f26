"""Razorpay's entities written into the payments tables, on a cursor of the owner's transaction: catalog items
and plans, subscriptions, which customer pays for which billing subject, and the payment history (payments
and refunds). Each write is an upsert keyed by Razorpay's id, so a retried event or a second sync leaves
the same rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg import AsyncCursor
from psycopg.types.json import Jsonb

from kilnbase.payments import razorpay_shapes
from kilnbase.payments.definitions import Environment
from kilnbase.payments.mirror import SUBJECT_ID_KEY, SUBJECT_TYPE_KEY, integer, text, timestamp

SUBSCRIPTION_STATUSES = frozenset(
    {"created", "authenticated", "active", "pending", "halted", "cancelled", "completed", "expired", "paused"}
)


def notes_of(value: Any) -> dict[str, str]:
    """Razorpay's notes as strings (it keeps numbers and booleans as given)."""
    if not isinstance(value, Mapping):
        return {}
    return {
        str(k): (v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v))
        for k, v in value.items()
        if isinstance(v, str | int | float | bool)
    }


def subject_of(notes: Mapping[str, str]) -> tuple[str, str] | None:
    subject_type, subject_id = notes.get(SUBJECT_TYPE_KEY), notes.get(SUBJECT_ID_KEY)
    return (subject_type, subject_id) if subject_type and subject_id else None


def stamped(notes: Mapping[str, str], subject: tuple[str, str] | None) -> dict[str, str]:
    """The caller's notes with the billing subject Kilnbase reads back from Razorpay's entities."""
    given = dict(notes)
    if subject is not None:
        given[SUBJECT_TYPE_KEY], given[SUBJECT_ID_KEY] = subject
    return given


async def upsert_item(
    cur: AsyncCursor[Any], environment: Environment, entity: Mapping[str, Any]
) -> dict[str, Any]:
    await cur.execute(
        "insert into payments.razorpay_items (environment, item_id, name, description, active, amount, "
        "unit_amount, currency, type, raw, provider_created_at, synced_at) "
        "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now()) "
        "on conflict (environment, item_id) do update set name = excluded.name, "
        "description = excluded.description, active = excluded.active, amount = excluded.amount, "
        "unit_amount = excluded.unit_amount, currency = excluded.currency, type = excluded.type, "
        "raw = excluded.raw, provider_created_at = excluded.provider_created_at, synced_at = now(), "
        "updated_at = now() returning *",
        (
            environment,
            str(entity["id"]),
            text(entity.get("name")) or "",
            text(entity.get("description")) or None,
            entity.get("active") is not False,
            integer(entity.get("amount")),
            integer(entity.get("unit_amount")),
            (text(entity.get("currency")) or "").upper(),
            text(entity.get("type")),
            Jsonb(dict(entity)),
            timestamp(entity.get("created_at")),
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return razorpay_shapes.item(row)


async def upsert_plan(
    cur: AsyncCursor[Any], environment: Environment, entity: Mapping[str, Any]
) -> dict[str, Any]:
    found = entity.get("item")
    plan_item: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    await cur.execute(
        "insert into payments.razorpay_plans (environment, plan_id, item_id, period, interval, amount, "
        "unit_amount, currency, active, notes, raw, provider_created_at, synced_at) "
        "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now()) "
        "on conflict (environment, plan_id) do update set item_id = excluded.item_id, "
        "period = excluded.period, interval = excluded.interval, amount = excluded.amount, "
        "unit_amount = excluded.unit_amount, currency = excluded.currency, active = excluded.active, "
        "notes = excluded.notes, raw = excluded.raw, provider_created_at = excluded.provider_created_at, "
        "synced_at = now(), updated_at = now() returning *",
        (
            environment,
            str(entity["id"]),
            text(plan_item.get("id")) or "",
            text(entity.get("period")) or "",
            integer(entity.get("interval")) or 1,
            integer(plan_item.get("amount")),
            integer(plan_item.get("unit_amount")),
            (text(plan_item.get("currency")) or "").upper(),
            plan_item.get("active") is not False,
            Jsonb(notes_of(entity.get("notes"))),
            Jsonb(dict(entity)),
            timestamp(entity.get("created_at")),
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return razorpay_shapes.plan(row)


async def map_customer(
    cur: AsyncCursor[Any], environment: Environment, subject: tuple[str, str], customer_id: str
) -> None:
    await cur.execute(
        "insert into payments.customer_mappings (provider, environment, subject_type, subject_id, "
        "provider_customer_id) values ('razorpay', %s, %s, %s, %s) "
        "on conflict (provider, environment, subject_type, subject_id) do update set "
        "provider_customer_id = excluded.provider_customer_id, updated_at = now()",
        (environment, subject[0], subject[1], customer_id),
    )


async def subject_of_customer(
    cur: AsyncCursor[Any], environment: Environment, customer_id: str | None
) -> tuple[str, str] | None:
    if customer_id is None:
        return None
    await cur.execute(
        "select subject_type, subject_id from payments.customer_mappings where provider = 'razorpay' "
        "and environment = %s and provider_customer_id = %s order by updated_at desc limit 1",
        (environment, customer_id),
    )
    row = await cur.fetchone()
    return (row["subject_type"], row["subject_id"]) if row else None


async def upsert_subscription(
    cur: AsyncCursor[Any],
    environment: Environment,
    entity: Mapping[str, Any],
    subject: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The subscription as Razorpay describes it now; its subject is the one given, else the one stamped in
    its notes, else its customer's."""
    notes = notes_of(entity.get("notes"))
    customer = text(entity.get("customer_id"))
    subject = subject or subject_of(notes) or await subject_of_customer(cur, environment, customer)
    status = text(entity.get("status"))
    await cur.execute(
        "insert into payments.razorpay_subscriptions (environment, subscription_id, plan_id, customer_id, "
        "subject_type, subject_id, status, current_start, current_end, ended_at, quantity, charge_at, "
        "start_at, end_at, total_count, auth_attempts, paid_count, remaining_count, short_url, "
        "has_scheduled_changes, change_scheduled_at, offer_id, notes, raw, provider_created_at, synced_at) "
        "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
        "%s, %s, %s, now()) "
        "on conflict (environment, subscription_id) do update set plan_id = excluded.plan_id, "
        "customer_id = excluded.customer_id, "
        "subject_type = coalesce(excluded.subject_type, payments.razorpay_subscriptions.subject_type), "
        "subject_id = coalesce(excluded.subject_id, payments.razorpay_subscriptions.subject_id), "
        "status = excluded.status, current_start = excluded.current_start, "
        "current_end = excluded.current_end, ended_at = excluded.ended_at, quantity = excluded.quantity, "
        "charge_at = excluded.charge_at, start_at = excluded.start_at, end_at = excluded.end_at, "
        "total_count = excluded.total_count, auth_attempts = excluded.auth_attempts, "
        "paid_count = excluded.paid_count, remaining_count = excluded.remaining_count, "
        "short_url = excluded.short_url, has_scheduled_changes = excluded.has_scheduled_changes, "
        "change_scheduled_at = excluded.change_scheduled_at, offer_id = excluded.offer_id, "
        "notes = excluded.notes, raw = excluded.raw, provider_created_at = excluded.provider_created_at, "
        "synced_at = now(), updated_at = now() returning *",
        (
            environment,
            str(entity["id"]),
            text(entity.get("plan_id")) or "",
            customer,
            subject[0] if subject else None,
            subject[1] if subject else None,
            status if status in SUBSCRIPTION_STATUSES else "created",
            timestamp(entity.get("current_start")),
            timestamp(entity.get("current_end")),
            timestamp(entity.get("ended_at")),
            integer(entity.get("quantity")),
            timestamp(entity.get("charge_at")),
            timestamp(entity.get("start_at")),
            timestamp(entity.get("end_at")),
            integer(entity.get("total_count")),
            integer(entity.get("auth_attempts")),
            integer(entity.get("paid_count")),
            integer(entity.get("remaining_count")),
            text(entity.get("short_url")),
            bool(entity.get("has_scheduled_changes")),
            timestamp(entity.get("change_scheduled_at")),
            text(entity.get("offer_id")),
            Jsonb(notes),
            Jsonb(dict(entity)),
            timestamp(entity.get("created_at")),
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    if subject is not None and customer is not None:
        await map_customer(cur, environment, subject, customer)
    return razorpay_shapes.subscription(row)


def payment_status(payment: Mapping[str, Any]) -> str:
    """InsForge's reading of a payment: refunded (whole or in part) once money went back, else by its
    status (captured: succeeded; failed; anything else pending)."""
    status = payment.get("status")
    amount = integer(payment.get("amount")) or 0
    refunded = integer(payment.get("amount_refunded")) or 0
    refund_status = str(payment.get("refund_status") or "").lower()
    if status == "refunded" or (
        status == "captured" and refunded > 0 and (refund_status == "full" or refunded >= amount)
    ):
        return "refunded"
    if status == "captured" and refunded > 0:
        return "partially_refunded"
    return {"captured": "succeeded", "failed": "failed"}.get(str(status), "pending")


async def upsert_payment(
    cur: AsyncCursor[Any],
    environment: Environment,
    payment: Mapping[str, Any],
    *,
    subscription_id: str | None,
    invoice_id: str | None,
    subject: tuple[str, str] | None,
) -> None:
    """One history row per payment; the order it paid (if any) follows it."""
    notes = notes_of(payment.get("notes"))
    customer = text(payment.get("customer_id"))
    subject = subject or subject_of(notes) or await subject_of_customer(cur, environment, customer)
    order_id = text(payment.get("order_id"))
    if subject is None and order_id is not None:
        await cur.execute(
            "select subject_type, subject_id from payments.razorpay_orders where environment = %s and "
            "order_id = %s and subject_type is not null",
            (environment, order_id),
        )
        found = await cur.fetchone()
        subject = (found["subject_type"], found["subject_id"]) if found else None
    status = payment_status(payment)
    created = timestamp(payment.get("created_at"))
    related = {"order": order_id, "invoice": invoice_id, "subscription": subscription_id}
    await cur.execute(
        "insert into payments.transactions (provider, environment, type, status, subject_type, subject_id, "
        "provider_customer_id, customer_email_snapshot, provider_object_type, provider_object_id, "
        "related_object_ids, amount, amount_refunded, currency, description, paid_at, failed_at, "
        "provider_created_at, raw) values ('razorpay', %s, %s, %s, %s, %s, %s, %s, 'payment', %s, %s, %s, "
        "%s, %s, %s, %s, %s, %s, %s) "
        "on conflict (provider, environment, provider_object_type, provider_object_id) do update set "
        "type = excluded.type, status = excluded.status, "
        "subject_type = coalesce(excluded.subject_type, payments.transactions.subject_type), "
        "subject_id = coalesce(excluded.subject_id, payments.transactions.subject_id), "
        "provider_customer_id = coalesce(excluded.provider_customer_id, "
        "payments.transactions.provider_customer_id), "
        "customer_email_snapshot = coalesce(excluded.customer_email_snapshot, "
        "payments.transactions.customer_email_snapshot), "
        "related_object_ids = payments.transactions.related_object_ids || excluded.related_object_ids, "
        "amount = excluded.amount, amount_refunded = greatest(excluded.amount_refunded, "
        "payments.transactions.amount_refunded), currency = excluded.currency, "
        "description = coalesce(excluded.description, payments.transactions.description), "
        "paid_at = coalesce(payments.transactions.paid_at, excluded.paid_at), "
        "failed_at = excluded.failed_at, raw = excluded.raw, updated_at = now()",
        (
            environment,
            "failed_payment"
            if status == "failed"
            else "subscription_invoice"
            if subscription_id or invoice_id
            else "one_time_payment",
            status,
            subject[0] if subject else None,
            subject[1] if subject else None,
            customer,
            text(payment.get("email")),
            str(payment["id"]),
            Jsonb({k: v for k, v in related.items() if v}),
            integer(payment.get("amount")),
            integer(payment.get("amount_refunded")) or 0,
            (text(payment.get("currency")) or "").lower() or None,
            text(payment.get("description")),
            created if status in ("succeeded", "refunded", "partially_refunded") else None,
            created if status == "failed" else None,
            created,
            Jsonb(dict(payment)),
        ),
    )
    if order_id is not None:
        captured = payment.get("captured") is True or payment.get("status") in ("captured", "refunded")
        await cur.execute(
            "update payments.razorpay_orders set status = case when %s then 'paid' when status = 'paid' "
            "then status else 'attempted' end, "
            "amount_paid = case when %s then %s else amount_paid end, "
            "amount_due = case when %s then greatest(amount - %s, 0) else amount_due end, "
            "verified_payment_id = case when %s then coalesce(verified_payment_id, %s) "
            "else verified_payment_id end, updated_at = now() "
            "where environment = %s and order_id = %s",
            (
                captured,
                captured,
                integer(payment.get("amount")),
                captured,
                integer(payment.get("amount")) or 0,
                captured,
                str(payment["id"]),
                environment,
                order_id,
            ),
        )


async def upsert_refund(
    cur: AsyncCursor[Any], environment: Environment, refund: Mapping[str, Any], status: str
) -> None:
    """A refund's own history row (type `refund`); a processed one also marks its payment's row refunded,
    whole or in part."""
    payment_id = text(refund.get("payment_id"))
    amount = integer(refund.get("amount"))
    created = timestamp(refund.get("created_at"))
    await cur.execute(
        "insert into payments.transactions (provider, environment, type, status, subject_type, subject_id, "
        "provider_customer_id, provider_object_type, provider_object_id, related_object_ids, amount, "
        "currency, refunded_at, provider_created_at, raw) "
        "select 'razorpay', %s, 'refund', %s, p.subject_type, p.subject_id, p.provider_customer_id, "
        "'refund', %s, %s, %s, %s, %s, %s, %s from (select 1) one left join payments.transactions p on "
        "p.provider = 'razorpay' and p.environment = %s and p.provider_object_type = 'payment' and "
        "p.provider_object_id = %s "
        "on conflict (provider, environment, provider_object_type, provider_object_id) do update set "
        "status = excluded.status, amount = excluded.amount, refunded_at = excluded.refunded_at, "
        "raw = excluded.raw, updated_at = now()",
        (
            environment,
            status,
            str(refund["id"]),
            Jsonb({"payment": payment_id} if payment_id else {}),
            amount,
            (text(refund.get("currency")) or "").lower() or None,
            timestamp(refund.get("processed_at")) or created if status == "refunded" else None,
            created,
            Jsonb(dict(refund)),
            environment,
            payment_id,
        ),
    )
    if status == "refunded" and payment_id is not None:
        await cur.execute(
            "update payments.transactions set amount_refunded = coalesce((select sum(r.amount) from "
            "payments.transactions r where r.provider = 'razorpay' and r.environment = %s and r.type = "
            "'refund' and r.status = 'refunded' and r.related_object_ids ->> 'payment' = %s), 0), "
            "refunded_at = now(), updated_at = now() "
            "where provider = 'razorpay' and environment = %s and provider_object_type = 'payment' "
            "and provider_object_id = %s",
            (environment, payment_id, environment, payment_id),
        )
        await cur.execute(
            "update payments.transactions set status = case when amount is not null and amount_refunded "
            ">= amount then 'refunded' else 'partially_refunded' end where provider = 'razorpay' and "
            "environment = %s and provider_object_type = 'payment' and provider_object_id = %s",
            (environment, payment_id),
        )
