"""What the Razorpay routes take, checked: InsForge's rules (`shared-schemas/payments-api.schema.ts`, its
`*Razorpay*` schemas), every problem named at once as `field: reason` in one 400 `INVALID_INPUT`, unknown
fields refused (InsForge's schemas are strict).

Beyond InsForge's: notes follow Razorpay's own limits (15 keys, keys and values of at most 256
characters), so Razorpay never refuses what was accepted here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kilnbase.http.errors import ApiError
from kilnbase.payments import definitions
from kilnbase.payments.definitions import Environment, Reader

PERIODS = ("daily", "weekly", "monthly", "yearly")
MAX_AMOUNT = 99_999_999_999
#: Unix times (seconds) up to the year 2286: enough for any subscription, and within a timestamp's range.
MAX_UNIX_TIME = 9_999_999_999
MAX_NOTES = 15
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CURRENCY = re.compile(r"[A-Za-z]{3}")


def key_id_name(environment: Environment) -> str:
    return f"RAZORPAY_{environment.upper()}_KEY_ID"


#: How a Razorpay key id of each environment starts.
KEY_PREFIXES: Mapping[Environment, str] = {"test": "rzp_test_", "live": "rzp_live_"}


def mask_key(key: str) -> str:
    """InsForge's mask of a key id (`definitions.mask_key` with Razorpay's prefixes)."""
    return definitions.mask_key(key, KEY_PREFIXES)


def _notes(read: Reader) -> dict[str, str] | None:
    if "notes" not in read.body:
        return None
    value = read.body["notes"]
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        read.problem("notes", "an object of string values")
        return None
    if len(value) > MAX_NOTES:
        read.problem("notes", f"at most {MAX_NOTES} keys")
        return None
    if any(not 1 <= len(k) <= 256 or len(v) > 256 for k, v in value.items()):
        read.problem("notes", "keys of 1 to 256 characters, values of at most 256")
        return None
    if any(k.startswith("insforge_") for k in value):
        read.problem("notes", "Notes keys starting with insforge_ are reserved")
        return None
    return dict(value)


def _currency(read: Reader, *, required: bool) -> str | None:
    currency = read.text("currency", 3, required=required)
    if currency is not None and not _CURRENCY.fullmatch(currency):
        read.problem("currency", "Currency must be a three-letter ISO currency code")
        return None
    return currency.upper() if currency else None


def _email(read: Reader) -> str | None:
    email = read.text("customerEmail", 320, nullable=True)
    if email is not None and not _EMAIL.match(email):
        read.problem("customerEmail", "Invalid email")
        return None
    return email


@dataclass(frozen=True)
class KeyConfig:
    key_id: str
    key_secret: str
    webhook_secret: str | None


def config(environment: Environment, body: Mapping[str, Any]) -> KeyConfig:
    """`{keyId, keySecret, webhookSecret?}`; without a webhook secret Kilnbase makes one (or keeps its
    own)."""
    read = Reader(body, frozenset({"keyId", "keySecret", "webhookSecret"}))
    key_id = read.text("keyId", 255, required=True)
    key_secret = read.text("keySecret", 255, required=True)
    webhook_secret = None
    if isinstance(body.get("webhookSecret"), str) and not body["webhookSecret"].strip():
        pass  # (InsForge takes an empty webhookSecret as none given)
    else:
        webhook_secret = read.text("webhookSecret", 255)
    read.done()
    assert key_id is not None and key_secret is not None
    prefix = KEY_PREFIXES[environment]
    if not key_id.startswith(prefix):
        raise ApiError(
            400,
            "PAYMENT_CONFIG_INVALID",
            f'Razorpay key ID must start with "{prefix}" for the {environment} environment',
            "Copy the key id of this environment from the Razorpay dashboard (Account & Settings, API Keys).",
        )
    return KeyConfig(key_id, key_secret, webhook_secret)


def item(body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """Razorpay's parameters of an item create (`name, amount, currency, description?`) or update."""
    known = {"name", "description", "amount", "currency"} | (set() if creating else {"active"})
    read = Reader(body, frozenset(known))
    params: dict[str, Any] = {
        "name": read.text("name", 255, required=creating),
        "amount": read.integer("amount", 1, MAX_AMOUNT, required=creating),
        "currency": _currency(read, required=creating),
        "active": read.boolean("active"),
    }
    if "description" in body:
        params["description"] = read.text("description", 2048, nullable=True)
    if not creating and not body:
        read.problems.append("At least one item field is required")
    read.done()
    return {k: v for k, v in params.items() if v is not None or k == "description"}


def plan(body: Mapping[str, Any]) -> dict[str, Any]:
    """`{period, interval, item: {name, description?, amount, currency}, notes?}`, Razorpay's own shape."""
    read = Reader(body, frozenset({"period", "interval", "item", "notes"}))
    period = read.choice("period", PERIODS, required=True)
    interval = read.integer("interval", 1, 365, required=True)
    plan_item: dict[str, Any] | None = None
    if "item" not in body:
        read.problem("item", "Required")
    elif not isinstance(body["item"], dict):
        read.problem("item", "an object {name, amount, currency, description?}")
    else:
        inner = Reader(body["item"], frozenset({"name", "description", "amount", "currency"}), "item.")
        plan_item = {
            "name": inner.text("name", 255, required=True),
            "amount": inner.integer("amount", 1, MAX_AMOUNT, required=True),
            "currency": _currency(inner, required=True),
        }
        description = inner.text("description", 2048, nullable=True)
        if description:
            plan_item["description"] = description
        read.problems += inner.problems
    notes = _notes(read)
    read.done()
    params: dict[str, Any] = {"period": period, "interval": interval, "item": plan_item}
    if notes is not None:
        params["notes"] = notes
    return params


