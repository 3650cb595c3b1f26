"""Chat completions, answered whole or opened as a stream.

Before anything is reserved the request is validated, its fields checked against the policy's allow-list,
the configuration's system prompt put first, and every token budget capped; the reservation then counts the
prompt's estimate and `n` choices of the completion budget. A non-streaming answer may come from the caller's
own cache entry (when the policy enables the cache), which still counts against the request rate limits.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from kilnbase.ai import cache as response_cache
from kilnbase.ai import openai_shapes, requests
from kilnbase.ai.caller import Caller
from kilnbase.ai.chat_stream import ChatStream
from kilnbase.ai.lifecycle import Call, CallLifecycle, Result, estimate_prompt_tokens
from kilnbase.ai.providers import Provider, UpstreamResponse, UpstreamStream


async def _answer(provider: Provider, body: dict[str, Any], key: str | None) -> UpstreamResponse:
    return await provider.chat(body, key)


async def _open(provider: Provider, body: dict[str, Any], key: str | None) -> UpstreamStream:
    return await provider.open_chat_stream(body, key)


async def _prepare(lifecycle: CallLifecycle, caller: Caller, raw: Any, endpoint: str) -> Call:
    started = time.perf_counter()
    body = requests.validate_chat(raw)
    fallbacks = list(body.pop("models", None) or [])
    call = await lifecycle.prepare(caller, body, endpoint, fallbacks, started)
    requests.check_fields(body, call.snapshot.allowed_request_fields)
    body["messages"] = requests.apply_configuration(body["messages"], call.configuration)
    price = call.price.price
    model_limit = price.max_completion_tokens if price else None
    requested = requests.cap_completion_tokens(
        body, call.snapshot.max_tokens_cap, caller.key_max_tokens, model_limit
    )
    call.record.streamed = bool(body.get("stream"))
    default_limit = lifecycle.settings.ai_default_max_tokens
    completion = requested or min(model_limit or default_limit, default_limit)
    call.estimate = (estimate_prompt_tokens(body["messages"]), completion * int(body.get("n") or 1))
    return call


async def _reserve(lifecycle: CallLifecycle, call: Call) -> None:
    prompt, completion = call.estimate
    price = call.price.price
    usd = price.cost(prompt, completion) if price else Decimal(0)
    await lifecycle.reserve(call, prompt + completion, usd)


async def chat(
    lifecycle: CallLifecycle,
    cache: response_cache.ResponseCache,
    caller: Caller,
    raw: Any,
    *,
    endpoint: str,
    cache_mode: str | None,
) -> Result:
    call = await _prepare(lifecycle, caller, raw, endpoint)
    body = call.body
    body.pop("stream", None)
    body.pop("stream_options", None)
    key = (
        response_cache.cache_key("chat", caller.cache_owner, {**body, "models": call.candidates})
        if response_cache.wanted(call.snapshot.cache_enabled, cache_mode)
        else None
    )
    cached = cache.get(key) if key is not None else None
    if cached is not None:
        await lifecycle.replay(call, cached)
        return Result(cached, {"x-kilnbase-cache": "hit"}, cached["model"])
    with lifecycle.accounted(call):
        await _reserve(lifecycle, call)
        upstream, model, _target = await lifecycle.call(call, _answer)
    answer = openai_shapes.completion(upstream.body, model)
    call.record.model = answer["model"]
    cost = openai_shapes.reported_cost(upstream.body.get("usage"))
    lifecycle.finish(call, "ok", usage=upstream.body.get("usage"), cost=cost, http_status=200)
    overhead = time.perf_counter() - call.started - call.upstream_seconds
    headers = {"x-kilnbase-overhead-ms": f"{overhead * 1000:.2f}"}
    if cost is not None:
        headers["x-kilnbase-cost-usd"] = str(cost)
    if key is not None:
        cache.put(key, answer)
        headers["x-kilnbase-cache"] = "miss"
    return Result(answer, headers, answer["model"])


async def open_chat_stream(
    lifecycle: CallLifecycle, caller: Caller, raw: Any, *, endpoint: str
) -> ChatStream:
    call = await _prepare(lifecycle, caller, raw, endpoint)
    body = call.body
    body["stream"] = True
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    body["stream_options"] = {"include_usage": True}
    call.record.streamed = True
    with lifecycle.accounted(call):
        await _reserve(lifecycle, call)
        upstream, model, _target = await lifecycle.call(call, _open)
    call.record.model = model
    return ChatStream(lifecycle, call, upstream, model, include_usage)
