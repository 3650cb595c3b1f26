"""What a verified Stripe event changes, in the transaction that records it (`service.receive_webhook`):
InsForge's projections (`services/payments/stripe/webhook.service.ts`) of the events Kilnbase subscribes its
endpoint to. Only the event's own payload is read: no call back to Stripe, so one event is one transaction.

- `checkout.session.*`: the checkout session's status; the customer that paid for its billing subject; for
  a one-time payment, its payment history row (pending until paid; async payments settle later).
- `invoice.paid`, `invoice.payment_failed`: a history row per invoice payment (a subscription's invoice, or
  a one-time one), and the customer's billing subject when the invoice names it.
- `customer.subscription.*`: the subscription and its items.
- `charge.refunded`: the refunded amount and state of the payment's history row.
- `customer.created`, `.updated`, `.deleted`: the customer as the customers list shows it; a deleted one
  keeps its last known details, marked deleted, and no longer pays for any billing subject.

Anything else is recorded and answered `handled: false`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg import AsyncCursor

from kilnbase.payments import customer_mappings, customer_mirror, mirror
from kilnbase.payments.definitions import Environment
from kilnbase.payments.mirror import object_id, subject_of, text, timestamp

#: The events Kilnbase's managed endpoint asks Stripe for (those `apply` reads).
EVENTS = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "invoice.paid",
    "invoice.payment_failed",
    "charge.refunded",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.created",
    "customer.updated",
    "customer.deleted",
)


async def apply(cur: AsyncCursor[Any], environment: Environment, event: Mapping[str, Any]) -> bool:
    """Project the event; whether it changed anything Kilnbase keeps."""
    kind = str(event.get("type"))
    data = event.get("data")
    item = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(item, Mapping):
        return False
    created = timestamp(event.get("created"))
    if kind.startswith("checkout.session."):
        return await _checkout(cur, environment, kind, item, created)
    if kind in ("invoice.paid", "invoice.payment_failed"):
        return await _invoice(cur, environment, item, succeeded=kind == "invoice.paid")
    if kind.startswith("customer.subscription.") and isinstance(item.get("id"), str):
        subject = subject_of(item.get("metadata"))
        customer = object_id(item.get("customer"))
        if subject is None:
            subject = await customer_mappings.subject_of_customer(cur, "stripe", environment, customer)
        elif customer is not None:
            await customer_mappings.map_customer(cur, "stripe", environment, subject, customer)
        await mirror.upsert_subscription(cur, environment, item, subject)
        return True
    if kind == "charge.refunded":
        return await _refund(cur, environment, item)
    if kind in ("customer.created", "customer.updated", "customer.deleted"):
        if kind == "customer.deleted" and isinstance(item.get("id"), str):
            await customer_mirror.forget_stripe_customer(cur, environment, str(item["id"]))
        return await customer_mirror.upsert_stripe_customer(
            cur, environment, {**item, "deleted": kind == "customer.deleted" or item.get("deleted") is True}
        )
    return False


async def _checkout(
    cur: AsyncCursor[Any], environment: Environment, kind: str, session: Mapping[str, Any], created: Any
) -> bool:
    session_id = text(session.get("id"))
    if session_id is None:
        return False
    status = {
        "checkout.session.expired": "expired",
    }.get(kind, "completed")
    payment_status = text(session.get("payment_status"))
    if payment_status not in ("paid", "unpaid", "no_payment_required"):
        payment_status = None
    customer = object_id(session.get("customer"))
    payment_intent = object_id(session.get("payment_intent"))
    await cur.execute(
        "update payments.stripe_checkout_sessions set status = %s, "
        "payment_status = coalesce(%s, payment_status), customer_id = coalesce(%s, customer_id), "
        "payment_intent_id = coalesce(%s, payment_intent_id), "
        "subscription_id = coalesce(%s, subscription_id), last_error = null, updated_at = now() "
        "where environment = %s and checkout_session_id = %s",
        (
            status,
            payment_status,
            customer,
            payment_intent,
            object_id(session.get("subscription")),
            environment,
            session_id,
        ),
    )
    handled = cur.rowcount > 0
    subject = subject_of(session.get("metadata"))
    if subject is not None and customer is not None and status == "completed":
        await customer_mappings.map_customer(cur, "stripe", environment, subject, customer)
        handled = True
    if status == "expired" or session.get("mode") != "payment":
        return handled
    if kind == "checkout.session.async_payment_failed":
        outcome, kind_of = "failed", "failed_payment"
    elif kind == "checkout.session.async_payment_succeeded" or payment_status in (
        "paid",
        "no_payment_required",
    ):
        outcome, kind_of = "succeeded", "one_time_payment"
    else:
        outcome, kind_of = "pending", "one_time_payment"
    details = session.get("customer_details")
    email = text(details.get("email")) if isinstance(details, Mapping) else None
    await mirror.upsert_transaction(
        cur,
        environment,
        {
            "type": kind_of,
            "status": outcome,
            "subject": subject,
            "customer_id": customer,
            "email": email or text(session.get("customer_email")),
            "object_type": "payment_intent" if payment_intent else "checkout_session",
            "object_id": payment_intent or session_id,
            "related": {"checkout_session": session_id, "payment_intent": payment_intent},
            "amount": mirror.integer(session.get("amount_total")),
            "currency": text(session.get("currency")),
            "paid_at": created if outcome == "succeeded" else None,
            "failed_at": created if outcome == "failed" else None,
            "created_at": timestamp(session.get("created")),
            "raw": session,
        },
    )
    return True


def _invoice_subscription(invoice: Mapping[str, Any]) -> tuple[str | None, dict[str, str]]:
    """The subscription an invoice bills and its metadata: `parent.subscription_details` (Stripe's API since
    2025), else the older `subscription` and `subscription_details`."""
    parent = invoice.get("parent")
    details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
    if not isinstance(details, Mapping):
        details = invoice.get("subscription_details")
    details = details if isinstance(details, Mapping) else {}
    subscription = object_id(details.get("subscription")) or object_id(invoice.get("subscription"))
    return subscription, mirror.string_map(details.get("metadata"))


async def _invoice(
    cur: AsyncCursor[Any], environment: Environment, invoice: Mapping[str, Any], *, succeeded: bool
) -> bool:
    invoice_id = text(invoice.get("id"))
    if invoice_id is None:
        return False
    subscription, subscription_metadata = _invoice_subscription(invoice)
    customer = object_id(invoice.get("customer"))
    subject = subject_of(subscription_metadata) or subject_of(invoice.get("metadata"))
    if subject is not None and customer is not None:
        await customer_mappings.map_customer(cur, "stripe", environment, subject, customer)
    elif subject is None:
        subject = await customer_mappings.subject_of_customer(cur, "stripe", environment, customer)
    payment_intent = object_id(invoice.get("payment_intent"))
    transitions = invoice.get("status_transitions")
    paid_at = timestamp(transitions.get("paid_at")) if isinstance(transitions, Mapping) else None
    await mirror.upsert_transaction(
        cur,
        environment,
        {
            "type": "subscription_invoice" if subscription else "one_time_payment",
            "status": "succeeded" if succeeded else "failed",
            "subject": subject,
            "customer_id": customer,
            "email": text(invoice.get("customer_email")),
            "object_type": "invoice",
            "object_id": invoice_id,
            "related": {
                "invoice": invoice_id,
                "subscription": subscription,
                "payment_intent": payment_intent,
            },
            "amount": mirror.integer(invoice.get("amount_paid" if succeeded else "amount_due")),
            "currency": text(invoice.get("currency")),
            "description": text(invoice.get("description")) or text(invoice.get("number")),
            "paid_at": (paid_at or timestamp(invoice.get("created"))) if succeeded else None,
            "failed_at": None if succeeded else timestamp(invoice.get("created")),
            "created_at": timestamp(invoice.get("created")),
            "raw": invoice,
        },
    )
    return True


async def _refund(cur: AsyncCursor[Any], environment: Environment, charge: Mapping[str, Any]) -> bool:
    payment_intent = object_id(charge.get("payment_intent"))
    refunded = mirror.integer(charge.get("amount_refunded")) or 0
    if payment_intent is None:
        return False
    await cur.execute(
        "update payments.transactions set amount_refunded = %s, "
        "status = case when %s then 'refunded' else 'partially_refunded' end, refunded_at = now(), "
        "related_object_ids = related_object_ids || jsonb_build_object('charge', %s::text), updated_at = "
        "now() "
        "where provider = 'stripe' and environment = %s and type <> 'refund' and "
        "((provider_object_type = 'payment_intent' and provider_object_id = %s) "
        "or related_object_ids ->> 'payment_intent' = %s)",
        (
            refunded,
            bool(charge.get("refunded")),
            text(charge.get("id")),
            environment,
            payment_intent,
            payment_intent,
        ),
    )
    return cur.rowcount > 0
