"""The gateway called in process by another capability (agent memory embeds and asks a model), as the actor
that called that capability: the same flows as `/v1`, so the policy, the credentials, the limits and the usage
ledger apply, and the ledger names the caller and the endpoint it called (`/api/memory/remember`, say).

What comes back is checked here, not trusted: an embedding must be a list of finite numbers of the asked
size, a completion's text a string. The gateway's errors come out in the API's shape (`ApiError`) with its
codes; a refusal of a request the caller never wrote (the configured model unknown, a field the policy does
not allow) is the server's configuration, not the caller's mistake, so it answers 503, not 400.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

from kilnbase.ai.caller import caller_of_principal
from kilnbase.ai.errors import GatewayError, insforge_code, insforge_next_actions
from kilnbase.ai.gateway import Gateway
from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import Actor

T = TypeVar("T")

#: Statuses of the gateway's refusals that keep their meaning for the capability's caller (who is not
#: allowed, or is over a limit); the provider's failures (5xx) keep theirs too; any other refusal is the
#: server's configuration.
_PASSED_ON = frozenset({401, 402, 403, 429})


class ModelCallFailed(ApiError):
    """The call was made and failed (the provider, or the gateway in front of it): the audit trail records
    the action as failed, not refused."""

    failed = True


def upstream_failed(message: str) -> ApiError:
    """A provider's answer that is unusable (no vector, the wrong size, no text)."""
    return ModelCallFailed(
        502,
        "AI_UPSTREAM_UNAVAILABLE",
        message,
        "Retry shortly; if it persists, check the provider and Gateway Credentials "
        "(GET /api/ai/gateway/config).",
    )


async def _as_api_error(model: str, call: Awaitable[T]) -> T:
    try:
        return await call
    except GatewayError as exc:
        code, advice = insforge_code(exc), insforge_next_actions(exc)
        if exc.status >= 500:
            raise ModelCallFailed(exc.status, code, exc.message, advice) from None
        if exc.status in _PASSED_ON:
            raise ApiError(exc.status, code, exc.message, advice) from None
        raise ModelCallFailed(
            503,
            "AI_INVALID_MODEL",
            f"The model gateway refused the call of {model}: {exc.message}",
            "An admin checks the model settings (KILNBASE_MEMORY_*) against GET /api/ai/models and the "
            "gateway's policy (GET /api/ai/policy).",
        ) from None


class ModelCalls:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def embed(
        self, actor: Actor, endpoint: str, model: str, texts: Sequence[str], dimensions: int
    ) -> list[list[float]]:
        """One vector of `dimensions` floats per text, in order, from one call of the gateway."""
        caller = caller_of_principal(actor.principal, actor.ip)
        raw = {"model": model, "input": list(texts), "dimensions": dimensions}
        result = await _as_api_error(model, self._gateway.embeddings(caller, raw, endpoint=endpoint))
        data = result.body.get("data")
        if not isinstance(data, list) or len(data) != len(texts):
            raise upstream_failed("Embedding provider returned no vector")
        return [_vector(item, dimensions) for item in sorted(data, key=_index)]

    async def complete(
        self, actor: Actor, endpoint: str, model: str, messages: Sequence[Mapping[str, str]]
    ) -> str:
        """The text of one completion (temperature 0), as the model wrote it."""
        caller = caller_of_principal(actor.principal, actor.ip)
        raw = {"model": model, "messages": [dict(m) for m in messages], "temperature": 0}
        result = await _as_api_error(model, self._gateway.chat(caller, raw, endpoint=endpoint))
        content = _first_text(result.body.get("choices"))
        if content is None:
            raise upstream_failed("The model returned no text")
        return content


def _index(item: Any) -> int:
    """Where an embedding goes in the answer's order; a provider's odd `index` counts as 0 (never a 500)."""
    index = item.get("index", 0) if isinstance(item, dict) else 0
    return index if isinstance(index, int) and not isinstance(index, bool) else 0


def _first_text(choices: Any) -> str | None:
    """The first choice's message text, whatever shape the provider gave the rest of its answer."""
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


def _vector(item: Any, dimensions: int) -> list[float]:
    vector = item.get("embedding") if isinstance(item, dict) else None
    if not isinstance(vector, list) or not vector:
        raise upstream_failed("Embedding provider returned no vector")
    if len(vector) != dimensions:
        raise upstream_failed(
            f"The embedding model returned {len(vector)} dimensions where {dimensions} were asked for."
        )
    if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in vector):
        raise upstream_failed("Embedding provider returned a vector that is not all numbers")
    return [float(x) for x in vector]
