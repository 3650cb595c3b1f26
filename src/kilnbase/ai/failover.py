"""One call to the providers: each candidate model in turn, each with retries, guarded by circuit breakers.

Retries back off exponentially with jitter and honour `Retry-After` (a wait past the cap is not waited for);
they only ever happen before the first byte reaches the caller, so a retry can land on another model. A
provider that cannot be reached opens its own breaker; a model that keeps failing opens the breaker of that
model at that provider only. A provider's refusal is reported as the gateway's own error (its 401 is the
gateway's credential problem, never the caller's).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from kilnbase.ai.errors import GatewayError
from kilnbase.ai.provider_routing import ProviderRouting, Target
from kilnbase.ai.providers import Provider, UpstreamError
from kilnbase.ai.reliability import CircuitBreaker, backoff_delay
from kilnbase.config import Settings

if TYPE_CHECKING:
    from kilnbase.ai.lifecycle import Call

T = TypeVar("T")

#: One exchange with a provider: (provider, request body, key) -> its answer.
ProviderCall = Callable[[Provider, dict[str, Any], str | None], Awaitable[T]]


def refused_by_provider(exc: UpstreamError, model: str, source: str | None) -> GatewayError:
    """A provider's 4xx (not worth retrying) as the gateway reports it."""
    if exc.status == 401:
        return GatewayError(
            502,
            f"The provider rejected the gateway's credential ({source or 'none'} key); "
            "check Gateway Credentials.",
            type_="api_error",
            code="upstream_auth_failed",
            headers={"x-should-retry": "false"},
        )
    if exc.status == 402:
        return GatewayError(
            402,
            f"The provider refused for lack of credits: {exc.message}",
            type_="insufficient_quota",
            code="upstream_insufficient_credits",
        )
    if exc.status == 403:
        return GatewayError(
            403,
            f"The provider refused the request: {exc.message}",
            type_="permission_error",
            code="upstream_refused",
        )
    if exc.status == 404:
        return GatewayError(400, f"Unknown model: {model}.", code="model_not_found", param="model")
    return GatewayError(400, f"The provider rejected the request: {exc.message}", code="upstream_rejected")


def failed_at_provider(exc: UpstreamError, model: str) -> GatewayError:
    """A provider's failure that outlasted the retries (429, 5xx, timeouts, unreachable)."""
    if exc.status == 429:
        headers = {"x-should-retry": "false"}
        if exc.retry_after is not None:
            headers["retry-after"] = str(max(1, round(exc.retry_after)))
        return GatewayError(
            429,
            f"The provider is rate limiting {model}: {exc.message}",
            type_="rate_limit_error",
            code="upstream_rate_limited",
            headers=headers,
        )
    return GatewayError(
        502,
        f"Upstream error from the provider of {model}: {exc.message}",
        type_="api_error",
        code="upstream_error",
        headers={"x-should-retry": "false"},
    )


def _circuit_open(model: str) -> GatewayError:
    return GatewayError(
        503,
        f"The provider of {model} is unavailable (circuit open).",
        type_="service_unavailable_error",
        code="provider_unavailable",
        headers={"x-should-retry": "false"},
    )


class Failover:
    def __init__(self, routing: ProviderRouting, breaker: CircuitBreaker, settings: Settings) -> None:
        self._routing = routing
        self._breaker = breaker
        self._retries = settings.ai_max_retries
        self._base_delay = settings.ai_retry_base_delay
        self._max_delay = settings.ai_retry_max_delay

    async def run(self, call: Call, exchange: ProviderCall[T]) -> tuple[T, str, Target]:
        """The first answer among the call's candidates: (answer, model that served, its target)."""
        last: GatewayError | None = None
        breaker = self._breaker
        for model in call.candidates:
            target = await self._routing.target(call.snapshot, model)
            name = target.provider.name
            deployment = f"{name}:{model}"
            body = {**call.body, "model": target.model}
            for attempt in range(self._retries + 1):
                if not (breaker.allow(name) and breaker.allow(deployment)):
                    last = _circuit_open(model)
                    break
                try:
                    sent_at = time.perf_counter()
                    try:
                        result = await exchange(target.provider, body, target.key)
                    finally:
                        call.upstream_seconds += time.perf_counter() - sent_at
                except UpstreamError as exc:
                    if not exc.retryable:
                        raise refused_by_provider(exc, model, target.key_source) from None
                    if exc.status == 0:
                        breaker.failure(name)
                    elif exc.status != 429:
                        breaker.failure(deployment)
                    last = failed_at_provider(exc, model)
                    delay = backoff_delay(attempt, self._base_delay, self._max_delay, exc.retry_after)
                    if attempt >= self._retries or delay is None:
                        break
                    await asyncio.sleep(delay)
                    continue
                breaker.success(name)
                breaker.success(deployment)
                call.record.provider = name
                call.record.key_source = target.key_source
                return result, model, target
        assert last is not None
        if len(call.candidates) > 1:
            raise GatewayError(
                503,
                f"Every model failed ({', '.join(call.candidates)}): {last.message}",
                type_="service_unavailable_error",
                code="all_fallbacks_failed",
                headers={"x-should-retry": "false"},
            )
        raise last
