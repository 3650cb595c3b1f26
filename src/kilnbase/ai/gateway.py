"""The gateway service: one request from a caller to a provider and back, with everything around it.

Order of work for a request: validate; load the policy snapshot (cached); apply the configuration's system
prompt, the allow-lists and the `max_tokens` cap; check the model against the catalog; answer from the cache
when allowed; reserve the estimate against every limit; call the provider with retries (backoff + jitter,
honouring `Retry-After`, only before the first byte) and fallbacks, guarded by a circuit breaker per
provider; settle the reservation with the real figures and write the ledger row (both off the request path).
No HTTP objects here: the OpenAI routes and InsForge's routes render what this returns.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import anyio
import httpx2
import orjson

from kilnbase.ai import credentials, limits, requests
from kilnbase.ai.cache import ResponseCache, cache_key
from kilnbase.ai.catalog import ModelCatalog, Price
from kilnbase.ai.counters_redis import RedisCounters
from kilnbase.ai.errors import GatewayError
from kilnbase.ai.ledger import LedgerWriter, UsageRecord
from kilnbase.ai.policy import Configuration, PolicySnapshot, PolicyStore, model_matches
from kilnbase.ai.providers import (
    OpenAICompatibleProvider,
    Provider,
    StreamBroken,
    UpstreamError,
    UpstreamStream,
    openrouter,
    scrub,
)
from kilnbase.ai.reliability import CircuitBreaker, backoff_delay
from kilnbase.ai.upstream_http import HttpPool
from kilnbase.config import Settings
from kilnbase.db.session import Database
from kilnbase.keys.secret_box import SecretBox

T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    """Who is calling, as far as quotas and the ledger care."""

    principal: str
    user_id: str | None = None
    key_id: str | None = None
    key_models: tuple[str, ...] | None = None
    key_max_tokens: int | None = None


@dataclass(frozen=True)
class Target:
    provider: Provider
    model: str
    key: str | None
    key_source: str | None


@dataclass
class Prepared:
    body: dict[str, Any]
    candidates: list[str]
    snapshot: PolicySnapshot
    record: UsageRecord
    configuration: Configuration | None = None
    price: Price | None = None
    reservation: limits.Reservation = field(default_factory=limits.Reservation)
    #: (prompt tokens, completion tokens) the reservation assumes.
    estimate: tuple[int, int] = (0, 0)
    started: float = field(default_factory=time.perf_counter)
    #: Time spent waiting on providers (all attempts), to report the gateway's own overhead.
    upstream_seconds: float = 0.0


@dataclass
class Result:
    """A finished non-streaming answer in OpenAI's shape, plus the headers the surfaces add."""

    body: dict[str, Any]
    headers: dict[str, str]
    model: str


def openai_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
        "prompt_tokens_details": {"cached_tokens": int(prompt_details.get("cached_tokens") or 0)},
        "completion_tokens_details": {
            "reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0)
        },
    }


def _completion(upstream: dict[str, Any], model: str) -> dict[str, Any]:
    choices = []
    for index, choice in enumerate(upstream.get("choices") or []):
        source = choice.get("message") or {}
        message: dict[str, Any] = {
            "role": source.get("role") or "assistant",
            "content": source.get("content"),
            "refusal": source.get("refusal"),
        }
        for extra in ("tool_calls", "annotations"):
            if source.get(extra):
                message[extra] = source[extra]
        choices.append(
            {
                "index": choice.get("index", index),
                "message": message,
                "logprobs": choice.get("logprobs"),
                "finish_reason": choice.get("finish_reason"),
            }
        )
    return {
        "id": upstream.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": upstream.get("created") or int(time.time()),
        "model": upstream.get("model") or model,
        "choices": choices,
        "usage": openai_usage(upstream.get("usage")),
        "system_fingerprint": upstream.get("system_fingerprint"),
    }


