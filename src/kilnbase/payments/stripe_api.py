"""Stripe's HTTP API as the payments service calls it: form-encoded requests with the secret key as a bearer
token, JSON answers, and Stripe's failures turned into InsForge's errors (`stripe-errors.ts`'s mapping, the
one every provider shares in `provider_http.py`, and a declined card's 402).

Our own client rather than the `stripe` package: the service makes a dozen calls, each a POST of a form or a
GET, and a stand-in on loopback (`KILNBASE_STRIPE_API_BASE`) must receive exactly what Stripe would. The
webhook signature check (`verify_signature`) is Stripe's documented scheme: HMAC-SHA256 of `t.payload` with
the endpoint's signing secret, hex, in one of the header's `v1` entries, with a tolerance on `t`.

The secret key is only ever in the Authorization header; no message made here repeats it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from kilnbase.http.errors import ApiError
from kilnbase.payments.provider_http import ProviderHttp, error_of

FIX_KEY = "Set a valid key for this environment with PUT /api/payments/stripe/:environment/config."
#: Paging of Stripe's list endpoints (its largest page), and the most pages one listing reads.
PAGE = 100
MAX_PAGES = 50


def form(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Stripe's form encoding: `a[b]=c` for objects, `a[0][b]=c` for lists, booleans as true/false; None
    is left out."""
    pairs: list[tuple[str, str]] = []

    def add(key: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, Mapping):
            for name, inner in value.items():
                add(f"{key}[{name}]", inner)
        elif isinstance(value, Sequence) and not isinstance(value, str):
            for index, inner in enumerate(value):
                add(f"{key}[{index}]", inner)
        elif isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        else:
            pairs.append((key, str(value)))

    for name, value in params.items():
        add(name, value)
    return pairs


class _StripeHttp(ProviderHttp):
    """Stripe's refusals as every provider's, but for a declined card: 402 PAYMENT_METHOD_DECLINED."""

    def refusal(self, status: int, body: Any) -> ApiError:
        if status not in (401, 403, 429) and error_of(body).get("type") == "card_error":
            return ApiError(402, "PAYMENT_METHOD_DECLINED", self.message(body), "Use another payment method.")
        return super().refusal(status, body)


_HTTP = _StripeHttp("Stripe", error_text="message", fix_keys=FIX_KEY, base_setting="KILNBASE_STRIPE_API_BASE")


def header_safe_key(key: str) -> str:
    """An idempotency key as a header can carry it: as it is when it is printable ASCII, else its SHA-256.

    The API takes any text as `idempotencyKey` (InsForge's schema: a string of 1 to 200 characters), and a
    header holds only ASCII: sent as it is, a key like `commande-été` failed the call (a 500). Its digest
    keeps what the key is for: the same text is always the same header, different texts different ones."""
    if key.isascii() and key.isprintable():
        return key
    return "sha256-" + hashlib.sha256(key.encode()).hexdigest()


class StripeApi:
    """Calls with one secret key. `idempotency_key` on a POST makes Stripe answer a retry with the first
    result."""

    def __init__(self, base_url: str, secret_key: str, timeout_seconds: float) -> None:
        self._base = base_url.rstrip("/")
        self._key = secret_key
        self._timeout = timeout_seconds

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._key}", "Accept": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = header_safe_key(idempotency_key)
        encoded = urlencode(form(params or {}))
        url = self._base + path
        if method in ("GET", "DELETE"):
            return await _HTTP.send(
                method, url, timeout_seconds=self._timeout, params=encoded, headers=headers
            )
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return await _HTTP.send(
            method, url, timeout_seconds=self._timeout, content=encoded.encode(), headers=headers
        )

    async def list_all(self, path: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every object of a list endpoint, page by page (at most `MAX_PAGES` pages)."""
        found: list[dict[str, Any]] = []
        after: str | None = None
        for _ in range(MAX_PAGES):
            page = await self.request("GET", path, {**(params or {}), "limit": PAGE, "starting_after": after})
            data = [item for item in page.get("data") or [] if isinstance(item, dict)]
            found += data
            if not page.get("has_more") or not data:
                break
            after = str(data[-1].get("id"))
        return found


class SignatureError(ValueError):
    pass


def verify_signature(
    payload: bytes, header: str, secret: str, tolerance_seconds: int, now: float | None = None
) -> None:
    """Raise `SignatureError` (with Stripe's wording) unless one `v1` signature of `header` is
    HMAC-SHA256(secret, `t.payload`) and `t` is within `tolerance_seconds` of now."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                timestamp = None
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureError("Unable to extract timestamp and signatures from header")
    signed = str(timestamp).encode() + b"." + payload
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    # (As bytes: `compare_digest` raises on a str that is not ASCII, and a header arrives as Latin-1.)
    wanted = expected.encode()
    if not any(hmac.compare_digest(wanted, candidate.encode("utf-8", "replace")) for candidate in signatures):
        raise SignatureError("No signatures found matching the expected signature for payload")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise SignatureError("Timestamp outside the tolerance zone")
