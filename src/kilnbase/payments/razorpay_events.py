"""What a verified Razorpay webhook event changes, in the transaction that records it: InsForge's projections
(`services/payments/razorpay/webhook.service.ts`). Only the event's own payload is read: no call back to
Razorpay, so one event is one transaction.

- `payment.*`, `order.paid`: the payment's history row, and the order it paid.
- `subscription.*`: the subscription (and, for `subscription.charged`, the payment that charged it).
- `refund.*`: the refund's row, and its payment's refunded state.
- `invoice.paid`, `invoice.expired`: the payment and subscription they carry.

Anything else is recorded and answered `handled: false`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg import AsyncCursor

from kilnbase.payments import razorpay_mirror
from kilnbase.payments.definitions import Environment
from kilnbase.payments.mirror import text

HANDLED = frozenset(
    {
        "payment.authorized",
        "payment.captured",
        "payment.failed",
        "order.paid",
        "subscription.created",
        "subscription.activated",
        "subscription.charged",
        "subscription.updated",
        "subscription.cancelled",
        "subscription.paused",
        "subscription.resumed",
        "subscription.halted",
        "subscription.completed",
        "subscription.expired",
        "refund.created",
        "refund.processed",
        "refund.failed",
        "invoice.paid",
        "invoice.expired",
    }
)


def entity(event: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """`payload.<kind>.entity`, when it is an object with an id."""
    payload = event.get("payload")
    wrapper = payload.get(kind) if isinstance(payload, Mapping) else None
    found = wrapper.get("entity") if isinstance(wrapper, Mapping) else None
    return found if isinstance(found, Mapping) and isinstance(found.get("id"), str) else None


def event_id(event: Mapping[str, Any], header: str | None) -> str:
    """Razorpay's `X-Razorpay-Event-Id` header; without it, InsForge's stand-in made of the account, the
    event, its first entity and its time (the same for each retry of one event)."""
    if header:
        return header[:255]
    contains = event.get("contains")
    first = contains[0] if isinstance(contains, list) and contains and isinstance(contains[0], str) else None
    found = entity(event, first) if first else None
    entity_id = str(found["id"]) if found else "no_entity"
    return f"{event.get('account_id')}.{event.get('event')}.{entity_id}.{event.get('created_at')}"[:255]


async def apply(cur: AsyncCursor[Any], environment: Environment, event: Mapping[str, Any]) -> bool:
    """Project the event; whether it changed anything Kilnbase keeps."""
    kind = str(event.get("event"))
    if kind not in HANDLED:
        return False
    payment = entity(event, "payment")
    subscription = entity(event, "subscription")
    invoice = entity(event, "invoice")
    if kind.startswith("refund."):
        refund = entity(event, "refund")
        if refund is None:
            return False
        status = refund.get("status")
        outcome = (
            "failed"
            if kind == "refund.failed" or status == "failed"
            else "refunded"
            if kind == "refund.processed" or status == "processed"
            else "pending"
        )
        await razorpay_mirror.upsert_refund(cur, environment, refund, outcome)
        return True
    handled = False
    subject = None
    if subscription is not None:
        stored = await razorpay_mirror.upsert_subscription(cur, environment, subscription)
        if stored["subjectType"] is not None:
            subject = (stored["subjectType"], stored["subjectId"])
        handled = True
    if payment is not None:
        if subject is None and invoice is not None:
            subject = razorpay_mirror.subject_of(razorpay_mirror.notes_of(invoice.get("notes")))
        await razorpay_mirror.upsert_payment(
            cur,
            environment,
            payment,
            subscription_id=(text(subscription.get("id")) if subscription else None)
            or (text(invoice.get("subscription_id")) if invoice else None),
            invoice_id=text(invoice.get("id")) if invoice else None,
            subject=subject,
        )
        handled = True
    return handled
