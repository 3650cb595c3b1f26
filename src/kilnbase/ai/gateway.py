"""The gateway service: what the surfaces (`/v1`, InsForge's `/api/ai`, the admin) call.

A `Gateway` is made by `gateway_factory.build_gateway` and holds the process's collaborators (the upstream
clients, the caches, the limits' counters, the ledger writer); each endpoint's work lives in its flow module
(`chat_flow`, `embeddings_flow`, `images_flow`) over the shared `lifecycle`. No HTTP objects here.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import httpx2

from kilnbase.ai import chat_flow, credentials, embeddings_flow, images_flow
from kilnbase.ai.cache import ResponseCache
from kilnbase.ai.caller import Caller
from kilnbase.ai.catalog import ModelCatalog
from kilnbase.ai.chat_stream import ChatStream
from kilnbase.ai.errors import GatewayError
from kilnbase.ai.ledger import LedgerWriter
from kilnbase.ai.lifecycle import CallLifecycle, Result, admit_anon
from kilnbase.ai.policy import PolicySnapshot, PolicyStore, model_matches
from kilnbase.ai.provider_routing import ProviderRouting
from kilnbase.ai.providers import OpenAICompatibleProvider
from kilnbase.ai.reliability import CircuitBreaker
from kilnbase.ai.upstream_http import HttpPool
from kilnbase.config import Settings


@dataclass(frozen=True, eq=False)
class Gateway:
    settings: Settings
    #: httpx2 for everything off the hot path (catalogs, key checks, the managed key source) and proxies.
    client: httpx2.AsyncClient
    #: The lean client for provider calls (see `upstream_http.py`).
    pool: HttpPool
    routing: ProviderRouting
    catalog: ModelCatalog
    policy: PolicyStore
    breaker: CircuitBreaker
    cache: ResponseCache
    ledger: LedgerWriter
    lifecycle: CallLifecycle

    @property
    def openrouter(self) -> OpenAICompatibleProvider:
        return self.routing.openrouter

    async def openrouter_key(self, snapshot: PolicySnapshot) -> credentials.ResolvedKey | None:
        return await self.routing.openrouter_key(snapshot)

    async def models_for(self, caller: Caller) -> list[dict[str, Any]]:
        """The catalog, for a caller who may call models at all: an anon caller only where the policy
        admits anon callers, so the public anon key neither learns the project's models nor makes the
        server fetch provider catalogs with the project's keys."""
        admit_anon(caller, await self.lifecycle.snapshot())
        return await self.models()

    async def models(self) -> list[dict[str, Any]]:
        """The catalog of every provider (OpenRouter's plus each registered one's, prefixed)."""
        snapshot = await self.lifecycle.snapshot()
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
            provider = self.routing.registered(record.name, record.base_url)
            extra = await self.catalog.models(provider, record.api_key)
            models.extend({**m, "id": f"{record.name}/{m['id']}"} for m in extra or [])
        if snapshot.allowed_models is not None:
            models = [m for m in models if model_matches(m["id"], snapshot.allowed_models)]
        return models

    # The entry points hand back their flow's coroutine, adding no frame of their own to every call's path.
    def chat(
        self,
        caller: Caller,
        raw: Any,
        *,
        endpoint: str = "/v1/chat/completions",
        cache_mode: str | None = None,
    ) -> Coroutine[Any, Any, Result]:
        lifecycle, cache = self.lifecycle, self.cache
        return chat_flow.chat(lifecycle, cache, caller, raw, endpoint=endpoint, cache_mode=cache_mode)

    def open_chat_stream(
        self, caller: Caller, raw: Any, *, endpoint: str = "/v1/chat/completions"
    ) -> Coroutine[Any, Any, ChatStream]:
        return chat_flow.open_chat_stream(self.lifecycle, caller, raw, endpoint=endpoint)

    def embeddings(
        self, caller: Caller, raw: Any, *, endpoint: str = "/v1/embeddings", cache_mode: str | None = None
    ) -> Coroutine[Any, Any, Result]:
        return embeddings_flow.embeddings(
            self.lifecycle, self.cache, caller, raw, endpoint=endpoint, cache_mode=cache_mode
        )

    def images(
        self,
        caller: Caller,
        raw: Any,
        *,
        endpoint: str = "/v1/images/generations",
        input_images: list[str] | None = None,
    ) -> Coroutine[Any, Any, tuple[list[str], str | None, dict[str, Any], str]]:
        """Image generation through chat with `modalities`; (data URLs, text, usage, model)."""
        return images_flow.images(self.lifecycle, caller, raw, endpoint=endpoint, input_images=input_images)
