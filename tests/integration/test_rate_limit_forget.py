"""`RateLimiter.forget`: a counted event that did not happen after all (an email the SMTP server refused)
gives its window back, so the retry is allowed. Against the machine's Redis (127.0.0.1:6379) and the
project's Postgres, the fallback that counts while Redis cannot be reached."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from kilnbase.db.session import Database
from kilnbase.http.rate_limit import PostgresRateLimiter, RedisRateLimiter, redis_prefix
from tests.support.postgres import database_for
from tests.support.redis_server import MACHINE_REDIS_URL, machine_redis_or_skip
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio

REDIS_URL = MACHINE_REDIS_URL
WINDOW_SECONDS = 60


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = database_for(database_url)
    await db.open()
    yield db
    await db.close()


def _prefix() -> str:
    """A project of its own for each test: the machine's Redis is shared."""
    return redis_prefix(uuid.uuid4().hex)


async def test_forget_gives_the_window_back_in_redis(database: Database) -> None:
    client = machine_redis_or_skip()
    prefix = _prefix()
    limiter = RedisRateLimiter(REDIS_URL, prefix, PostgresRateLimiter(database))
    try:
        assert await limiter.hit("email:a@example.com", 1, WINDOW_SECONDS) is None
        assert await limiter.hit("email:b@example.com", 1, WINDOW_SECONDS) is None
        assert await limiter.hit("email:a@example.com", 1, WINDOW_SECONDS) is not None  # the limit holds
        await limiter.forget("email:a@example.com")
        assert client.exists(prefix + "email:a@example.com") == 0
        assert await limiter.hit("email:a@example.com", 1, WINDOW_SECONDS) is None  # the retry is allowed
        # Only that key's window went: another's still holds.
        assert await limiter.hit("email:b@example.com", 1, WINDOW_SECONDS) is not None
    finally:
        client.delete(prefix + "email:a@example.com", prefix + "email:b@example.com")
        await limiter.close()


async def test_forget_leaves_another_project_sharing_the_redis_alone(database: Database) -> None:
    machine_redis_or_skip()
    key = f"email:{uuid.uuid4().hex}@example.com"
    ours, theirs = (RedisRateLimiter(REDIS_URL, _prefix(), PostgresRateLimiter(database)) for _ in range(2))
    try:
        for limiter in (ours, theirs):
            assert await limiter.hit(key, 1, WINDOW_SECONDS) is None
        await ours.forget(key)
        assert await ours.hit(key, 1, WINDOW_SECONDS) is None
        assert await theirs.hit(key, 1, WINDOW_SECONDS) is not None
    finally:
        for limiter in (ours, theirs):
            await limiter.forget(key)
            await limiter.close()


async def test_forget_reaches_a_hit_counted_in_postgres_while_redis_was_away(database: Database) -> None:
    # While Redis cannot be reached the hit is counted in Postgres; forgetting it must find it there too.
    away = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0", _prefix(), PostgresRateLimiter(database))
    key = f"email:{uuid.uuid4().hex}@example.com"
    try:
        assert await away.hit(key, 1, WINDOW_SECONDS) is None
        assert await away.hit(key, 1, WINDOW_SECONDS) is not None
        await away.forget(key)  # (Redis still away: said nothing, and the fallback forgot)
        assert await away.hit(key, 1, WINDOW_SECONDS) is None
    finally:
        await away.forget(key)
        await away.close()