@dataclass(frozen=True)
class Customer:
    name: str | None
    email: str | None
    contact: str | None


@dataclass(frozen=True)
class OrderRequest:
    amount: int
    currency: str
    receipt: str | None
    description: str | None
    subject: tuple[str, str] | None
    customer: Customer
    callback_url: str | None
    notes: dict[str, str]


ORDER_FIELDS = frozenset(
    {
        "amount",
        "currency",
        "receipt",
        "description",
        "subject",
        "customerName",
        "customerEmail",
        "customerContact",
        "callbackUrl",
        "notes",
    }
)


def _customer(read: Reader) -> Customer:
    return Customer(
        read.text("customerName", 255, nullable=True),
        _email(read),
        read.text("customerContact", 32, nullable=True),
    )


def _callback(read: Reader) -> str | None:
    if read.body.get("callbackUrl") is None:
        return None
    return read.url("callbackUrl", "Callback URL")


def order(body: Mapping[str, Any]) -> OrderRequest:
    read = Reader(body, ORDER_FIELDS)
    amount = read.integer("amount", 1, MAX_AMOUNT, required=True)
    currency = _currency(read, required=True)
    receipt = read.text("receipt", 40, nullable=True)
    description = read.text("description", 2048, nullable=True)
    subject = read.subject(required=False)
    customer = _customer(read)
    callback_url = _callback(read)
    notes = _notes(read)
    read.done()
    assert amount is not None and currency is not None
    return OrderRequest(amount, currency, receipt, description, subject, customer, callback_url, notes or {})


@dataclass(frozen=True)
class Verification:
    object_id: str
    payment_id: str
    signature: str


def verification(body: Mapping[str, Any], id_field: str) -> Verification:
    """`{orderId | subscriptionId, paymentId, signature}`: what Razorpay Checkout hands the browser."""
    read = Reader(body, frozenset({id_field, "paymentId", "signature"}))
    object_id = read.text(id_field, 255, required=True)
    payment_id = read.text("paymentId", 255, required=True)
    signature = read.text("signature", 255, required=True)
    read.done()
    assert object_id is not None and payment_id is not None and signature is not None
    return Verification(object_id, payment_id, signature)


@dataclass(frozen=True)
class SubscriptionRequest:
    params: dict[str, Any]
    subject: tuple[str, str]
    customer: Customer
    description: str | None
    callback_url: str | None


SUBSCRIPTION_FIELDS = frozenset(
    {
        "planId",
        "totalCount",
        "endAt",
        "quantity",
        "startAt",
        "expireBy",
        "customerNotify",
        "offerId",
        "description",
        "subject",
        "customerName",
        "customerEmail",
        "customerContact",
        "callbackUrl",
        "notes",
    }
)


def subscription(body: Mapping[str, Any]) -> SubscriptionRequest:
    """Razorpay's parameters of a subscription create (`plan_id`, `total_count`, ...), the billing subject
    (required: a subscription is always somebody's), and what Checkout is given."""
    read = Reader(body, SUBSCRIPTION_FIELDS)
    params: dict[str, Any] = {
        "plan_id": read.text("planId", 255, required=True),
        "total_count": read.integer("totalCount", 1, 10_000),
        "end_at": read.integer("endAt", 1, MAX_UNIX_TIME),
        "quantity": read.integer("quantity", 1, 10_000),
        "start_at": read.integer("startAt", 1, MAX_UNIX_TIME),
        "expire_by": read.integer("expireBy", 1, MAX_UNIX_TIME),
        "customer_notify": read.boolean("customerNotify"),
        "offer_id": read.text("offerId", 255, nullable=True),
    }
    description = read.text("description", 2048, nullable=True)
    subject = read.subject(required=True)
    customer = _customer(read)
    callback_url = _callback(read)
    notes = _notes(read)
    if "totalCount" not in body and "endAt" not in body:
        read.problems.append("Either totalCount or endAt is required")
    read.done()
    assert subject is not None
    given = {k: v for k, v in params.items() if v is not None}
    given["notes"] = notes or {}
    return SubscriptionRequest(given, subject, customer, description, callback_url)


def cancel(body: Mapping[str, Any]) -> bool:
    """`{cancelAtCycleEnd?}` (default false: now)."""
    read = Reader(body, frozenset({"cancelAtCycleEnd"}))
    at_cycle_end = read.boolean("cancelAtCycleEnd")
    read.done()
    return bool(at_cycle_end)


def empty(body: Mapping[str, Any]) -> None:
    """Pause and resume take no fields."""
    Reader(body, frozenset()).done()


def path_id(value: str, what: str) -> str:
    """A Razorpay id as a path segment: letters, digits and `_` only (anything else names nothing)."""
    if not value or len(value) > 255 or not all(ch.isalnum() or ch == "_" for ch in value):
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"The id is not a Razorpay {what} id",
            f"Use the id Razorpay gave ({what[:3]}_...).",
        )
    return value
