"""A scripted Stripe-compatible API on loopback: the endpoints the payments service calls, answered as Stripe
answers them (form-encoded requests, JSON objects, `{error: {type, message}}` failures, list pages with
`has_more`), with a catalog, customers, webhook endpoints and sessions kept in memory. Every request is
recorded (`calls`), so a test asserts what Kilnbase sent to Stripe.

A key that starts with `sk_test_bad` or `sk_live_bad` is refused as Stripe refuses an invalid key (401);
`fail_next(path, status, error)` makes the next call of a path fail; `garble_next(path, status, body)` makes
it answer a body that is not JSON (or, with `body` None, hang up without answering);
`refuse_webhook_endpoints` makes Stripe refuse to create an endpoint (as it refuses a URL it cannot reach).
`sign(secret, payload)` makes a `Stripe-Signature` header as Stripe does.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.support.loopback_http import LoopbackHttp


@dataclass
class Call:
    method: str
    path: str
    form: dict[str, str]
    headers: dict[str, str]


def sign(secret: str, payload: bytes, timestamp: int | None = None) -> str:
    """`t=<unix time>,v1=<hex HMAC-SHA256 of "t.payload">`, as Stripe signs a webhook request."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def event(kind: str, item: dict[str, Any], event_id: str, livemode: bool = False) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": kind,
        "livemode": livemode,
        "created": int(time.time()),
        "data": {"object": item},
    }


