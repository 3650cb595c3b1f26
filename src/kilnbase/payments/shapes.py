"""The JSON of each payments row, in InsForge's shapes (`shared-schemas/payments.schema.ts`): camelCase
fields, ISO-8601 times in UTC with milliseconds, null for what is not known. The SQL that selects each row
(`*_COLUMNS`) sits beside the shape that reads it.

InsForge names a field after its column in nearly every case, so a shape is declared as data (`RowShape`:
its columns, and the few fields named otherwise) rather than written out field by field; every provider's
rows (`razorpay_shapes.py` too) are shaped by the same few lines."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kilnbase.payments.definitions import Environment


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def camel(column: str) -> str:
    """`provider_created_at` as `providerCreatedAt`."""
    first, *rest = column.split("_")
    return first + "".join(word.capitalize() for word in rest)


@dataclass(frozen=True)
class RowShape:
    """A row's JSON: each of `columns`, in order, under its camelCase name (or the name `renamed` gives
    it); a time (any `datetime`) as `iso`."""

    columns: tuple[str, ...]
    renamed: Mapping[str, str] = field(default_factory=dict)

    def __call__(self, row: Mapping[str, Any]) -> dict[str, Any]:
        shaped: dict[str, Any] = {}
        for column in self.columns:
            value = row[column]
            shaped[self.renamed.get(column) or camel(column)] = (
                iso(value) if isinstance(value, datetime) else value
            )
        return shaped


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


product = RowShape(
    (
        "environment",
        "product_id",
        "name",
        "description",
        "active",
        "default_price_id",
        "metadata",
        "synced_at",
    )
)

price = RowShape(
    (
        "environment",
        "price_id",
        "product_id",
        "active",
        "currency",
        "unit_amount",
        "unit_amount_decimal",
        "type",
        "lookup_key",
        "billing_scheme",
        "tax_behavior",
        "recurring_interval",
        "recurring_interval_count",
        "metadata",
        "synced_at",
    )
)

CHECKOUT_COLUMNS = (
    "id::text as id, environment, mode, status, payment_status, subject_type, subject_id, customer_email, "
    "checkout_session_id, customer_id, payment_intent_id, subscription_id, url, last_error, created_at, "
    "updated_at"
)
checkout_session = RowShape(
    (
        "id",
        "environment",
        "mode",
        "status",
        "payment_status",
        "subject_type",
        "subject_id",
        "customer_email",
        "checkout_session_id",
        "customer_id",
        "payment_intent_id",
        "subscription_id",
        "url",
        "last_error",
        "created_at",
        "updated_at",
    )
)

PORTAL_COLUMNS = (
    "id::text as id, environment, status, subject_type, subject_id, customer_id, return_url, "
    "configuration_id, url, last_error, created_at, updated_at"
)
portal_session = RowShape(
    (
        "id",
        "environment",
        "status",
        "subject_type",
        "subject_id",
        "customer_id",
        "return_url",
        "configuration_id",
        "url",
        "last_error",
        "created_at",
        "updated_at",
    ),
    {"configuration_id": "configuration"},
)

transaction = RowShape(
    (
        "environment",
        "provider",
        "type",
        "status",
        "subject_type",
        "subject_id",
        "provider_customer_id",
        "customer_email_snapshot",
        "provider_object_id",
        "provider_object_type",
        "amount",
        "amount_refunded",
        "currency",
        "description",
        "paid_at",
        "failed_at",
        "refunded_at",
        "provider_created_at",
        "created_at",
        "updated_at",
    ),
    {"provider_object_id": "providerReferenceId", "provider_object_type": "providerReferenceType"},
)

_subscription = RowShape(
    (
        "environment",
        "subscription_id",
        "customer_id",
        "subject_type",
        "subject_id",
        "status",
        "current_period_start",
        "current_period_end",
        "cancel_at_period_end",
        "cancel_at",
        "canceled_at",
        "trial_start",
        "trial_end",
        "latest_invoice_id",
        "metadata",
        "synced_at",
        "created_at",
        "updated_at",
    )
)
_subscription_item = RowShape(
    (
        "environment",
        "subscription_item_id",
        "subscription_id",
        "product_id",
        "price_id",
        "quantity",
        "metadata",
        "created_at",
        "updated_at",
    )
)


def subscription(row: Mapping[str, Any], items: list[Mapping[str, Any]]) -> dict[str, Any]:
    """A Stripe subscription with its items."""
    return {**_subscription(row), "items": [_subscription_item(item) for item in items]}


webhook_event = RowShape(
    (
        "environment",
        "provider_event_id",
        "event_type",
        "livemode",
        "account_id",
        "object_type",
        "object_id",
        "processing_status",
        "attempt_count",
        "last_error",
        "received_at",
        "processed_at",
        "created_at",
        "updated_at",
    ),
    {"provider_event_id": "eventId"},
)
