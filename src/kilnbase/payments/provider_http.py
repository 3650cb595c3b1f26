"""One HTTP exchange with a payment provider's API, as every provider's client makes it: no proxy from the
environment and no redirects (the key goes only to the configured base), an answer that is a JSON object,
and the provider's failures turned into InsForge's errors (its `stripe-errors.ts` and `razorpay-errors.ts`
map them alike: 429 RATE_LIMITED; a refused key PAYMENT_CONFIG_INVALID, 400 here since the caller's own
credential is fine; any other 4xx the provider's status and message as UPSTREAM_FAILURE; 502 for the rest).

What differs between providers, how a request is encoded and authenticated and where an error's text sits,
stays in the provider's client (`stripe_api.py`, `razorpay_api.py`); a key is only ever in a header or the
basic auth, and no message made here repeats it.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from kilnbase.http.errors import ApiError


class ProviderHttp:
    """The exchange with one provider, named in its messages (`name`), whose refusals carry their text in
    `{error: {<error_text>}}`; `fix_keys` tells the admin what to do about a refused key. A provider that
    cannot be reached (or answers something that is not JSON) sends the admin to its status page and to
    `base_setting`, the setting that points Kilnbase at it (named in full, so the check that every
    setting the code names is real sees it)."""

    def __init__(self, name: str, *, error_text: str, fix_keys: str, base_setting: str) -> None:
        self.name = name
        self._error_text = error_text
        self._fix_keys = fix_keys
        self._unreachable = (
            f"Try again in a moment; if it persists, check {name}'s status page and {base_setting}."
        )

    def message(self, body: Any) -> str:
        """The text of the provider's refusal (its first thousand characters)."""
        return str(error_of(body).get(self._error_text) or f"{self.name} request failed")[:1000]

    def refusal(self, status: int, body: Any) -> ApiError:
        """InsForge's error for the provider's `status` and answer."""
        message = self.message(body)
        if status == 429:
            return ApiError(429, "RATE_LIMITED", message, "Wait a moment and try again.")
        if status in (401, 403):
            return ApiError(400, "PAYMENT_CONFIG_INVALID", message, self._fix_keys)
        if 400 <= status < 500:
            return ApiError(
                status,
                "UPSTREAM_FAILURE",
                message,
                f"Check the ids and values sent against the {self.name} dashboard.",
            )
        return ApiError(502, "UPSTREAM_FAILURE", message, self._unreachable)

    async def send(self, method: str, url: str, *, timeout_seconds: float, **request: Any) -> dict[str, Any]:
        """The provider's JSON object for one request (`request`: httpx's arguments), or its error."""
        try:
            async with httpx.AsyncClient(
                timeout=timeout_seconds, follow_redirects=False, trust_env=False
            ) as client:
                response = await client.request(method, url, **request)
        except httpx.HTTPError as exc:
            raise ApiError(
                502,
                "UPSTREAM_FAILURE",
                f"{self.name} could not be reached ({type(exc).__name__}).",
                self._unreachable,
            ) from None
        answer: Any
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            answer = None
        if response.status_code >= 400:
            raise self.refusal(response.status_code, answer)
        if not isinstance(answer, dict):
            raise ApiError(
                502,
                "UPSTREAM_FAILURE",
                f"{self.name} answered something that is not JSON.",
                self._unreachable,
            )
        return answer


def error_of(body: Any) -> dict[str, Any]:
    """The `error` object of a provider's refusal (empty when it sent none)."""
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}
