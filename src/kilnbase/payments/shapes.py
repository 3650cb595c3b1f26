"""The JSON of each payments row, in InsForge's shapes (`shared-schemas/payments.schema.ts`): camelCase
fields, ISO-8601 times in UTC with milliseconds, null for what is not known. The SQL that selects each row
(`*_COLUMNS`) sits beside the function that shapes it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kilnbase.payments.definitions import Environment


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def connection(
    environment: Environment,
    row: Mapping[str, Any] | None,
    masked_key: str | None,
    account: tuple[str, str] = ("accountEmail", "account_email"),
) -> dict[str, Any]:
    """A provider connection as InsForge answers it; `account` names the field that describes the account
    and its column (Stripe's email; Razorpay's merchant name)."""
    row = row or {}
    field, column = account
    return {
        "environment": environment,
        "status": row.get("status", "unconfigured"),
        "accountId": row.get("provider_account_id"),
        field: row.get(column),
        "accountLivemode": row.get("account_livemode"),
        "webhookEndpointId": row.get("webhook_endpoint_id"),
        "webhookEndpointUrl": row.get("webhook_endpoint_url"),
        "webhookConfiguredAt": iso(row.get("webhook_configured_at")),
        "maskedKey": masked_key,
        "lastSyncedAt": iso(row.get("last_synced_at")),
        "lastSyncStatus": row.get("last_sync_status"),
        "lastSyncError": row.get("last_sync_error"),
        "lastSyncCounts": row.get("last_sync_counts") or {},
    }


def product(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "environment": row["environment"],
        "productId": row["product_id"],
        "name": row["name"],
        "description": row["description"],
        "active": row["active"],
        "defaultPriceId": row["default_price_id"],
        "metadata": row["metadata"],
        "syncedAt": iso(row["synced_at"]),
    }


def price(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "environment": row["environment"],
        "priceId": row["price_id"],
        "productId": row["product_id"],
        "active": row["active"],
        "currency": row["currency"],
        "unitAmount": row["unit_amount"],
        "unitAmountDecimal": row["unit_amount_decimal"],
        "type": row["type"],
        "lookupKey": row["lookup_key"],
        "billingScheme": row["billing_scheme"],
        "taxBehavior": row["tax_behavior"],
        "recurringInterval": row["recurring_interval"],
        "recurringIntervalCount": row["recurring_interval_count"],
        "metadata": row["metadata"],
        "syncedAt": iso(row["synced_at"]),
    }


CHECKOUT_COLUMNS = (
    "id::text as id, environment, mode, status, payment_status, subject_type, subject_id, customer_email, "
    "checkout_session_id, customer_id, payment_intent_id, subscription_id, url, last_error, created_at, "
    "updated_at"
)


def checkout_session(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "environment": row["environment"],
        "mode": row["mode"],
        "status": row["status"],
        "paymentStatus": row["payment_status"],
        "subjectType": row["subject_type"],
        "subjectId": row["subject_id"],
        "customerEmail": row["customer_email"],
        "checkoutSessionId": row["checkout_session_id"],
        "customerId": row["customer_id"],
        "paymentIntentId": row["payment_intent_id"],
        "subscriptionId": row["subscription_id"],
        "url": row["url"],
        "lastError": row["last_error"],
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


PORTAL_COLUMNS = (
    "id::text as id, environment, status, subject_type, subject_id, customer_id, return_url, "
    "configuration_id, url, last_error, created_at, updated_at"
)


def portal_session(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "environment": row["environment"],
        "status": row["status"],
        "subjectType": row["subject_type"],
        "subjectId": row["subject_id"],
        "customerId": row["customer_id"],
        "returnUrl": row["return_url"],
        "configuration": row["configuration_id"],
        "url": row["url"],
        "lastError": row["last_error"],
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


def transaction(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "environment": row["environment"],
        "provider": row["provider"],
        "type": row["type"],
        "status": row["status"],
        "subjectType": row["subject_type"],
        "subjectId": row["subject_id"],
        "providerCustomerId": row["provider_customer_id"],
        "customerEmailSnapshot": row["customer_email_snapshot"],
        "providerReferenceId": row["provider_object_id"],
        "providerReferenceType": row["provider_object_type"],
        "amount": row["amount"],
        "amountRefunded": row["amount_refunded"],
        "currency": row["currency"],
        "description": row["description"],
        "paidAt": iso(row["paid_at"]),
        "failedAt": iso(row["failed_at"]),
        "refundedAt": iso(row["refunded_at"]),
        "providerCreatedAt": iso(row["provider_created_at"]),
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


def subscription(row: Mapping[str, Any], items: list[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "environment": row["environment"],
        "subscriptionId": row["subscription_id"],
        "customerId": row["customer_id"],
        "subjectType": row["subject_type"],
        "subjectId": row["subject_id"],
        "status": row["status"],
        "currentPeriodStart": iso(row["current_period_start"]),
        "currentPeriodEnd": iso(row["current_period_end"]),
        "cancelAtPeriodEnd": row["cancel_at_period_end"],
        "cancelAt": iso(row["cancel_at"]),
        "canceledAt": iso(row["canceled_at"]),
        "trialStart": iso(row["trial_start"]),
        "trialEnd": iso(row["trial_end"]),
        "latestInvoiceId": row["latest_invoice_id"],
        "metadata": row["metadata"],
        "syncedAt": iso(row["synced_at"]),
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
        "items": [
            {
                "environment": item["environment"],
                "subscriptionItemId": item["subscription_item_id"],
                "subscriptionId": item["subscription_id"],
                "productId": item["product_id"],
                "priceId": item["price_id"],
                "quantity": item["quantity"],
                "metadata": item["metadata"],
                "createdAt": iso(item["created_at"]),
                "updatedAt": iso(item["updated_at"]),
            }
            for item in items
        ],
    }


def webhook_event(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "environment": row["environment"],
        "eventId": row["provider_event_id"],
        "eventType": row["event_type"],
        "livemode": row["livemode"],
        "accountId": row["account_id"],
        "objectType": row["object_type"],
        "objectId": row["object_id"],
        "processingStatus": row["processing_status"],
        "attemptCount": row["attempt_count"],
        "lastError": row["last_error"],
        "receivedAt": iso(row["received_at"]),
        "processedAt": iso(row["processed_at"]),
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }
