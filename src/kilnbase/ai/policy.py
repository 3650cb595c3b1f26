"""The gateway's policy as one immutable snapshot: allow-lists (models, request fields), caps, anon access,
limits, configurations, providers, prices set by an admin, BYOK.

A request must not pay a database round trip to learn its policy, so the snapshot is cached in the process
and reloaded when older than `ai_policy_ttl` seconds (every change made here also drops it at once; other
processes see it within the TTL). Gateway keys are looked up by hash the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kilnbase.ai.catalog import Price
from kilnbase.ai.credentials import MANAGEMENT_KEY, OPENROUTER_KEY
from kilnbase.db.session import Database
from kilnbase.keys.secret_box import DecryptionError, SecretBox

log = logging.getLogger("kilnbase.ai.policy")


@dataclass(frozen=True)
class LimitRule:
    #: project ('*'), key (a gateway key id), user (a user id or '*'), anon (a client address or '*').
    scope: str
    subject: str
    rpm: int | None = None
    tpm: int | None = None
    tokens_per_day: int | None = None
    usd_per_day: Decimal | None = None
    usd_per_month: Decimal | None = None


@dataclass(frozen=True)
class Configuration:
    id: str
    model_id: str
    provider: str
    system_prompt: str | None
    client_system_messages: str
    fallback_models: tuple[str, ...]
    input_modality: tuple[str, ...]
    output_modality: tuple[str, ...]


@dataclass(frozen=True)
class ProviderRecord:
    name: str
    base_url: str
    api_key: str | None


@dataclass(frozen=True)
class GatewayKey:
    id: str
    name: str
    models: tuple[str, ...] | None
    max_tokens: int | None


@dataclass(frozen=True)
class PolicySnapshot:
    allowed_models: tuple[str, ...] | None = None
    max_tokens_cap: int | None = None
    cache_enabled: bool = False
    #: Whether the anon key (and anon-role tokens) may call models at all.
    anon_access: bool = False
    #: Request fields beyond the standard ones that may reach a provider (`requests.STANDARD_CHAT_FIELDS`).
    allowed_request_fields: frozenset[str] = frozenset()
    limits: dict[tuple[str, str], LimitRule] = field(default_factory=dict)
    configurations: dict[str, Configuration] = field(default_factory=dict)
    providers: dict[str, ProviderRecord] = field(default_factory=dict)
    #: Prices an admin set, by gateway model id (`name/model` for a registered provider).
    prices: dict[str, Price] = field(default_factory=dict)
    byok_key: str | None = None
    management_key: str | None = None

    def keys(self) -> tuple[str | None, ...]:
        """Every provider key this policy holds (for redaction)."""
        return (self.byok_key, self.management_key, *(p.api_key for p in self.providers.values()))


def model_matches(model: str, patterns: tuple[str, ...]) -> bool:
    """Exact ids, or `author/*` style prefixes."""
    for pattern in patterns:
        if pattern == model or pattern == "*":
            return True
        if pattern.endswith("*") and model.startswith(pattern[:-1]):
            return True
    return False


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class PolicyStore:
    def __init__(self, box: SecretBox, ttl: float) -> None:
        self._box = box
        self._ttl = ttl
        self._snapshot: PolicySnapshot | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()
        self._keys: dict[str, tuple[float, GatewayKey | None]] = {}

    def invalidate(self) -> None:
        self._snapshot = None
        self._keys.clear()

    async def get(self, db: Database) -> PolicySnapshot:
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - self._loaded_at < self._ttl:
            return snapshot
        async with self._lock:
            if self._snapshot is not None and time.monotonic() - self._loaded_at < self._ttl:
                return self._snapshot
            loaded_at = time.monotonic()
            snapshot = await self._load(db)
            self._snapshot, self._loaded_at = snapshot, loaded_at
            return snapshot

    def _decrypt(self, value: str | None, context: str) -> str | None:
        if not value:
            return None
        try:
            return self._box.decrypt(value, context=context)
        except DecryptionError:
            log.error("a stored gateway credential (%s) cannot be decrypted with this project's key", context)
            return None

    async def _load(self, db: Database) -> PolicySnapshot:
        async with db.as_owner() as cur:
            await cur.execute(
                "select allowed_models, max_tokens_cap, cache_enabled, anon_access, allowed_request_fields "
                "from ai.policy"
            )
            policy = await cur.fetchone() or {}
            await cur.execute("select * from ai.limits")
            limits = await cur.fetchall()
            await cur.execute("select * from ai.configurations")
            configurations = await cur.fetchall()
            await cur.execute("select name, base_url, encrypted_key from ai.providers")
            providers = await cur.fetchall()
            await cur.execute("select name, encrypted_value from ai.credentials")
            credentials = {r["name"]: r["encrypted_value"] for r in await cur.fetchall()}
            await cur.execute("select model_id, prompt, completion, request, image from ai.model_prices")
            prices = await cur.fetchall()
        allowed = policy.get("allowed_models")
        return PolicySnapshot(
            allowed_models=tuple(allowed) if allowed is not None else None,
            max_tokens_cap=policy.get("max_tokens_cap"),
            cache_enabled=bool(policy.get("cache_enabled")),
            anon_access=bool(policy.get("anon_access")),
            allowed_request_fields=frozenset(policy.get("allowed_request_fields") or ()),
            limits={
                (r["scope"], r["subject"]): LimitRule(
                    r["scope"],
                    r["subject"],
                    r["rpm"],
                    r["tpm"],
                    r["tokens_per_day"],
                    r["usd_per_day"],
                    r["usd_per_month"],
                )
                for r in limits
            },
            configurations={
                r["model_id"]: Configuration(
                    id=str(r["id"]),
                    model_id=r["model_id"],
                    provider=r["provider"],
                    system_prompt=r["system_prompt"],
                    client_system_messages=r["client_system_messages"],
                    fallback_models=tuple(r["fallback_models"] or ()),
                    input_modality=tuple(r["input_modality"] or ()),
                    output_modality=tuple(r["output_modality"] or ()),
                )
                for r in configurations
            },
            providers={
                r["name"]: ProviderRecord(
                    r["name"], r["base_url"], self._decrypt(r["encrypted_key"], f"ai.provider.{r['name']}")
                )
                for r in providers
            },
            prices={
                r["model_id"]: Price(r["prompt"], r["completion"], r["request"], r["image"], None)
                for r in prices
            },
            byok_key=self._decrypt(credentials.get(OPENROUTER_KEY), OPENROUTER_KEY),
            management_key=self._decrypt(credentials.get(MANAGEMENT_KEY), MANAGEMENT_KEY),
        )

    async def gateway_key(self, db: Database, key: str) -> GatewayKey | None:
        digest = hash_key(key)
        cached = self._keys.get(digest)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        async with db.as_owner() as cur:
            await cur.execute(
                "select id::text, name, models, max_tokens from ai.gateway_keys "
                "where key_hash = %s and revoked_at is null",
                (digest,),
            )
            row: dict[str, Any] | None = await cur.fetchone()
        found = (
            GatewayKey(
                row["id"],
                row["name"],
                tuple(row["models"]) if row["models"] is not None else None,
                row["max_tokens"],
            )
            if row
            else None
        )
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[digest] = (time.monotonic(), found)
        return found
