"""Razorpay's entities written into the payments tables, on a cursor of the owner's transaction: catalog items
and plans, subscriptions, which customer pays for which billing subject, and the payment history (payments
and refunds). Each write is an upsert keyed by Razorpay's id, so a retried event or a second sync leaves
the same rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg import AsyncCursor
from psycopg.types.json import Jsonb

from kilnbase.payments import customer_mappings, razorpay_shapes
from kilnbase.payments.definitions import Environment
from kilnbase.payments.mirror import SUBJECT_ID_KEY, SUBJECT_TYPE_KEY, integer, text, timestamp
from kilnbase.payments.mirror_upsert import upsert

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
    row = await upsert(
        cur,
        "razorpay_items",
        ("environment", "item_id"),
        {
            "environment": environment,
            "item_id": str(entity["id"]),
            "name": text(entity.get("name")) or "",
            "description": text(entity.get("description")) or None,
            "active": entity.get("active") is not False,
            "amount": integer(entity.get("amount")),
            "unit_amount": integer(entity.get("unit_amount")),
            "currency": (text(entity.get("currency")) or "").upper(),
            "type": text(entity.get("type")),
            "raw": Jsonb(dict(entity)),
            "provider_created_at": timestamp(entity.get("created_at")),
        },
        touched=("synced_at", "updated_at"),
        returning=True,
    )
    return razorpay_shapes.item(row)


async def upsert_plan(
    cur: AsyncCursor[Any], environment: Environment, entity: Mapping[str, Any]
) -> dict[str, Any]:
    found = entity.get("item")
    plan_item: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    row = await upsert(
        cur,
        "razorpay_plans",
        ("environment", "plan_id"),
        {
            "environment": environment,
            "plan_id": str(entity["id"]),
            "item_id": text(plan_item.get("id")) or "",
            "period": text(entity.get("period")) or "",
            "interval": integer(entity.get("interval")) or 1,
            "amount": integer(plan_item.get("amount")),
            "unit_amount": integer(plan_item.get("unit_amount")),
            "currency": (text(plan_item.get("currency")) or "").upper(),
            "active": plan_item.get("active") is not False,
            "notes": Jsonb(notes_of(entity.get("notes"))),
            "raw": Jsonb(dict(entity)),
            "provider_created_at": timestamp(entity.get("created_at")),
        },
        touched=("synced_at", "updated_at"),
        returning=True,
    )
    return razorpay_shapes.plan(row)


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
    subject = (
        subject
        or subject_of(notes)
        or await customer_mappings.subject_of_customer(cur, "razorpay", environment, customer)
    )
    status = text(entity.get("status"))
    row = await upsert(
        cur,
        "razorpay_subscriptions",
        ("environment", "subscription_id"),
        {
            "environment": environment,
            "subscription_id": str(entity["id"]),
            "plan_id": text(entity.get("plan_id")) or "",
            "customer_id": customer,
            "subject_type": subject[0] if subject else None,
            "subject_id": subject[1] if subject else None,
            "status": status if status in SUBSCRIPTION_STATUSES else "created",
            "current_start": timestamp(entity.get("current_start")),
            "current_end": timestamp(entity.get("current_end")),
            "ended_at": timestamp(entity.get("ended_at")),
            "quantity": integer(entity.get("quantity")),
            "charge_at": timestamp(entity.get("charge_at")),
            "start_at": timestamp(entity.get("start_at")),
            "end_at": timestamp(entity.get("end_at")),
            "total_count": integer(entity.get("total_count")),
            "auth_attempts": integer(entity.get("auth_attempts")),
            "paid_count": integer(entity.get("paid_count")),
            "remaining_count": integer(entity.get("remaining_count")),
            "short_url": text(entity.get("short_url")),
            "has_scheduled_changes": bool(entity.get("has_scheduled_changes")),
            "change_scheduled_at": timestamp(entity.get("change_scheduled_at")),
            "offer_id": text(entity.get("offer_id")),
            "notes": Jsonb(notes),
            "raw": Jsonb(dict(entity)),
            "provider_created_at": timestamp(entity.get("created_at")),
        },
        touched=("synced_at", "updated_at"),
        kept=("subject_type", "subject_id"),
        returning=True,
    )
    if subject is not None and customer is not None:
        await customer_mappings.map_customer(cur, "razorpay", environment, subject, customer)
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
    subject = (
        subject
        or subject_of(notes)
        or await customer_mappings.subject_of_customer(cur, "razorpay", environment, customer)
    )
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
