"""Rate limits for public endpoints: a fixed-window counter per key.

The interface is one coroutine, `hit(key, limit, window_seconds)`, so a Redis-backed limiter (INCR + EXPIRE)
can replace the in-process one when several API processes share the load. In-process is the default: with
one process it is exact, with N processes each allows up to N times the limit.
"""

from __future__ import annotations

import time
from typing import Protocol

from kilnbase.http.errors import ApiError

_PRUNE_EVERY = 4096


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window_seconds: float) -> float | None:
        """Count one event; None when allowed, else the seconds until the window resets."""
        ...


class InProcessRateLimiter:
    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}
        self._hits = 0

    async def hit(self, key: str, limit: int, window_seconds: float) -> float | None:
        now = time.monotonic()
        self._hits += 1
        if self._hits % _PRUNE_EVERY == 0:
            self._windows = {k: v for k, v in self._windows.items() if v[0] > now}
        resets_at, count = self._windows.get(key, (0.0, 0))
        if resets_at <= now:
            resets_at, count = now + window_seconds, 0
        if count >= limit:
            return resets_at - now
        self._windows[key] = (resets_at, count + 1)
        return None

    def reset(self) -> None:
        self._windows.clear()


async def enforce(limiter: RateLimiter, key: str, limit: int, window_seconds: float) -> None:
    """Raise InsForge's 429 when `key` is over its limit."""
    retry_after = await limiter.hit(key, limit, window_seconds)
    if retry_after is not None:
        seconds = max(1, int(retry_after + 0.999))
        raise ApiError(
            429,
            "TOO_MANY_REQUESTS",
            f"Too many requests; try again in {seconds} seconds.",
            f"Wait {seconds} seconds before retrying.",
        )