@dataclass
class FakeStripe:
    calls: list[Call] = field(default_factory=list)
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The customers `GET /v1/customers` lists (a test puts them here, as Stripe's own objects).
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions_by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, tuple[int, dict[str, Any] | bytes | None]] = field(default_factory=dict)
    refuse_webhook_endpoints: bool = False
    #: The account each key belongs to (a key not listed: `acct_default`).
    accounts: dict[str, str] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _http: LoopbackHttp | None = None

    @property
    def url(self) -> str:
        assert self._http is not None
        return self._http.origin

    def start(self) -> FakeStripe:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                parts = urlsplit(self.path)
                pairs = parse_qsl(
                    parts.query if self.command in ("GET", "DELETE") else raw, keep_blank_values=True
                )
                call = Call(
                    self.command, parts.path, dict(pairs), {k.lower(): v for k, v in self.headers.items()}
                )
                status, body = fake.handle(call)
                if body is None:
                    self.close_connection = True
                    return
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

        self._http = LoopbackHttp(Handler).__enter__()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.__exit__(None, None, None)

    def fail_next(self, path: str, status: int, error: dict[str, Any]) -> None:
        self.failures[path] = (status, {"error": error})

    def garble_next(self, path: str, status: int, body: bytes | None) -> None:
        self.failures[path] = (status, body)

    def calls_to(self, method: str, path: str) -> list[Call]:
        return [call for call in self.calls if call.method == method and call.path == path]

    def add_price(self, price_id: str, product_id: str, amount: int, recurring: str | None = None) -> None:
        """A price (and its product) already in the Stripe account."""
        self.products.setdefault(
            product_id,
            {"id": product_id, "object": "product", "name": product_id, "active": True, "metadata": {}},
        )
        self.prices[price_id] = self._price(price_id, product_id, amount, "usd", recurring, True)

    @staticmethod
    def _price(
        price_id: str, product_id: str, amount: int, currency: str, recurring: str | None, active: bool
    ) -> dict[str, Any]:
        return {
            "id": price_id,
            "object": "price",
            "product": product_id,
            "active": active,
            "currency": currency,
            "unit_amount": amount,
            "unit_amount_decimal": str(amount),
            "type": "recurring" if recurring else "one_time",
            "lookup_key": None,
            "billing_scheme": "per_unit",
            "tax_behavior": "unspecified",
            "recurring": {"interval": recurring, "interval_count": 1} if recurring else None,
            "metadata": {},
        }

    def handle(self, call: Call) -> tuple[int, dict[str, Any] | bytes | None]:
        with self._lock:
            self.calls.append(call)
            key = call.headers.get("authorization", "").removeprefix("Bearer ")
            if key.startswith(("sk_test_bad", "sk_live_bad")):
                masked = key[:8] + "*" * 8 + key[-4:]
                message = f"Invalid API Key provided: {masked}"
                return 401, {"error": {"type": "invalid_request_error", "message": message}}
            if call.path in self.failures:
                return self.failures.pop(call.path)
            return self._route(call, key)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    def _route(self, call: Call, key: str) -> tuple[int, dict[str, Any]]:
        method, path, form = call.method, call.path, call.form
        segments = path.strip("/").split("/")
        if path == "/v1/account":
            return 200, {
                "id": self.accounts.get(key, "acct_default"),
                "object": "account",
                "email": "owner@example.com",
            }
        if path == "/v1/products" and method == "GET":
            return 200, _page(list(self.products.values()), form)
        if path == "/v1/products" and method == "POST":
            product_id = self._new_id("prod")
            created: dict[str, Any] = {
                "id": product_id,
                "object": "product",
                "name": form["name"],
                "description": form.get("description"),
                "active": form.get("active", "true") == "true",
                "default_price": None,
                "metadata": _nested(form, "metadata"),
            }
            self.products[product_id] = created
            return 200, created
        if segments[:2] == ["v1", "products"] and len(segments) == 3:
            product = self.products.get(segments[2])
            if product is None:
                return _missing("product", segments[2])
            if method == "DELETE":
                del self.products[segments[2]]
                return 200, {"id": segments[2], "object": "product", "deleted": True}
            for name in ("name", "description"):
                if name in form:
                    product[name] = form[name]
            if "active" in form:
                product["active"] = form["active"] == "true"
            return 200, product
        if path == "/v1/customers" and method == "GET":
            return 200, _page(list(self.customers.values()), form)
        if path == "/v1/prices" and method == "GET":
            wanted = form.get("active")
            listed = [p for p in self.prices.values() if wanted is None or str(p["active"]).lower() == wanted]
            return 200, _page(listed, form)
        if path == "/v1/prices" and method == "POST":
            if form["product"] not in self.products:
                return _missing("product", form["product"])
            price = self._price(
                self._new_id("price"),
                form["product"],
                int(form["unit_amount"]),
                form["currency"],
                form.get("recurring[interval]"),
                form.get("active", "true") == "true",
            )
            self.prices[price["id"]] = price
            return 200, price
        if segments[:2] == ["v1", "prices"] and len(segments) == 3:
            found = self.prices.get(segments[2])
            if found is None:
                return _missing("price", segments[2])
            if "active" in form:
                found["active"] = form["active"] == "true"
            return 200, found
        if path == "/v1/webhook_endpoints" and method == "GET":
            return 200, _page(list(self.endpoints.values()), form)
        if path == "/v1/webhook_endpoints" and method == "POST":
            if self.refuse_webhook_endpoints:
                message = "Invalid URL: URL must be publicly accessible."
                return 400, {"error": {"type": "invalid_request_error", "message": message}}
            endpoint_id = self._new_id("we")
            self.endpoints[endpoint_id] = {
                "id": endpoint_id,
                "object": "webhook_endpoint",
                "url": form["url"],
                "metadata": _nested(form, "metadata"),
            }
            return 200, {**self.endpoints[endpoint_id], "secret": f"whsec_{endpoint_id}_secret"}
        if segments[:2] == ["v1", "webhook_endpoints"] and method == "DELETE":
            self.endpoints.pop(segments[2], None)
            return 200, {"id": segments[2], "object": "webhook_endpoint", "deleted": True}
        if path == "/v1/checkout/sessions" and method == "POST":
            return self._checkout(call)
        if path == "/v1/billing_portal/sessions" and method == "POST":
            session_id = self._new_id("bps")
            return 200, {
                "id": session_id,
                "object": "billing_portal.session",
                "customer": form["customer"],
                "url": f"https://billing.stripe.com/p/session/{session_id}",
                "return_url": form.get("return_url"),
            }
        return 404, {
            "error": {
                "type": "invalid_request_error",
                "message": f"Unrecognized request URL ({method}: {path})",
            }
        }

    def _checkout(self, call: Call) -> tuple[int, dict[str, Any]]:
        form = call.form
        idempotency = call.headers.get("idempotency-key")
        if idempotency and idempotency in self.sessions_by_key:
            return 200, self.sessions_by_key[idempotency]
        for index in itertools.count():
            price = form.get(f"line_items[{index}][price]")
            if price is None:
                break
            if price not in self.prices:
                return _missing("price", price)
        session_id = self._new_id("cs_test")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": form["mode"],
            "status": "open",
            "payment_status": "unpaid",
            "customer": form.get("customer"),
            "customer_email": form.get("customer_email"),
            "payment_intent": None,
            "subscription": None,
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
            "metadata": _nested(form, "metadata"),
        }
        if idempotency:
            self.sessions_by_key[idempotency] = session
        return 200, session


def _nested(form: dict[str, str], name: str) -> dict[str, str]:
    prefix = f"{name}["
    return {k[len(prefix) : -1]: v for k, v in form.items() if k.startswith(prefix) and k.count("[") == 1}


def _page(items: list[dict[str, Any]], form: dict[str, str]) -> dict[str, Any]:
    """One page, as Stripe pages: `limit` objects after `starting_after`, and whether more follow."""
    limit = int(form.get("limit", "10"))
    after = form.get("starting_after")
    ids = [item["id"] for item in items]
    start = ids.index(after) + 1 if after in ids else 0
    page = items[start : start + limit]
    return {"object": "list", "data": page, "has_more": start + limit < len(items), "url": "/v1/list"}


def _missing(kind: str, item_id: str) -> tuple[int, dict[str, Any]]:
    message = f"No such {kind}: '{item_id}'"
    return 404 if kind != "price" else 400, {"error": {"type": "invalid_request_error", "message": message}}
