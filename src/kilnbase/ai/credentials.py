"""Which key calls OpenRouter: BYOK (stored encrypted) first, then a pluggable managed source, then the
environment's `OPENROUTER_API_KEY`. The first available wins; a key is only ever shown masked."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

import httpx2
import orjson

log = logging.getLogger("kilnbase.ai.credentials")

OPENROUTER_KEY = "openrouter_api_key"
MANAGEMENT_KEY = "openrouter_management_key"


class ManagedKeySource(Protocol):
    """A key handed out by someone else (InsForge Cloud hands one to each cloud project)."""

    async def current_key(self) -> str | None: ...


class HttpManagedKeySource:
    """A key handed out over HTTP, as InsForge Cloud hands one to each cloud project: `GET url` with a bearer
    token answers `{"apiKey": "..."}` (404: no key for now). Cached for `ttl` seconds; when the source is
    briefly unreachable the last key it gave is kept."""

    def __init__(self, url: str, token: str | None, client: httpx2.AsyncClient, ttl: float) -> None:
        self._url = url
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self._client = client
        self._ttl = ttl
        self._key: str | None = None
        self._fetched_at: float | None = None

    async def current_key(self) -> str | None:
        if self._fetched_at is not None and time.monotonic() - self._fetched_at < self._ttl:
            return self._key
        try:
            response = await self._client.get(self._url, headers=self._headers)
        except httpx2.TransportError:
            log.warning("the managed key source is unreachable; keeping the last key it gave")
            return self._key
        if response.status_code == 404:
            self._key = None
        elif response.status_code == 200:
            try:
                key = orjson.loads(response.content).get("apiKey")
            except (orjson.JSONDecodeError, AttributeError):
                key = None
            self._key = key if isinstance(key, str) and key else None
        else:
            log.warning("the managed key source answered HTTP %s; keeping the last key", response.status_code)
            return self._key
        self._fetched_at = time.monotonic()
        return self._key


@dataclass(frozen=True)
class ResolvedKey:
    key: str
    source: str  # "byok" | "managed" | "env"


async def resolve(byok: str | None, managed: ManagedKeySource | None, env: str | None) -> ResolvedKey | None:
    if byok:
        return ResolvedKey(byok, "byok")
    if managed is not None:
        key = await managed.current_key()
        if key:
            return ResolvedKey(key, "managed")
    if env:
        return ResolvedKey(env, "env")
    return None


def mask(key: str) -> str:
    """`sk-or-v1-****abcd`: enough to recognise a key, never enough to use it."""
    if len(key) <= 12:
        return "****"
    head = key[: key.rfind("-") + 1] if "-" in key[:10] else key[:3]
    return f"{head[:9]}****{key[-4:]}"
