"""The gateway built, and closed, in one place: `build_gateway` at startup, `close_gateway` at shutdown.

Everything a running gateway holds is made here from the settings, the secret box and database access, so
the wiring is read top to bottom in one function and a test builds a gateway exactly as the server does.
`close_gateway` must run before the database pool closes: it writes the ledger rows still queued.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx2

from kilnbase.ai import credentials, limits
from kilnbase.ai.cache import ResponseCache
from kilnbase.ai.catalog import ModelCatalog
from kilnbase.ai.counters_redis import RedisCounters
from kilnbase.ai.failover import Failover
from kilnbase.ai.gateway import Gateway
from kilnbase.ai.ledger import LedgerWriter
from kilnbase.ai.lifecycle import CallLifecycle
from kilnbase.ai.policy import PolicyStore
from kilnbase.ai.pricing import Pricing
from kilnbase.ai.provider_routing import ProviderRouting
from kilnbase.ai.providers import openrouter
from kilnbase.ai.redaction import Redactor
from kilnbase.ai.reliability import CircuitBreaker
from kilnbase.ai.upstream_http import HttpPool
from kilnbase.config import Settings
from kilnbase.db.session import Database
from kilnbase.keys.secret_box import SecretBox


def build_gateway(
    settings: Settings,
    box: SecretBox,
    database: Callable[[], Database],
    managed: credentials.ManagedKeySource | None = None,
) -> Gateway:
    """`database` is called when the gateway needs the database (the pool may be opened after this)."""
    client = httpx2.AsyncClient(
        timeout=httpx2.Timeout(settings.ai_read_timeout, connect=settings.ai_connect_timeout),
        limits=httpx2.Limits(max_connections=1024, max_keepalive_connections=256),
    )
    if managed is None and settings.ai_managed_key_url:
        managed = credentials.HttpManagedKeySource(
            settings.ai_managed_key_url,
            settings.ai_managed_key_token,
            client,
            settings.ai_managed_key_ttl,
        )
    pool = HttpPool(connect_timeout=settings.ai_connect_timeout, read_timeout=settings.ai_read_timeout)
    redactor = Redactor(settings.openrouter_api_key, settings.ai_managed_key_token)
    routing = ProviderRouting(
        openrouter(settings.openrouter_base_url, client, pool),
        client,
        pool,
        managed,
        settings.openrouter_api_key,
        redactor,
    )
    catalog = ModelCatalog(settings.ai_catalog_ttl, redactor)
    policy = PolicyStore(box, settings.ai_policy_ttl)
    counters: limits.CounterStore = (
        RedisCounters(settings.ai_redis_url) if settings.ai_redis_url else limits.PostgresCounters(database)
    )
    ledger = LedgerWriter(database, counters)
    breaker = CircuitBreaker(settings.ai_breaker_threshold, settings.ai_breaker_cooldown)
    lifecycle = CallLifecycle(
        settings=settings,
        database=database,
        policy=policy,
        catalog=catalog,
        routing=routing,
        pricing=Pricing(catalog, database),
        failover=Failover(routing, breaker, settings),
        counters=counters,
        ledger=ledger,
        redactor=redactor,
    )
    return Gateway(
        settings=settings,
        client=client,
        pool=pool,
        routing=routing,
        catalog=catalog,
        policy=policy,
        breaker=breaker,
        cache=ResponseCache(settings.ai_cache_ttl, settings.ai_cache_max_entries),
        ledger=ledger,
        lifecycle=lifecycle,
    )


async def close_gateway(gateway: Gateway) -> None:
    """Write the usage rows still queued (they settle the counters too), then close the counters' store and
    the upstream connections."""
    await gateway.ledger.close()
    await gateway.lifecycle.counters.close()
    await gateway.client.aclose()
    await gateway.pool.aclose()