def _estimate_prompt_tokens(payload: Any) -> int:
    """A deliberately generous estimate (about 3 bytes a token) used only to reserve quota."""
    return len(orjson.dumps(payload)) // 3 + 16


def _reported_cost(usage: dict[str, Any] | None) -> Decimal | None:
    cost = (usage or {}).get("cost")
    if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
        return Decimal(str(cost))
    return None


class Gateway:
    def __init__(
        self,
        settings: Settings,
        box: SecretBox,
        database: Callable[[], Database],
        managed: credentials.ManagedKeySource | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.managed = managed
        self.client = httpx2.AsyncClient(
            timeout=httpx2.Timeout(settings.ai_read_timeout, connect=settings.ai_connect_timeout),
            limits=httpx2.Limits(max_connections=1024, max_keepalive_connections=256),
        )
        if managed is None and settings.ai_managed_key_url:
            self.managed = credentials.HttpManagedKeySource(
                settings.ai_managed_key_url,
                settings.ai_managed_key_token,
                self.client,
                settings.ai_managed_key_ttl,
            )
        self.pool = HttpPool(
            connect_timeout=settings.ai_connect_timeout, read_timeout=settings.ai_read_timeout
        )
        self.openrouter = openrouter(settings.openrouter_base_url, self.client, self.pool)
        self.catalog = ModelCatalog(settings.ai_catalog_ttl)
        self.policy = PolicyStore(box, settings.ai_policy_ttl)
        self.counters: limits.CounterStore = (
            RedisCounters(settings.ai_redis_url)
            if settings.ai_redis_url
            else limits.PostgresCounters(database)
        )
        self.ledger = LedgerWriter(database, self.counters)
        self.breaker = CircuitBreaker(settings.ai_breaker_threshold, settings.ai_breaker_cooldown)
        self.cache = ResponseCache(settings.ai_cache_ttl, settings.ai_cache_max_entries)
        self._registered: dict[str, tuple[str, OpenAICompatibleProvider]] = {}

    # -- credentials and routing ------------------------------------------------------------------------
    async def openrouter_key(self, snapshot: PolicySnapshot) -> credentials.ResolvedKey | None:
        return await credentials.resolve(snapshot.byok_key, self.managed, self.settings.openrouter_api_key)

    def _registered_provider(self, name: str, base_url: str) -> OpenAICompatibleProvider:
        known = self._registered.get(name)
        if known is None or known[0] != base_url:
            known = (base_url, OpenAICompatibleProvider(name, base_url, self.client, pool=self.pool))
            self._registered[name] = known
        return known[1]

    async def target(self, snapshot: PolicySnapshot, model: str) -> Target:
        """`name/model` goes to a registered provider called `name`; everything else to OpenRouter."""
        prefix, _, rest = model.partition("/")
        record = snapshot.providers.get(prefix) if rest else None
        if record is not None:
            provider = self._registered_provider(record.name, record.base_url)
            return Target(provider, rest, record.api_key, "provider" if record.api_key else None)
        resolved = await self.openrouter_key(snapshot)
        if resolved is None:
            raise GatewayError(
                503,
                "No OpenRouter key is configured: set one under Gateway Credentials "
                "(POST /api/ai/gateway/config) or OPENROUTER_API_KEY in the environment.",
                type_="service_unavailable_error",
                code="no_provider_key",
            )
        return Target(self.openrouter, model, resolved.key, resolved.source)

    async def models(self) -> list[dict[str, Any]]:
        """The catalog of every provider (OpenRouter's plus each registered one's, prefixed)."""
        snapshot = await self.policy.get(self.database())
        resolved = await self.openrouter_key(snapshot)
        found = await self.catalog.models(self.openrouter, resolved.key if resolved else None)
        if found is None:
            raise GatewayError(
                502,
                "The model catalog is unavailable and nothing is cached yet.",
                type_="api_error",
                code="upstream_unavailable",
            )
        models = list(found)
        for record in snapshot.providers.values():
            provider = self._registered_provider(record.name, record.base_url)
            extra = await self.catalog.models(provider, record.api_key)
            models.extend({**m, "id": f"{record.name}/{m['id']}"} for m in extra or [])
        if snapshot.allowed_models is not None:
            models = [m for m in models if model_matches(m["id"], snapshot.allowed_models)]
        return models

    # -- preparation ----------------------------------------------------------------------------------------
    async def _prepare(
        self, caller: Caller, body: dict[str, Any], endpoint: str, fallbacks: list[str], started: float
    ) -> Prepared:
        snapshot = await self.policy.get(self.database())
        model = body["model"]
        configuration = snapshot.configurations.get(model)
        candidates = [model, *fallbacks, *(configuration.fallback_models if configuration else ())]
        candidates = list(dict.fromkeys(candidates))
        requests.check_allowed(candidates, snapshot.allowed_models, "project")
        requests.check_allowed(candidates, caller.key_models, "gateway key")
        price = None
        for candidate in candidates:
            target = await self.target(snapshot, candidate)
            if target.provider is self.openrouter:
                await self.catalog.models(self.openrouter, target.key)
                if (
                    self.catalog.is_loaded("openrouter")
                    and self.catalog.lookup("openrouter", candidate) is None
                ):
                    raise GatewayError(
                        400,
                        f"Unknown model: {candidate}. GET /v1/models lists the models.",
                        code="model_not_found",
                        param="model",
                    )
                candidate_price = self.catalog.price("openrouter", candidate)
                if candidate_price is not None and (
                    price is None or candidate_price.completion > price.completion
                ):
                    price = candidate_price
        record = UsageRecord(
            endpoint=endpoint,
            principal=caller.principal,
            user_id=caller.user_id,
            key_id=caller.key_id,
            requested_model=model,
            config_id=configuration.id if configuration else None,
        )
        return Prepared(
            body=body,
            candidates=candidates,
            snapshot=snapshot,
            record=record,
            configuration=configuration,
            price=price,
            started=started,
        )

    async def _reserve(self, caller: Caller, prepared: Prepared, tokens: int, usd: Decimal) -> None:
        subject = limits.Subject(key_id=caller.key_id, user_id=caller.user_id)
        try:
            prepared.reservation = await limits.reserve(
                self.counters, prepared.snapshot, subject, tokens, usd
            )
        except GatewayError as exc:
            self._finish(prepared, "refused", cost=Decimal(0), http_status=exc.status, error=exc.message)
            raise

    def _finish(
        self,
        prepared: Prepared,
        status: str,
        *,
        usage: dict[str, Any] | None = None,
        cost: Decimal | None = None,
        http_status: int | None = None,
        error: str | None = None,
        images: int = 0,
        ttft: float | None = None,
    ) -> None:
        """Settle the reservation and queue the ledger row."""
        record = prepared.record
        normalized = openai_usage(usage)
        record.status = status
        record.http_status = http_status
        record.error = error
        record.input_tokens = normalized["prompt_tokens"]
        record.output_tokens = normalized["completion_tokens"]
        record.cached_tokens = normalized["prompt_tokens_details"]["cached_tokens"]
        record.image_count = images
        if cost is None:
            cost = _reported_cost(usage)
        if cost is None and prepared.price is not None:
            cost = prepared.price.cost(record.input_tokens, record.output_tokens, images)
        record.cost_usd = cost or Decimal(0)
        record.created_at = datetime.now(UTC)
        record.latency_ms = int((time.perf_counter() - prepared.started) * 1000)
        record.ttft_ms = int(ttft * 1000) if ttft is not None else None
        settlement = prepared.reservation.settlement(
            record.input_tokens + record.output_tokens, record.cost_usd
        )
        self.ledger.submit(record, settlement)

    # -- calling providers -----------------------------------------------------------------------------------
    def _client_error(self, exc: UpstreamError, model: str, source: str | None) -> GatewayError:
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
        return GatewayError(
            400, f"The provider rejected the request: {exc.message}", code="upstream_rejected"
        )

    @staticmethod
    def _failure(exc: UpstreamError, model: str) -> GatewayError:
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

    async def _call(
        self, prepared: Prepared, call: Callable[[Provider, dict[str, Any], str | None], Awaitable[T]]
    ) -> tuple[T, str, Target]:
        """Try each candidate model in turn, each with retries; only ever before the first byte is relayed."""
        last: GatewayError | None = None
        settings = self.settings
        for model in prepared.candidates:
            target = await self.target(prepared.snapshot, model)
            name = target.provider.name
            deployment = f"{name}:{model}"
            body = {**prepared.body, "model": target.model}
            for attempt in range(settings.ai_max_retries + 1):
                if not (self.breaker.allow(name) and self.breaker.allow(deployment)):
                    last = GatewayError(
                        503,
                        f"The provider of {model} is unavailable (circuit open).",
                        type_="service_unavailable_error",
                        code="provider_unavailable",
                        headers={"x-should-retry": "false"},
                    )
                    break
                try:
                    sent_at = time.perf_counter()
                    try:
                        result = await call(target.provider, body, target.key)
                    finally:
                        prepared.upstream_seconds += time.perf_counter() - sent_at
                except UpstreamError as exc:
                    if not exc.retryable:
                        raise self._client_error(exc, model, target.key_source) from None
                    if exc.status == 0:
                        self.breaker.failure(name)
                    elif exc.status != 429:
                        self.breaker.failure(deployment)
                    last = self._failure(exc, model)
                    delay = backoff_delay(
                        attempt, settings.ai_retry_base_delay, settings.ai_retry_max_delay, exc.retry_after
                    )
                    if attempt >= settings.ai_max_retries or delay is None:
                        break
                    await asyncio.sleep(delay)
                    continue
                self.breaker.success(name)
                self.breaker.success(deployment)
                prepared.record.provider = name
                prepared.record.key_source = target.key_source
                return result, model, target
        assert last is not None
        if len(prepared.candidates) > 1:
            raise GatewayError(
                503,
                f"Every model failed ({', '.join(prepared.candidates)}): {last.message}",
                type_="service_unavailable_error",
                code="all_fallbacks_failed",
                headers={"x-should-retry": "false"},
            )
        raise last

    # -- chat ------------------------------------------------------------------------------------------------
    async def _prepare_chat(self, caller: Caller, raw: Any, endpoint: str) -> Prepared:
        started = time.perf_counter()
        body = requests.validate_chat(raw)
        fallbacks = list(body.pop("models", None) or [])
        prepared = await self._prepare(caller, body, endpoint, fallbacks, started)
        body["messages"] = requests.apply_configuration(body["messages"], prepared.configuration)
        model_limit = prepared.price.max_completion_tokens if prepared.price else None
        requested = requests.cap_max_tokens(
            body, [prepared.snapshot.max_tokens_cap, caller.key_max_tokens], model_limit
        )
        prepared.record.streamed = bool(body.get("stream"))
        default = min(model_limit or self.settings.ai_default_max_tokens, self.settings.ai_default_max_tokens)
        completion = requested or default
        prepared.estimate = (_estimate_prompt_tokens(body["messages"]), completion)
        return prepared

    async def _reserve_chat(self, caller: Caller, prepared: Prepared) -> None:
        prompt, completion = prepared.estimate
        usd = prepared.price.cost(prompt, completion) if prepared.price else Decimal(0)
        await self._reserve(caller, prepared, prompt + completion, usd)

    def _cache_wanted(self, prepared: Prepared, mode: str | None) -> bool:
        if mode == "off":
            return False
        return mode == "on" or prepared.snapshot.cache_enabled

    async def chat(
        self,
        caller: Caller,
        raw: Any,
        *,
        endpoint: str = "/v1/chat/completions",
        cache_mode: str | None = None,
    ) -> Result:
        prepared = await self._prepare_chat(caller, raw, endpoint)
        body = prepared.body
        body.pop("stream", None)
        body.pop("stream_options", None)
        key = (
            cache_key("chat", {**body, "models": prepared.candidates})
            if self._cache_wanted(prepared, cache_mode)
            else None
        )
        if key is not None:
            cached = self.cache.get(key)
            if cached is not None:
                prepared.record.cache_hit = True
                self._finish(prepared, "ok", usage=cached["usage"], cost=Decimal(0), http_status=200)
                return Result(cached, {"x-kilnbase-cache": "hit"}, cached["model"])
        await self._reserve_chat(caller, prepared)
        try:
            upstream, model, _target = await self._call(
                prepared, lambda provider, upstream_body, api_key: provider.chat(upstream_body, api_key)
            )
        except GatewayError as exc:
            self._finish(prepared, "error", http_status=exc.status, error=exc.message)
            raise
        except BaseException:
            # The client left while the provider was working: keep the prompt's estimated cost on the books.
            self._finish(
                prepared,
                "abandoned",
                usage={"prompt_tokens": prepared.estimate[0]},
                error="the client went away",
            )
            raise
        answer = _completion(upstream.body, model)
        prepared.record.model = answer["model"]
        cost = _reported_cost(upstream.body.get("usage"))
        self._finish(prepared, "ok", usage=upstream.body.get("usage"), cost=cost, http_status=200)
        headers: dict[str, str] = {}
        overhead = time.perf_counter() - prepared.started - prepared.upstream_seconds
        headers["x-kilnbase-overhead-ms"] = f"{overhead * 1000:.2f}"
        if cost is not None:
            headers["x-kilnbase-cost-usd"] = str(cost)
        if key is not None:
            self.cache.put(key, answer)
            headers["x-kilnbase-cache"] = "miss"
        return Result(answer, headers, answer["model"])

    async def open_chat_stream(
        self, caller: Caller, raw: Any, *, endpoint: str = "/v1/chat/completions"
    ) -> ChatStream:
        prepared = await self._prepare_chat(caller, raw, endpoint)
        body = prepared.body
        body["stream"] = True
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        body["stream_options"] = {"include_usage": True}
        prepared.record.streamed = True
        await self._reserve_chat(caller, prepared)
        try:
            upstream, model, _target = await self._call(
                prepared,
                lambda provider, upstream_body, api_key: provider.open_chat_stream(upstream_body, api_key),
            )
        except GatewayError as exc:
            self._finish(prepared, "error", http_status=exc.status, error=exc.message)
            raise
        except BaseException:
            self._finish(prepared, "abandoned", error="the client went away")
            raise
        prepared.record.model = model
        return ChatStream(self, prepared, upstream, model, include_usage)

    # -- embeddings and images -------------------------------------------------------------------------------
    async def embeddings(
        self, caller: Caller, raw: Any, *, endpoint: str = "/v1/embeddings", cache_mode: str | None = None
    ) -> Result:
        started = time.perf_counter()
        body = requests.validate_embeddings(raw)
        encoding = body.pop("encoding_format", None) or "float"
        prepared = await self._prepare(caller, body, endpoint, [], started)
        upstream_body = {
            k: body[k] for k in ("model", "input", "dimensions", "user") if body.get(k) is not None
        }
        key = cache_key("embeddings", upstream_body) if self._cache_wanted(prepared, cache_mode) else None
        cached = self.cache.get(key) if key is not None else None
        headers: dict[str, str] = {}
        if cached is not None:
            prepared.record.cache_hit = True
            self._finish(prepared, "ok", usage=cached["usage"], cost=Decimal(0), http_status=200)
            answer = cached
            headers["x-kilnbase-cache"] = "hit"
        else:
            prepared.body = upstream_body
            tokens = _estimate_prompt_tokens(body["input"])
            await self._reserve(
                caller, prepared, tokens, prepared.price.cost(tokens, 0) if prepared.price else Decimal(0)
            )
            try:
                upstream, model, _target = await self._call(
                    prepared,
                    lambda provider, b, api_key: provider.embeddings(
                        {**b, "encoding_format": "float"}, api_key
                    ),
                )
            except GatewayError as exc:
                self._finish(prepared, "error", http_status=exc.status, error=exc.message)
                raise
            usage = upstream.body.get("usage") or {}
            data = upstream.body.get("data")
            if not isinstance(data, list):
                self._finish(prepared, "error", usage=usage, http_status=502, error="malformed embeddings")
                raise GatewayError(
                    502, "The provider sent malformed embeddings.", type_="api_error", code="upstream_error"
                )
            answer = {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": item.get("index", i), "embedding": item.get("embedding")}
                    for i, item in enumerate(data)
                ],
                "model": upstream.body.get("model") or model,
                "usage": {
                    "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                    "total_tokens": int(usage.get("total_tokens") or usage.get("prompt_tokens") or 0),
                },
            }
            prepared.record.model = answer["model"]
            self._finish(
                prepared,
                "ok",
                usage={"prompt_tokens": answer["usage"]["prompt_tokens"]},
                cost=_reported_cost(usage),
                http_status=200,
            )
            if key is not None:
                self.cache.put(key, answer)
                headers["x-kilnbase-cache"] = "miss"
        if encoding == "base64":
            answer = {
                **answer,
                "data": [
                    {
                        **item,
                        "embedding": base64.b64encode(
                            struct.pack(f"<{len(item['embedding'])}f", *item["embedding"])
                        ).decode(),
                    }
                    for item in answer["data"]
                ],
            }
        return Result(answer, headers, answer["model"])

    async def images(
        self,
        caller: Caller,
        raw: Any,
        *,
        endpoint: str = "/v1/images/generations",
        input_images: list[str] | None = None,
    ) -> tuple[list[str], str | None, dict[str, Any], str]:
        """Image generation through chat with `modalities`; returns (data URLs, text, usage, model)."""
        started = time.perf_counter()
        body = requests.validate_image(raw)
        n = int(body.get("n") or 1)
        content: Any = body["prompt"]
        if input_images:
            content = [
                {"type": "text", "text": body["prompt"]},
                *({"type": "image_url", "image_url": {"url": url}} for url in input_images),
            ]
        chat_body = {
            "model": body["model"],
            "messages": [{"role": "user", "content": content}],
            "modalities": ["image", "text"],
        }
        prepared = await self._prepare(caller, chat_body, endpoint, [], started)
        model_info = self.catalog.lookup("openrouter", body["model"])
        outputs = ((model_info or {}).get("architecture") or {}).get("output_modalities")
        if isinstance(outputs, list) and "image" not in outputs:
            raise GatewayError(
                400,
                f"Model {body['model']} does not generate images.",
                code="model_not_supported",
                param="model",
            )
        prompt_tokens = _estimate_prompt_tokens(chat_body["messages"])
        usd = prepared.price.cost(prompt_tokens, 1024, n) if prepared.price else Decimal(0)
        await self._reserve(caller, prepared, (prompt_tokens + 1024) * n, usd * n)
        images: list[str] = []
        text: str | None = None
        totals = {"prompt_tokens": 0, "completion_tokens": 0}
        cost = Decimal(0)
        model = body["model"]
        try:
            for _ in range(n):
                upstream, model, _target = await self._call(
                    prepared, lambda provider, b, api_key: provider.chat(b, api_key)
                )
                usage = openai_usage(upstream.body.get("usage"))
                totals["prompt_tokens"] += usage["prompt_tokens"]
                totals["completion_tokens"] += usage["completion_tokens"]
                cost += _reported_cost(upstream.body.get("usage")) or Decimal(0)
                message = ((upstream.body.get("choices") or [{}])[0]).get("message") or {}
                text = message.get("content") or text
                for image in message.get("images") or []:
                    url = (image.get("image_url") or {}).get("url")
                    if isinstance(url, str):
                        images.append(url)
                if len(images) >= n:
                    break
        except GatewayError as exc:
            self._finish(
                prepared,
                "error",
                usage=totals,
                cost=cost,
                http_status=exc.status,
                error=exc.message,
                images=len(images),
            )
            raise
        prepared.record.model = model
        self._finish(prepared, "ok", usage=totals, cost=cost or None, http_status=200, images=len(images[:n]))
        return images[:n], text, totals, model


