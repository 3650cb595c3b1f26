"""What the payments API takes, checked: InsForge's rules (`shared-schemas/payments-api.schema.ts`), every
problem named at once as `field: reason` in one 400 `INVALID_INPUT`; a field the API does not know is refused
(InsForge's schemas are strict).

Beyond InsForge's: metadata follows Stripe's own limits (50 keys, keys of at most 40 characters and without
square brackets, values of at most 500), so Stripe never refuses what was accepted here; URLs are http or
https with a host.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import FIX_FIELDS

Environment = Literal["test", "live"]
ENVIRONMENTS: tuple[Environment, ...] = ("test", "live")
MODES = ("payment", "subscription")
INTERVALS = ("day", "week", "month", "year")
TAX_BEHAVIORS = ("exclusive", "inclusive", "unspecified")
RESERVED_PREFIX = "insforge_"
MAX_LINE_ITEMS = 100
MAX_QUANTITY = 999
MAX_URL = 2048
MAX_METADATA_KEYS = 50
MAX_LIST = 100
DEFAULT_LIST = 50
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def environment_of(value: str, provider: str = "stripe") -> Environment:
    """The path's `:environment` (InsForge's zod message for anything else)."""
    if value == "test":
        return "test"
    if value == "live":
        return "live"
    raise ApiError(
        400,
        "INVALID_INPUT",
        f"environment: Invalid enum value. Expected 'test' | 'live', received '{value[:40]}'",
        f"Use /api/payments/{provider}/test/... or /api/payments/{provider}/live/....",
    )


def secret_key_name(environment: Environment) -> str:
    return f"STRIPE_{environment.upper()}_SECRET_KEY"


def webhook_secret_name(environment: Environment) -> str:
    return f"STRIPE_{environment.upper()}_WEBHOOK_SECRET"


#: How a Stripe secret key of each environment starts.
KEY_PREFIXES: Mapping[Environment, str] = {"test": "sk_test_", "live": "sk_live_"}


def key_prefix(environment: Environment) -> str:
    return KEY_PREFIXES[environment]


def mask_key(key: str, prefixes: Mapping[Environment, str] = KEY_PREFIXES) -> str:
    """InsForge's mask of a provider's key (Stripe's unless `prefixes` names another's): its environment's
    prefix (else its first four characters), four stars and its last four characters."""
    if len(key) <= 8:
        return "****"
    prefix = next((p for p in prefixes.values() if key.startswith(p)), key[:4])
    return f"{prefix}****{key[-4:]}"


class _Reader:
    """Collects problems while reading one object."""

    def __init__(self, body: Mapping[str, Any], known: frozenset[str], prefix: str = "") -> None:
        self.body = body
        self.prefix = prefix
        self.problems: list[str] = []
        for key in body:
            if key not in known:
                self.problems.append(f"{prefix}{str(key)[:64]}: not a field of this request")

    def problem(self, key: str, reason: str) -> None:
        self.problems.append(f"{self.prefix}{key}: {reason}")

    def text(self, key: str, most: int, *, required: bool = False, nullable: bool = False) -> str | None:
        if key not in self.body:
            if required:
                self.problem(key, "Required")
            return None
        value = self.body[key]
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(key, "a non-empty string" + (", or null" if nullable else ""))
            return None
        if len(value.strip()) > most:
            self.problem(key, f"at most {most} characters")
            return None
        return value.strip()

    def choice(self, key: str, options: tuple[str, ...], *, required: bool = False) -> str | None:
        if key not in self.body:
            if required:
                self.problem(key, "Required")
            return None
        value = self.body[key]
        if value not in options:
            expected = " | ".join(f"'{option}'" for option in options)
            self.problem(key, f"Invalid enum value. Expected {expected}, received '{str(value)[:40]}'")
            return None
        return str(value)

    def integer(self, key: str, low: int, high: int, *, required: bool = False) -> int | None:
        if key not in self.body:
            if required:
                self.problem(key, "Required")
            return None
        value = self.body[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.problem(key, f"an integer from {low} to {high}")
            return None
        return value

    def boolean(self, key: str) -> bool | None:
        value = self.body.get(key)
        if key in self.body and not isinstance(value, bool):
            self.problem(key, "Expected boolean")
            return None
        return value

    def url(self, key: str, label: str, *, required: bool = False) -> str | None:
        if key not in self.body:
            if required:
                self.problem(key, "Required")
            return None
        value = self.body[key]
        if isinstance(value, str):
            value = value.strip()
        if not isinstance(value, str) or len(value) > MAX_URL or not _is_url(value):
            self.problem(key, f"{label} must be a valid URL")
            return None
        return value

    def metadata(self, key: str = "metadata") -> dict[str, str] | None:
        if key not in self.body:
            return None
        value = self.body[key]
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self.problem(key, "an object of string values")
            return None
        if len(value) > MAX_METADATA_KEYS:
            self.problem(key, f"at most {MAX_METADATA_KEYS} keys")
            return None
        if any(not 1 <= len(k) <= 40 or len(v) > 500 for k, v in value.items()):
            self.problem(key, "keys of 1 to 40 characters, values of at most 500")
            return None
        if any("[" in k or "]" in k for k in value):
            # (Stripe's form names a key `metadata[<key>]`: a bracket in it nests what Stripe reads)
            self.problem(key, "keys without square brackets ([ or ])")
            return None
        if any(k.startswith(RESERVED_PREFIX) for k in value):
            self.problem(key, "Metadata keys starting with insforge_ are reserved")
            return None
        return dict(value)

    def subject(self, *, required: bool) -> tuple[str, str] | None:
        if "subject" not in self.body:
            if required:
                self.problem("subject", "Required")
            return None
        value = self.body["subject"]
        if not isinstance(value, dict):
            self.problem("subject", "an object {type, id}")
            return None
        inner = _Reader(value, frozenset({"type", "id"}), f"{self.prefix}subject.")
        subject_type = inner.text("type", 100, required=True)
        subject_id = inner.text("id", 255, required=True)
        self.problems += inner.problems
        if subject_type is None or subject_id is None:
            return None
        return subject_type, subject_id

    def done(self) -> None:
        if self.problems:
            raise ApiError(400, "INVALID_INPUT", ", ".join(self.problems), FIX_FIELDS)


#: The same reader for Razorpay's requests (`razorpay_definitions`).
Reader = _Reader


def _is_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        return False
    clean = not any(ch.isspace() or ord(ch) < 0x20 for ch in value)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and clean


@dataclass(frozen=True)
class LineItem:
    price_id: str
    quantity: int


@dataclass(frozen=True)
class CheckoutRequest:
    mode: str
    line_items: tuple[LineItem, ...]
    success_url: str
    cancel_url: str
    subject: tuple[str, str] | None
    customer_email: str | None
    metadata: dict[str, str]
    idempotency_key: str | None


CHECKOUT_FIELDS = frozenset(
    {"mode", "lineItems", "successUrl", "cancelUrl", "subject", "customerEmail", "metadata", "idempotencyKey"}
)


def checkout(body: Mapping[str, Any]) -> CheckoutRequest:
    read = _Reader(body, CHECKOUT_FIELDS)
    mode = read.choice("mode", MODES, required=True)
    items = _line_items(read)
    success_url = read.url("successUrl", "Success URL", required=True)
    cancel_url = read.url("cancelUrl", "Cancel URL", required=True)
    subject = read.subject(required=False)
    email = read.text("customerEmail", 320, nullable=True)
    if email is not None and not _EMAIL.match(email):
        read.problem("customerEmail", "Invalid email")
    metadata = read.metadata()
    idempotency_key = read.text("idempotencyKey", 200)
    if mode == "subscription" and "subject" not in body:
        read.problem("subject", "Subscription checkout requires a billing subject")
    read.done()
    assert mode is not None and items is not None and success_url is not None and cancel_url is not None
    return CheckoutRequest(
        mode, items, success_url, cancel_url, subject, email, metadata or {}, idempotency_key
    )


def _line_items(read: _Reader) -> tuple[LineItem, ...] | None:
    if "lineItems" not in read.body:
        read.problem("lineItems", "Required")
        return None
    value = read.body["lineItems"]
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_LINE_ITEMS:
        read.problem("lineItems", f"a list of 1 to {MAX_LINE_ITEMS} items")
        return None
    items: list[LineItem] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            read.problem(f"lineItems.{index}", "an object {priceId, quantity}")
            continue
        inner = _Reader(item, frozenset({"priceId", "quantity"}), f"lineItems.{index}.")
        price_id = inner.text("priceId", 255, required=True)
        quantity = inner.integer("quantity", 1, MAX_QUANTITY)
        read.problems += inner.problems
        if price_id is not None:
            items.append(LineItem(price_id, 1 if quantity is None else quantity))
    return tuple(items)


@dataclass(frozen=True)
class PortalRequest:
    subject: tuple[str, str]
    return_url: str | None
    configuration: str | None


def portal(body: Mapping[str, Any]) -> PortalRequest:
    read = _Reader(body, frozenset({"subject", "returnUrl", "configuration"}))
    subject = read.subject(required=True)
    return_url = read.url("returnUrl", "Return URL")
    configuration = read.text("configuration", 255)
    read.done()
    assert subject is not None
    return PortalRequest(subject, return_url, configuration)


@dataclass(frozen=True)
class KeyConfig:
    secret_key: str
    webhook_secret: str | None


def config(environment: Environment, body: Mapping[str, Any]) -> KeyConfig:
    """`{secretKey, webhookSecret?}`. The webhook secret is Kilnbase's addition: the signing secret of an
    endpoint made outside Kilnbase (`stripe listen`, the dashboard) when Kilnbase cannot make its own."""
    read = _Reader(body, frozenset({"secretKey", "webhookSecret"}))
    key = read.text("secretKey", 255, required=True)
    webhook_secret = read.text("webhookSecret", 255)
    read.done()
    assert key is not None
    if not key.startswith(key_prefix(environment)):
        raise ApiError(
            400,
            "PAYMENT_CONFIG_INVALID",
            f"{secret_key_name(environment)} must start with {key_prefix(environment)}",
            "Copy the secret key of this environment from the Stripe dashboard (Developers, API keys).",
        )
    if webhook_secret is not None and not webhook_secret.startswith("whsec_"):
        raise ApiError(
            400,
            "PAYMENT_CONFIG_INVALID",
            f"{webhook_secret_name(environment)} must start with whsec_",
            "Copy the signing secret of the webhook endpoint (it starts with whsec_).",
        )
    return KeyConfig(key, webhook_secret)


PRODUCT_FIELDS = frozenset({"name", "description", "active", "metadata", "idempotencyKey"})


def product(body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """Stripe's parameters of a product create or update (`idempotencyKey` apart, under that name)."""
    read = _Reader(body, PRODUCT_FIELDS if creating else PRODUCT_FIELDS - {"idempotencyKey"})
    params: dict[str, Any] = {
        "name": read.text("name", 250, required=creating),
        "active": read.boolean("active"),
        "metadata": read.metadata(),
    }
    if "description" in body:
        description = read.text("description", 5000, nullable=True)
        # (Stripe clears a description sent empty)
        params["description"] = description if description is not None or creating else ""
    key = read.text("idempotencyKey", 200)
    if not creating and not body:
        read.problems.append("At least one product field is required")
    read.done()
    given = {name: value for name, value in params.items() if value is not None}
    if key is not None:
        given["idempotencyKey"] = key
    return given


