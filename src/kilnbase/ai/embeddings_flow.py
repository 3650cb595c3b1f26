"""Embeddings: the input's estimate reserved, floats asked of the provider, base64 made here when wanted.

Only `model`, `input`, `dimensions` and `user` reach the provider: embeddings have nothing else worth sending.
The provider is always asked for floats, so that one cache entry serves both encodings.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from kilnbase.ai import cache as response_cache
from kilnbase.ai import openai_shapes, requests
from kilnbase.ai.caller import Caller
from kilnbase.ai.errors import GatewayError
from kilnbase.ai.lifecycle import CallLifecycle, Result, estimate_prompt_tokens
from kilnbase.ai.providers import Provider, UpstreamResponse

_UPSTREAM_FIELDS = ("model", "input", "dimensions", "user")


async def _embed(provider: Provider, body: dict[str, Any], key: str | None) -> UpstreamResponse:
    return await provider.embeddings({**body, "encoding_format": "float"}, key)


async def embeddings(
    lifecycle: CallLifecycle,
    cache: response_cache.ResponseCache,
    caller: Caller,
    raw: Any,
    *,
    endpoint: str,
    cache_mode: str | None,
) -> Result:
    started = time.perf_counter()
    body = requests.validate_embeddings(raw)
    encoding = body.pop("encoding_format", None) or "float"
    call = await lifecycle.prepare(caller, body, endpoint, [], started)
    call.body = {k: body[k] for k in _UPSTREAM_FIELDS if body.get(k) is not None}
    key = (
        response_cache.cache_key("embeddings", caller.cache_owner, call.body)
        if response_cache.wanted(call.snapshot.cache_enabled, cache_mode)
        else None
    )
    cached = cache.get(key) if key is not None else None
    headers: dict[str, str] = {}
    if cached is not None:
        await lifecycle.replay(call, cached)
        answer = cached
        headers["x-kilnbase-cache"] = "hit"
    else:
        tokens = estimate_prompt_tokens(body["input"])
        call.estimate = (tokens, 0)
        price = call.price.price
        with lifecycle.accounted(call):
            await lifecycle.reserve(call, tokens, price.cost(tokens, 0) if price else Decimal(0))
            upstream, model, _target = await lifecycle.call(call, _embed)
            shaped = openai_shapes.embeddings(upstream.body, model)
            if shaped is None:
                call.used = upstream.body.get("usage") or {}
                raise GatewayError(
                    502, "The provider sent malformed embeddings.", type_="api_error", code="upstream_error"
                )
        answer = shaped
        call.record.model = answer["model"]
        lifecycle.finish(
            call,
            "ok",
            usage={"prompt_tokens": answer["usage"]["prompt_tokens"]},
            cost=openai_shapes.reported_cost(upstream.body.get("usage")),
            http_status=200,
        )
        if key is not None:
            cache.put(key, answer)
            headers["x-kilnbase-cache"] = "miss"
    if encoding == "base64":
        answer = openai_shapes.embeddings_as_base64(answer)
    return Result(answer, headers, answer["model"])
