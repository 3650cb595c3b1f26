"""The model catalog with prices: fetched from each provider, cached, and served stale when it is down.

Prices are OpenRouter's decimal strings in USD per token, parsed with Decimal (never float). One fetch per
provider runs at a time (concurrent callers wait for it), and a failed refresh keeps the last good list.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from kilnbase.ai.providers import Provider, UpstreamError

log = logging.getLogger("kilnbase.ai.catalog")

#: After a failed fetch with nothing cached, wait this long before asking again.
_RETRY_EMPTY_AFTER = 5.0


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value not in (None, "") else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


@dataclass(frozen=True)
class Price:
    prompt: Decimal
    completion: Decimal
    request: Decimal
    image: Decimal
    max_completion_tokens: int | None

    def cost(self, prompt_tokens: int, completion_tokens: int, images: int = 0) -> Decimal:
        return (
            self.prompt * prompt_tokens
            + self.completion * completion_tokens
            + self.request
            + self.image * images
        )


def price_of(model: dict[str, Any]) -> Price:
    pricing = model.get("pricing") or {}
    top = model.get("top_provider") or {}
    limit = top.get("max_completion_tokens")
    return Price(
        prompt=_decimal(pricing.get("prompt")),
        completion=_decimal(pricing.get("completion")),
        request=_decimal(pricing.get("request")),
        image=_decimal(pricing.get("image")),
        max_completion_tokens=limit if isinstance(limit, int) and limit > 0 else None,
    )


@dataclass
class _Entry:
    models: list[dict[str, Any]] = field(default_factory=list)
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Prices parsed (Decimal) on first use, per model id asked about: every request needs one.
    prices: dict[str, Price] = field(default_factory=dict)
    fetched_at: float = 0.0
    failed_at: float = 0.0
    loaded: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ModelCatalog:
    def __init__(self, ttl: float, redact: Callable[[str], str] | None = None) -> None:
        self._ttl = ttl
        #: Applied to a provider's error before it is logged (the provider may echo the key it was sent).
        self._redact = redact or (lambda text: text)
        self._entries: dict[str, _Entry] = {}

    async def models(self, provider: Provider, key: str | None) -> list[dict[str, Any]] | None:
        """The provider's models, or None when they were never fetched and the provider is down."""
        entry = self._entries.setdefault(provider.name, _Entry())
        now = time.monotonic()
        fresh = entry.loaded and now - entry.fetched_at < self._ttl
        if fresh or (not entry.loaded and now - entry.failed_at < _RETRY_EMPTY_AFTER and entry.failed_at):
            return entry.models if entry.loaded else None
        async with entry.lock:
            if entry.loaded and time.monotonic() - entry.fetched_at < self._ttl:
                return entry.models
            try:
                models = await provider.models(key)
            except UpstreamError as exc:
                log.warning(
                    "model catalog of %s unavailable (%s); serving %s",
                    provider.name,
                    self._redact(exc.message),
                    "the cached list" if entry.loaded else "nothing",
                )
                entry.failed_at = time.monotonic()
                if entry.loaded:
                    entry.fetched_at = time.monotonic() - self._ttl + _RETRY_EMPTY_AFTER
                return entry.models if entry.loaded else None
            entry.models = models
            entry.by_id = {m["id"]: m for m in models}
            entry.prices = {}
            entry.fetched_at = time.monotonic()
            entry.loaded = True
            return models

    def lookup(self, provider_name: str, model_id: str) -> dict[str, Any] | None:
        entry = self._entries.get(provider_name)
        if entry is None or not entry.loaded:
            return None
        return entry.by_id.get(model_id) or entry.by_id.get(model_id.split(":", 1)[0])

    def is_loaded(self, provider_name: str) -> bool:
        entry = self._entries.get(provider_name)
        return bool(entry and entry.loaded)

    def price(self, provider_name: str, model_id: str) -> Price | None:
        entry = self._entries.get(provider_name)
        if entry is None or not entry.loaded:
            return None
        price = entry.prices.get(model_id)
        if price is None:
            model = self.lookup(provider_name, model_id)
            if model is None:
                return None
            price = price_of(model)
            if len(entry.prices) < 10_000:  # ids with any `:variant` suffix map to a model: keep it bounded
                entry.prices[model_id] = price
        return price