PRICE_FIELDS = frozenset(
    {
        "productId",
        "currency",
        "unitAmount",
        "lookupKey",
        "active",
        "recurring",
        "taxBehavior",
        "metadata",
        "idempotencyKey",
    }
)
PRICE_UPDATE_FIELDS = frozenset({"active", "lookupKey", "taxBehavior", "metadata"})


def price(body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    read = _Reader(body, PRICE_FIELDS if creating else PRICE_UPDATE_FIELDS)
    params: dict[str, Any] = {
        "active": read.boolean("active"),
        "tax_behavior": read.choice("taxBehavior", TAX_BEHAVIORS),
        "metadata": read.metadata(),
    }
    if "lookupKey" in body:
        lookup = read.text("lookupKey", 200, nullable=True)
        params["lookup_key"] = lookup if lookup is not None or creating else ""
    if creating:
        params["product"] = read.text("productId", 255, required=True)
        currency = read.text("currency", 3, required=True)
        if currency is not None and not re.fullmatch(r"[A-Za-z]{3}", currency):
            read.problem("currency", "Currency must be a three-letter ISO currency code")
        params["currency"] = currency.lower() if currency else None
        params["unit_amount"] = read.integer("unitAmount", 0, 99_999_999_999, required=True)
        params["recurring"] = _recurring(read)
        key = read.text("idempotencyKey", 200)
        if key is not None:
            params["idempotencyKey"] = key
    elif not body:
        read.problems.append("At least one price field is required")
    read.done()
    return {name: value for name, value in params.items() if value is not None}


def _recurring(read: _Reader) -> dict[str, Any] | None:
    if "recurring" not in read.body:
        return None
    value = read.body["recurring"]
    if not isinstance(value, dict):
        read.problem("recurring", "an object {interval, intervalCount}")
        return None
    inner = _Reader(value, frozenset({"interval", "intervalCount"}), "recurring.")
    interval = inner.choice("interval", INTERVALS, required=True)
    count = inner.integer("intervalCount", 1, 365)
    read.problems += inner.problems
    return {"interval": interval, "interval_count": count}


@dataclass(frozen=True)
class ListQuery:
    limit: int
    subject: tuple[str, str] | None


def list_query(params: Mapping[str, str]) -> ListQuery:
    """`?limit=&subjectType=&subjectId=` of the transactions and subscriptions lists."""
    read = _Reader(params, frozenset({"limit", "subjectType", "subjectId"}))
    limit = read_limit(read, params)
    subject_type = read.text("subjectType", 100)
    subject_id = read.text("subjectId", 255)
    if ("subjectType" in params) != ("subjectId" in params):
        read.problems.append("subjectType and subjectId must be provided together")
    read.done()
    subject = (subject_type, subject_id) if subject_type is not None and subject_id is not None else None
    return ListQuery(limit, subject)


def read_limit(read: _Reader, params: Mapping[str, str]) -> int:
    """A list's `?limit=`: 1 to `MAX_LIST` rows, `DEFAULT_LIST` when not given (InsForge's zod bounds)."""
    raw = params.get("limit")
    if raw is None:
        return DEFAULT_LIST
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST:
        read.problem("limit", f"an integer from 1 to {MAX_LIST}")
        return DEFAULT_LIST
    return int(raw)


def customer_list_query(params: Mapping[str, str]) -> int:
    """`?limit=` of the customers lists, the only parameter InsForge takes there (others are refused)."""
    read = _Reader(params, frozenset({"limit"}))
    limit = read_limit(read, params)
    read.done()
    return limit


def price_list_query(params: Mapping[str, str]) -> str | None:
    read = _Reader(params, frozenset({"productId"}))
    product_id = read.text("productId", 255)
    read.done()
    return product_id
