"""Which provider serves a model id, and with which key.

`name/model` goes to the registered provider called `name` (with its own key); every other id goes to
OpenRouter, whose key is the first available of BYOK (stored encrypted), the managed source, and the
environment's `OPENROUTER_API_KEY`. Every key resolved here is handed to the redactor, so that a provider
echoing it in an error never gets it to a caller, the ledger or a log.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx2

from kilnbase.ai import credentials
from kilnbase.ai.errors import GatewayError
from kilnbase.ai.policy import PolicySnapshot
from kilnbase.ai.providers import OpenAICompatibleProvider, Provider
from kilnbase.ai.redaction import Redactor
from kilnbase.ai.upstream_http import HttpPool


@dataclass(frozen=True)
class Target:
    provider: Provider
    model: str
    key: str | None
    key_source: str | None


class ProviderRouting:
    def __init__(
        self,
        openrouter: OpenAICompatibleProvider,
        client: httpx2.AsyncClient,
        pool: HttpPool,
        managed: credentials.ManagedKeySource | None,
        env_key: str | None,
        redactor: Redactor,
    ) -> None:
        self.openrouter = openrouter
        self._client = client
        self._pool = pool
        self._managed = managed
        self._env_key = env_key
        self._redactor = redactor
        self._last_remembered: str | None = None
        self._registered: dict[str, tuple[str, OpenAICompatibleProvider]] = {}

    async def openrouter_key(self, snapshot: PolicySnapshot) -> credentials.ResolvedKey | None:
        resolved = await credentials.resolve(snapshot.byok_key, self._managed, self._env_key)
        if resolved is not None and resolved.key is not self._last_remembered:
            self._redactor.remember(resolved.key)
            self._last_remembered = resolved.key
        return resolved

    def registered(self, name: str, base_url: str) -> OpenAICompatibleProvider:
        """The provider object of a registered provider, made once per base URL."""
        known = self._registered.get(name)
        if known is None or known[0] != base_url:
            known = (base_url, OpenAICompatibleProvider(name, base_url, self._client, pool=self._pool))
            self._registered[name] = known
        return known[1]

    async def target(self, snapshot: PolicySnapshot, model: str) -> Target:
        prefix, _, rest = model.partition("/")
        record = snapshot.providers.get(prefix) if rest else None
        if record is not None:
            provider = self.registered(record.name, record.base_url)
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