class ChatStream:
    """An open upstream stream, normalised to OpenAI chunks (usage stripped: the surfaces decide).

    Usage is the last cumulative figure the provider sent, never a sum. Whatever ends the stream (its end,
    an error frame, malformed bytes, or the client going away) closes the upstream call and writes the row.
    """

    def __init__(
        self, gateway: Gateway, prepared: Prepared, upstream: UpstreamStream, model: str, include_usage: bool
    ) -> None:
        self._gateway = gateway
        self._prepared = prepared
        self._upstream = upstream
        self.model = model
        self.include_usage = include_usage
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.usage: dict[str, Any] | None = None
        self.status: str | None = None
        self.error: str | None = None
        self._ttft: float | None = None
        self._chars = 0
        self._role_sent = False
        self._closed = False

    def _keep(self, choice: dict[str, Any]) -> bool:
        delta = choice.get("delta") or {}
        if (
            choice.get("finish_reason")
            or delta.get("tool_calls")
            or delta.get("content")
            or delta.get("refusal")
        ):
            return True
        if delta.get("role") and not self._role_sent:
            self._role_sent = True
            return True
        return bool(delta.get("reasoning"))

    async def chunks(self) -> AsyncIterator[dict[str, Any] | None]:
        """OpenAI chunks; None for a keepalive. Raises StreamBroken when the stream fails midway."""
        try:
            async for event in self._upstream.events():
                if event is None:
                    yield None
                    continue
                usage = event.get("usage")
                if isinstance(usage, dict):
                    self.usage = usage
                if event.get("error"):
                    error = event["error"]
                    message = error.get("message") if isinstance(error, dict) else None
                    raise StreamBroken(
                        f"The provider failed mid-stream: {scrub(str(message or 'unknown error'))}"
                    )
                choices = []
                for choice in event.get("choices") or []:
                    if self._keep(choice):
                        choices.append(
                            {
                                "index": choice.get("index", 0),
                                "delta": choice.get("delta") or {},
                                "logprobs": choice.get("logprobs"),
                                "finish_reason": choice.get("finish_reason"),
                            }
                        )
                        self._chars += len((choice.get("delta") or {}).get("content") or "")
                if not choices:
                    continue
                if self._ttft is None:
                    self._ttft = time.perf_counter() - self._prepared.started
                if isinstance(event.get("id"), str):
                    self.id = event["id"]
                if isinstance(event.get("model"), str):
                    self.model = event["model"]
                yield {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "system_fingerprint": event.get("system_fingerprint"),
                    "choices": choices,
                }
            self.status = "ok"
        except StreamBroken as exc:
            self.status, self.error = "error", exc.message
            raise
        finally:
            await self.close()

    def usage_chunk(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [],
            "usage": openai_usage(self.usage),
        }

    async def close(self) -> None:
        """Idempotent: closes the upstream call (cancelling it if still running) and records the outcome."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._upstream.aclose()
        status = self.status or "abandoned"
        usage = self.usage
        if usage is None:
            # The provider never sent its figures: bill what was seen (prompt estimate + text relayed).
            prompt, _ = self._prepared.estimate
            usage = {"prompt_tokens": prompt, "completion_tokens": max(0, self._chars // 4)}
        self._prepared.record.model = self.model
        self._gateway._finish(
            self._prepared,
            status,
            usage=usage,
            http_status=200,
            error=self.error
            if status == "error"
            else ("the client went away" if status == "abandoned" else None),
            ttft=self._ttft,
        )
