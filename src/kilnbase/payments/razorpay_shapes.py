"""The JSON of each Razorpay row, in InsForge's shapes (`shared-schemas/payments.schema.ts`, its `razorpay*`
schemas): camelCase fields, ISO-8601 times in UTC with milliseconds, null for what is not known."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kilnbase.payments import shapes
from kilnbase.payments.definitions import Environment
from kilnbase.payments.shapes import iso


def connection(
    environment: Environment, row: Mapping[str, Any] | None, masked_key: str | None
) -> dict[str, Any]:
    return shapes.connection(environment, row, masked_key, ("merchantName", "account_name"))


def item(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "environment": row["environment"],
        "itemId": row["item_id"],
        "name": row["name"],
        "description": row["description"],
        "active": row["active"],
        "amount": row["amount"],
        "unitAmount": row["unit_amount"],
        "currency": row["currency"],
        "type": row["type"],
        "providerCreatedAt": iso(row["provider_created_at"]),
        "syncedAt": iso(row["synced_at"]),
    }


def plan(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "environment": row["environment"],
        "planId": row["plan_id"],
        "itemId": row["item_id"],
        "period": row["period"],
        "interval": row["interval"],
        "amount": row["amount"],
        "unitAmount": row["unit_amount"],
        "currency": row["currency"],
        "active": row["active"],
        "notes": row["notes"],
        "providerCreatedAt": iso(row["provider_created_at"]),
        "syncedAt": iso(row["synced_at"]),
    }


ORDER_COLUMNS = (
    "id::text as id, environment, status, subject_type, subject_id, customer_name, customer_email, "
    "customer_contact, order_id, receipt, amount, amount_paid, amount_due, currency, attempts, "
    "verified_payment_id, verified_at, notes, last_error, created_at, updated_at"
)


def order(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "environment": row["environment"],
        "status": row["status"],
        "subjectType": row["subject_type"],
        "subjectId": row["subject_id"],
        "customerName": row["customer_name"],
        "customerEmail": row["customer_email"],
        "customerContact": row["customer_contact"],
        "orderId": row["order_id"],
        "receipt": row["receipt"],
        "amount": row["amount"],
        "amountPaid": row["amount_paid"],
        "amountDue": row["amount_due"],
        "currency": row["currency"],
        "attempts": row["attempts"],
        "verifiedPaymentId": row["verified_payment_id"],
        "verifiedAt": iso(row["verified_at"]),
        "notes": row["notes"],
        "lastError": row["last_error"],
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


def subscription(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "environment": row["environment"],
        "subscriptionId": row["subscription_id"],
        "planId": row["plan_id"],
        "customerId": row["customer_id"],
        "subjectType": row["subject_type"],
        "subjectId": row["subject_id"],
        "status": row["status"],
        "currentStart": iso(row["current_start"]),
        "currentEnd": iso(row["current_end"]),
        "endedAt": iso(row["ended_at"]),
        "quantity": row["quantity"],
        "chargeAt": iso(row["charge_at"]),
        "startAt": iso(row["start_at"]),
        "endAt": iso(row["end_at"]),
        "totalCount": row["total_count"],
        "authAttempts": row["auth_attempts"],
        "paidCount": row["paid_count"],
        "remainingCount": row["remaining_count"],
        "shortUrl": row["short_url"],
        "hasScheduledChanges": row["has_scheduled_changes"],
        "changeScheduledAt": iso(row["change_scheduled_at"]),
        "offerId": row["offer_id"],
        "authorizationPaymentId": row["authorization_payment_id"],
        "authorizationVerifiedAt": iso(row["authorization_verified_at"]),
        "notes": row["notes"],
        "providerCreatedAt": iso(row["provider_created_at"]),
        "syncedAt": iso(row["synced_at"]),
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }
