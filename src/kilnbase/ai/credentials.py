"""Which key calls OpenRouter: BYOK (stored encrypted) first, then a pluggable managed source, then the
environment's `OPENROUTER_API_KEY`. The first available wins; a key is only ever shown masked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

OPENROUTER_KEY = "openrouter_api_key"
MANAGEMENT_KEY = "openrouter_management_key"


class ManagedKeySource(Protocol):
    """A key handed out by someone else (InsForge Cloud hands one to each cloud project)."""

    async def current_key(self) -> str | None: ...


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
