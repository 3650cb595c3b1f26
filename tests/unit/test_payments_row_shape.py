"""`payments.shapes.RowShape`, which every provider's rows go through on their way to InsForge's JSON: a
column under its camelCase name (or the name a shape gives it), in the shape's order, and a time as
ISO-8601 in UTC with milliseconds, whatever time zone Postgres handed it in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from kilnbase.payments.razorpay_shapes import order
from kilnbase.payments.shapes import RowShape, camel, webhook_event


@pytest.mark.parametrize(
    ("column", "field"),
    [
        ("environment", "environment"),
        ("provider_created_at", "providerCreatedAt"),
        ("recurring_interval_count", "recurringIntervalCount"),
    ],
)
def test_a_column_is_named_in_camel_case(column: str, field: str) -> None:
    assert camel(column) == field


def test_a_row_keeps_the_shapes_order_renames_and_times() -> None:
    shape = RowShape(
        ("provider_object_id", "paid_at", "amount"), {"provider_object_id": "providerReferenceId"}
    )
    paid = datetime(2026, 3, 4, 10, 5, 6, 789_123, tzinfo=timezone(timedelta(hours=5, minutes=30)))

    shaped = shape({"amount": 1200, "paid_at": paid, "provider_object_id": "pay_1", "raw": {"x": 1}})

    assert list(shaped.items()) == [
        ("providerReferenceId", "pay_1"),
        ("paidAt", "2026-03-04T04:35:06.789Z"),
        ("amount", 1200),
    ]


def test_an_unknown_time_stays_null() -> None:
    row = {
        "environment": "test",
        "provider_event_id": "evt_1",
        "event_type": "invoice.paid",
        "livemode": False,
        "account_id": None,
        "object_type": None,
        "object_id": None,
        "processing_status": "processed",
        "attempt_count": 1,
        "last_error": None,
        "received_at": datetime(2026, 1, 1, tzinfo=UTC),
        "processed_at": None,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "updated_at": datetime(2026, 1, 1, tzinfo=UTC),
    }

    shaped = webhook_event(row)

    assert shaped["eventId"] == "evt_1"
    assert shaped["processedAt"] is None
    assert shaped["receivedAt"] == "2026-01-01T00:00:00.000Z"


def test_a_row_without_a_column_of_the_shape_is_refused() -> None:
    with pytest.raises(KeyError):
        order({"id": "x"})
