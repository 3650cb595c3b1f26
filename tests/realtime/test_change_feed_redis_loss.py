"""The change feed's Redis subscription (how changes read by one process reach the others): when Redis goes
away it says so once, tries again less and less often, and once Redis is back it hears the other processes
again. Retried every second, it used to log every retry for as long as Redis was away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import pytest
import redis.asyncio as redis

from kilnbase.config import RealtimeSettings
from kilnbase.realtime.change_feed import ChangeFeed
from tests.support.postgres import database_for
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.anyio

REDIS_PORT = 6379


async def test_a_lost_redis_is_logged_once_and_heard_again_once_back(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kilnbase")
    proxy = TcpProxy("127.0.0.1", REDIS_PORT)
    prefix = f"kbtest-{uuid.uuid4().hex[:8]}:"
    feed = ChangeFeed(
        RealtimeSettings(),
        database_url,
        database_for(database_url),
        redis_url=f"redis://127.0.0.1:{proxy.port}/0",
        prefix=prefix,
    )
    direct = redis.Redis(host="127.0.0.1", port=REDIS_PORT)
    receiving = asyncio.create_task(feed._receive())

    async def heard_a_wake(seconds: float) -> None:
        """Another process's wake (its first change subscriber) reaches this one."""
        feed._subscribed.clear()
        async with asyncio.timeout(seconds):
            while not feed._subscribed.is_set():
                await direct.publish(f"{prefix}changes:wake", b"wake")
                await asyncio.sleep(0.05)

    try:
        await heard_a_wake(10)
        proxy.cut()
        await _until_logged(caplog, "lost its connection", seconds=10)
        await asyncio.sleep(3.5)  # three retries at the most (after 0.5-1 s, 1-2 s more, 2-4 s more)
        assert len(_lines(caplog, "lost its connection")) == 1
        assert _lines(caplog, "has had no connection") == []
        proxy.restore()
        await _until_logged(caplog, "connected again", seconds=15)
        await heard_a_wake(5)
    finally:
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiving
        proxy.cut()
        await direct.aclose()


async def _until_logged(caplog: pytest.LogCaptureFixture, words: str, *, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while not _lines(caplog, words):
            await asyncio.sleep(0.05)


def _lines(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    start = f"change feed's Redis subscription {words}"
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]
