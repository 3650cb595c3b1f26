"""Razorpay's HTTP API as the Razorpay service calls it: JSON requests with HTTP basic auth
(`key_id:key_secret`), JSON answers, list pages of `{count, items}` walked with `count`/`skip`, and
Razorpay's failures (`{error: {code, description}}`) turned into InsForge's errors
(`razorpay-errors.ts`'s mapping, the one every provider shares in `provider_http.py`).

Our own client rather than the `razorpay` package: a dozen calls, each a GET or a JSON POST/PATCH, and a
stand-in on loopback (`KILNBASE_RAZORPAY_API_BASE`) must receive exactly what Razorpay would.

The signature checks are Razorpay's documented schemes, compared in constant time: a webhook's
`X-Razorpay-Signature` is hex HMAC-SHA256 of the raw body with the webhook secret; Checkout's
`razorpay_signature` is hex HMAC-SHA256 with the key secret of `order_id|payment_id` (an order) or of
`payment_id|subscription_id` (a subscription's authorization).

The key secret is only ever in the Authorization header; no message made here repeats it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

import orjson

from kilnbase.payments.provider_http import ProviderHttp

FIX_KEYS = "Set valid keys for this environment with PUT /api/payments/razorpay/:environment/config."
#: Razorpay's largest page, and the most pages one listing reads.
PAGE = 100
MAX_PAGES = 50
_HEX_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")


_HTTP = ProviderHttp(
    "Razorpay", error_text="description", fix_keys=FIX_KEYS, base_setting="KILNBASE_RAZORPAY_API_BASE"
)


class RazorpayApi:
    """Calls with one key pair; `key_id` is also what Razorpay Checkout is given in the browser."""

    def __init__(self, base_url: str, key_id: str, key_secret: str, timeout_seconds: float) -> None:
        self._base = base_url.rstrip("/")
        self.key_id = key_id
        self._secret = key_secret
        self._timeout = timeout_seconds

    async def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return await _HTTP.send(
            method,
            self._base + path,
            timeout_seconds=self._timeout,
            params=dict(query) if query else None,
            content=None if body is None else orjson.dumps(body),
            headers={"Accept": "application/json", "Content-Type": "application/json"},
            auth=(self.key_id, self._secret),
        )

    async def list_all(self, path: str) -> list[dict[str, Any]]:
        """Every entity (with an id) of a list endpoint: Razorpay gives no total, so pages are read until a
        short one."""
        found: list[dict[str, Any]] = []
        for page in range(MAX_PAGES):
            answer = await self.request("GET", path, query={"count": PAGE, "skip": page * PAGE})
            listed = answer.get("items")
            items: list[Any] = listed if isinstance(listed, list) else []
            # (An entity without an id names nothing Kilnbase could keep.)
            found += [item for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]
            if len(items) < PAGE:
                break
        return found


def _matches(secret: str, message: bytes, signature: str) -> bool:
    if not _HEX_SIGNATURE.fullmatch(signature):
        return False
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.lower().encode())


def webhook_signature_matches(payload: bytes, signature: str, webhook_secret: str) -> bool:
    return _matches(webhook_secret, payload, signature)


def order_signature_matches(key_secret: str, order_id: str, payment_id: str, signature: str) -> bool:
    return _matches(key_secret, f"{order_id}|{payment_id}".encode(), signature)


def subscription_signature_matches(
    key_secret: str, subscription_id: str, payment_id: str, signature: str
) -> bool:
    return _matches(key_secret, f"{payment_id}|{subscription_id}".encode(), signature)
