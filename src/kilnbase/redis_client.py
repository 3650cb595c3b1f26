"""The one way Kilnbase opens Redis (`REDIS_URL`): a bounded pool whose callers wait for a connection.

redis-py's default pool allows 100 connections and raises `MaxConnectionsError` on the 101st call in flight.
A burst is normal here (a thousand realtime sockets leaving at once is a thousand presence updates), and a
failed leave left its socket in the room and the presence list for good. With a blocking pool the burst
queues, Redis sees a bounded number of connections per process, and only a Redis that stays unreachable
fails a call (after `WAIT_SECONDS`).
"""

from __future__ import annotations

import redis.asyncio as aioredis

#: Connections one process opens to Redis per client, at most.
MAX_CONNECTIONS = 64
#: How long a call waits for a free connection before it fails.
WAIT_SECONDS = 10.0
#: What a call raises when Redis cannot be reached or answer (refused, reset, timed out, no free connection):
#: the one thing every caller catches to degrade instead of failing the request.
REDIS_DOWN: tuple[type[Exception], ...] = (aioredis.RedisError, OSError)


def connect_redis(url: str) -> aioredis.Redis:
    """A client for `url` (connections are opened on first use)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=WAIT_SECONDS
    )
    return aioredis.Redis.from_pool(pool)
