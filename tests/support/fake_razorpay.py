"""A scripted Razorpay-compatible API on loopback: the endpoints the Razorpay service calls, answered as
Razorpay answers them (JSON bodies, HTTP basic auth, `{entity: "collection", count, items}` pages walked with
`count`/`skip`, `{error: {code, description}}` failures), with items, plans, orders and subscriptions kept in
memory. Every request is recorded (`calls`), so a test asserts what Kilnbase sent to Razorpay.

A key secret that starts with `bad` is refused as Razorpay refuses a wrong key (401);
`fail_next(path, status, description)` makes the next call of a path fail; `garble_next(path, status, body)`
makes it answer a body that is not JSON (or, with `body` None, hang up without answering).
`sign(secret, text)` makes a signature as Razorpay does: hex HMAC-SHA256.
"""

from __future__ import annotations

import base64
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
    query: dict[str, str]
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def key_id(self) -> str:
        encoded = self.headers.get("authorization", "").removeprefix("Basic ")
        return base64.b64decode(encoded).decode().split(":", 1)[0] if encoded else ""


def sign(secret: str, text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def subscription_entity(subscription_id: str, plan_id: str, status: str, **extra: Any) -> dict[str, Any]:
    """A subscription as Razorpay describes one."""
    now = int(time.time())
    return {
        "id": subscription_id,
        "entity": "subscription",
        "plan_id": plan_id,
        "customer_id": None,
        "status": status,
        "current_start": None,
        "current_end": None,
        "ended_at": None,
        "quantity": 1,
        "notes": {},
        "charge_at": now + 3600,
        "start_at": now,
        "end_at": now + 86_400 * 365,
        "auth_attempts": 0,
        "total_count": 12,
        "paid_count": 0,
        "customer_notify": True,
        "created_at": now,
        "expire_by": None,
        "short_url": f"https://rzp.io/i/{subscription_id[-6:]}",
        "has_scheduled_changes": False,
        "change_scheduled_at": None,
        "offer_id": None,
        "remaining_count": 12,
        **extra,
    }


@dataclass
class FakeRazorpay:
    calls: list[Call] = field(default_factory=list)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, tuple[int, dict[str, Any] | bytes | None]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _http: LoopbackHttp | None = None

    @property
    def url(self) -> str:
        assert self._http is not None
        return self._http.origin

    def start(self) -> FakeRazorpay:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                body = json.loads(raw) if raw else {}
                call = Call(
                    self.command,
                    parts.path,
                    dict(parse_qsl(parts.query)),
                    body if isinstance(body, dict) else {},
                    {k.lower(): v for k, v in self.headers.items()},
                )
                status, answer = fake.handle(call)
                if answer is None:
                    self.close_connection = True
                    return
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _answer

        self._http = LoopbackHttp(Handler).__enter__()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.__exit__(None, None, None)

    def fail_next(self, path: str, status: int, description: str) -> None:
        self.failures[path] = (status, {"error": {"code": "BAD_REQUEST_ERROR", "description": description}})

    def garble_next(self, path: str, status: int, body: bytes | None) -> None:
        self.failures[path] = (status, body)

    def calls_to(self, method: str, path: str) -> list[Call]:
        return [call for call in self.calls if call.method == method and call.path == path]

    def add_subscription(self, entity: dict[str, Any]) -> None:
        self.subscriptions[entity["id"]] = entity

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):014d}"

    def handle(self, call: Call) -> tuple[int, dict[str, Any] | bytes | None]:
        with self._lock:
            self.calls.append(call)
            encoded = call.headers.get("authorization", "").removeprefix("Basic ")
            secret = base64.b64decode(encoded).decode().partition(":")[2] if encoded else ""
            if not secret or secret.startswith("bad"):
                return 401, {"error": {"code": "BAD_REQUEST_ERROR", "description": "Authentication failed"}}
            if call.path in self.failures:
                return self.failures.pop(call.path)
            return self._route(call)

    def _route(self, call: Call) -> tuple[int, dict[str, Any]]:
        parts = call.path.strip("/").split("/")[1:]
        collections = {"items": self.items, "plans": self.plans, "orders": self.orders}
        collections.update(subscriptions=self.subscriptions, customers=self.customers, payments=self.payments)
        if call.method == "GET" and len(parts) == 1 and parts[0] in collections:
            return 200, _page(list(collections[parts[0]].values()), call.query)
        now = int(time.time())
        body = call.body
        if call.method == "POST" and parts == ["items"]:
            item = {
                "id": self._new_id("item"),
                "active": True,
                "name": body["name"],
                "description": body.get("description"),
                "amount": body["amount"],
                "unit_amount": body["amount"],
                "currency": body["currency"],
                "type": "invoice",
                "created_at": now,
            }
            self.items[item["id"]] = item
            return 200, item
        if call.method == "PATCH" and len(parts) == 2 and parts[0] == "items":
            found = self.items.get(parts[1])
            if found is None:
                return 400, {
                    "error": {"code": "BAD_REQUEST_ERROR", "description": "The id provided does not exist"}
                }
            found.update(body)
            found["unit_amount"] = found["amount"]
            return 200, found
        if call.method == "POST" and parts == ["plans"]:
            item = {
                "id": self._new_id("item"),
                "active": True,
                **body["item"],
                "unit_amount": body["item"]["amount"],
                "type": "plan",
            }
            plan = {
                "id": self._new_id("plan"),
                "entity": "plan",
                "interval": body["interval"],
                "period": body["period"],
                "item": item,
                "notes": body.get("notes") or {},
                "created_at": now,
            }
            self.plans[plan["id"]] = plan
            return 200, plan
        if call.method == "POST" and parts == ["orders"]:
            order = {
                "id": self._new_id("order"),
                "entity": "order",
                "amount": body["amount"],
                "amount_paid": 0,
                "amount_due": body["amount"],
                "currency": body["currency"],
                "receipt": body.get("receipt"),
                "status": "created",
                "attempts": 0,
                "notes": body.get("notes") or {},
                "created_at": now,
            }
            self.orders[order["id"]] = order
            return 200, order
        if call.method == "POST" and parts == ["subscriptions"]:
            if body.get("plan_id") not in self.plans:
                return 400, {
                    "error": {"code": "BAD_REQUEST_ERROR", "description": "The id provided does not exist"}
                }
            entity = subscription_entity(
                self._new_id("sub"),
                body["plan_id"],
                "created",
                notes=body.get("notes") or {},
                total_count=body.get("total_count"),
                quantity=body.get("quantity", 1),
            )
            self.subscriptions[entity["id"]] = entity
            return 200, entity
        if call.method == "POST" and len(parts) == 3 and parts[0] == "subscriptions":
            found = self.subscriptions.get(parts[1])
            if found is None:
                return 400, {
                    "error": {"code": "BAD_REQUEST_ERROR", "description": "The id provided does not exist"}
                }
            if parts[2] == "cancel" and body.get("cancel_at_cycle_end"):
                found["has_scheduled_changes"] = True
            else:
                found["status"] = {"cancel": "cancelled", "pause": "paused", "resume": "active"}[parts[2]]
            return 200, found
        return 404, {"error": {"code": "BAD_REQUEST_ERROR", "description": "The requested URL was not found"}}


def _page(items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    count, skip = int(query.get("count", "10")), int(query.get("skip", "0"))
    chosen = items[skip : skip + count]
    return {"entity": "collection", "count": len(chosen), "items": chosen}
