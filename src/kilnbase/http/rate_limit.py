"""Rate limits for public endpoints: a fixed-window counter per key, shared by every process of the project.

The counters live where every API process sees them: in Postgres by default (`system.rate_limits`, an
UNLOGGED table: a crash forgets the counts, which only resets the windows), or in Redis when
`KILNBASE_RATE_LIMIT_REDIS_URL` (or `REDIS_URL`) is set. Either way one hit is one round trip that counts
and answers at once (an upsert, a Lua script), so N processes together allow the limit, not N times it.

The interface is one coroutine, `hit(key, limit, window_seconds)`, and `forget(key)` for a counted event
that did not happen after all (an email the SMTP server refused must not hold up its retry); `enforce`
turns a refusal into InsForge's 429. Limits are never silently lifted: while Redis cannot be reached, the
Postgres counters take over (and the server logs it every `_FALLBACK_LOG_SECONDS`), so sign-ins keep
working and stay limited; a limiter that cannot reach Postgres either raises (the request fails with a
500).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from typing import Protocol

from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError
from kilnbase.redis_client import REDIS_DOWN, connect_redis

log = logging.getLogger("kilnbase.rate_limit")

#: While Redis is unreachable, the fallback is logged at most this often.
_FALLBACK_LOG_SECONDS = 30.0
#: Expired windows are deleted on every this-many hits of a process.
_PRUNE_EVERY = 1024

_HIT_SQL = """
insert into system.rate_limits as r (key, hits, resets_at)
values (%(key)s, 1, now() + make_interval(secs => %(window)s))
on conflict (key) do update set
    hits = case when r.resets_at <= now() then 1 else r.hits + 1 end,
    resets_at = case when r.resets_at <= now() then excluded.resets_at else r.resets_at end
returning hits, extract(epoch from r.resets_at - now())::float8 as remaining
"""
_PRUNE_SQL = "delete from system.rate_limits where resets_at < now()"

#: Count one hit; the window starts with the first. Returns {hits, milliseconds left in the window}.
_HIT_SCRIPT = """
local hits = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {hits, ttl}
"""


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window_seconds: float) -> float | None:
        """Count one event; None when allowed, else the seconds until the window resets."""
        ...

    async def forget(self, key: str) -> None:
        """Drop `key`'s window, as if nothing had been counted in it."""
        ...

    async def close(self) -> None: ...


class PostgresRateLimiter:
    """Counters in `system.rate_limits` (migration 0050), one autocommit upsert per hit on the owner pool."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._hits = 0

    async def hit(self, key: str, limit: int, window_seconds: float) -> float | None:
        self._hits += 1
        async with self._database.owner_pool.connection() as conn:
            if self._hits % _PRUNE_EVERY == 0:
                await conn.execute(_PRUNE_SQL)
            cur = await conn.execute(_HIT_SQL, {"key": key, "window": window_seconds})
            row = await cur.fetchone()
        assert row is not None
        hits, remaining = row
        return None if hits <= limit else max(float(remaining), 0.0)

    async def forget(self, key: str) -> None:
        async with self._database.owner_pool.connection() as conn:
            await conn.execute("delete from system.rate_limits where key = %s", (key,))

    async def close(self) -> None:
        """Nothing of its own to close: the pool belongs to the database."""


def redis_prefix(jwt_secret: str) -> str:
    """This project's key prefix in Redis: several projects may share one, and every process of a project
    shares its JWT secret (the prefix is a hash of it, which tells nothing about it)."""
    project = hmac.new(jwt_secret.encode(), b"kilnbase:rate-limit", "sha256").hexdigest()[:16]
    return f"kilnbase:{project}:rate:"


class RedisRateLimiter:
    """Counters in Redis under `prefix` (one key per counter, expiring with its window); `fallback`'s while
    Redis cannot be reached."""

    def __init__(self, url: str, prefix: str, fallback: RateLimiter) -> None:
        self._redis = connect_redis(url)
        self._script = self._redis.register_script(_HIT_SCRIPT)
        self._prefix = prefix
        self._fallback = fallback
        self._logged_at = -_FALLBACK_LOG_SECONDS

    async def hit(self, key: str, limit: int, window_seconds: float) -> float | None:
        window_ms = max(1, int(window_seconds * 1000))
        try:
            hits, ttl_ms = await self._script(keys=[self._prefix + key], args=[window_ms])
        except REDIS_DOWN as exc:
            if time.monotonic() - self._logged_at >= _FALLBACK_LOG_SECONDS:
                self._logged_at = time.monotonic()
                log.warning("rate limits: Redis unreachable (%s), counting in Postgres", type(exc).__name__)
            return await self._fallback.hit(key, limit, window_seconds)
        return None if int(hits) <= limit else max(int(ttl_ms), 0) / 1000

    async def forget(self, key: str) -> None:
        """In Redis, and in the fallback too: the hit may have been counted there while Redis was away."""
        with contextlib.suppress(*REDIS_DOWN):
            await self._redis.delete(self._prefix + key)
        await self._fallback.forget(key)

    async def close(self) -> None:
        await self._redis.aclose()


async def seconds_to_wait(limiter: RateLimiter, key: str, limit: int, window_seconds: float) -> int | None:
    """Count one event for `key`: None when allowed, else the whole seconds (at least 1) to tell the caller to
    wait, for each refusal's own words."""
    retry_after = await limiter.hit(key, limit, window_seconds)
    return None if retry_after is None else max(1, int(retry_after + 0.999))


async def enforce(limiter: RateLimiter, key: str, limit: int, window_seconds: float) -> None:
    """Raise InsForge's 429 when `key` is over its limit."""
    seconds = await seconds_to_wait(limiter, key, limit, window_seconds)
    if seconds is not None:
        raise ApiError(
            429,
            "TOO_MANY_REQUESTS",
            f"Too many requests; try again in {seconds} seconds.",
            f"Wait {seconds} seconds before retrying.",
        )
