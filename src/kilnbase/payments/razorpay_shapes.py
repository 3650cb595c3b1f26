"""The JSON of each Razorpay row, in InsForge's shapes (`shared-schemas/payments.schema.ts`, its `razorpay*`
schemas): camelCase fields, ISO-8601 times in UTC with milliseconds, null for what is not known; declared
as `shapes.RowShape`s, as Stripe's are."""

from __future__ import annotations

from kilnbase.payments.shapes import RowShape

item = RowShape(
    (
        "environment",
        "item_id",
        "name",
        "description",
        "active",
        "amount",
        "unit_amount",
        "currency",
        "type",
        "provider_created_at",
        "synced_at",
    )
)

plan = RowShape(
    (
        "environment",
        "plan_id",
        "item_id",
        "period",
        "interval",
        "amount",
        "unit_amount",
        "currency",
        "active",
        "notes",
        "provider_created_at",
        "synced_at",
    )
)

ORDER_COLUMNS = (
    "id::text as id, environment, status, subject_type, subject_id, customer_name, customer_email, "
    "customer_contact, order_id, receipt, amount, amount_paid, amount_due, currency, attempts, "
    "verified_payment_id, verified_at, notes, last_error, created_at, updated_at"
)
order = RowShape(
    (
        "id",
        "environment",
        "status",
        "subject_type",
        "subject_id",
        "customer_name",
        "customer_email",
        "customer_contact",
        "order_id",
        "receipt",
        "amount",
        "amount_paid",
        "amount_due",
        "currency",
        "attempts",
        "verified_payment_id",
        "verified_at",
        "notes",
        "last_error",
        "created_at",
        "updated_at",
    )
)

subscription = RowShape(
    (
        "environment",
        "subscription_id",
        "plan_id",
        "customer_id",
        "subject_type",
        "subject_id",
        "status",
        "current_start",
        "current_end",
        "ended_at",
        "quantity",
        "charge_at",
        "start_at",
        "end_at",
        "total_count",
        "auth_attempts",
        "paid_count",
        "remaining_count",
        "short_url",
        "has_scheduled_changes",
        "change_scheduled_at",
        "offer_id",
        "authorization_payment_id",
        "authorization_verified_at",
        "notes",
        "provider_created_at",
        "synced_at",
        "created_at",
        "updated_at",
    )
)
