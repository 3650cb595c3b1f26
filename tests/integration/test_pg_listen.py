"""`pg_listen.notifications`: every listener's notifications, in order, none lost, and a lost connection
raises (so the listener reconnects)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection, Notify
from psycopg.conninfo import make_conninfo

from kilnbase.pg_listen import ListenedView, notifications
from tests.support.postgres import TestCluster
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.anyio

CHANNEL = "kb_listen_test"


@pytest.fixture
async def listener(database_url: str) -> AsyncIterator[AsyncConnection[Any]]:
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(f"LISTEN {CHANNEL}")
        yield conn


async def notify(database_url: str, *payloads: str) -> None:
    """The payloads, sent in one transaction (Postgres delivers them together, at COMMIT)."""
    async with await AsyncConnection.connect(database_url) as conn:
        for payload in payloads:
            await conn.execute("select pg_notify(%s, %s)", (CHANNEL, payload))
        await conn.commit()


async def take(conn: AsyncConnection[Any], count: int) -> list[Notify]:
    received: list[Notify] = []
    async with asyncio.timeout(10):
        async for item in notifications(conn):
            received.append(item)
            if len(received) == count:
                break
    return received


async def test_notifications_sent_while_waiting_arrive_in_order(
    listener: AsyncConnection[Any], database_url: str
) -> None:
    waiting = asyncio.create_task(take(listener, 3))
    await asyncio.sleep(0.2)  # the listener is waiting on its socket by now
    assert not waiting.done()
    await notify(database_url, "one")
    await notify(database_url, "two", "three")  # two in one packet
    received = await waiting
    assert [n.payload for n in received] == ["one", "two", "three"]
    assert {n.channel for n in received} == {CHANNEL}
    assert all(n.pid > 0 for n in received)


async def test_notifications_received_during_another_statement_come_first(
    listener: AsyncConnection[Any], database_url: str
) -> None:
    # As a view loads after LISTEN: psycopg reads the notification while it runs the load's statement.
    await notify(database_url, "during the load")
    await listener.execute("select pg_sleep(0.1)")
    waiting = asyncio.create_task(take(listener, 2))
    await asyncio.sleep(0.1)
    await notify(database_url, "after")
    assert [n.payload for n in await waiting] == ["during the load", "after"]


async def test_a_payload_is_decoded_in_the_connection_encoding(
    listener: AsyncConnection[Any], database_url: str
) -> None:
    waiting = asyncio.create_task(take(listener, 1))
    await notify(database_url, "café ☕")
    assert [n.payload for n in await waiting] == ["café ☕"]


async def test_a_lost_connection_raises(listener: AsyncConnection[Any], database_url: str) -> None:
    waiting = asyncio.create_task(take(listener, 1))
    await asyncio.sleep(0.1)
    async with await AsyncConnection.connect(database_url, autocommit=True) as admin:
        await admin.execute("select pg_terminate_backend(%s)", (listener.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError):
        await waiting


async def test_cancelling_the_wait_leaves_the_connection_usable(
    listener: AsyncConnection[Any], database_url: str
) -> None:
    waiting = asyncio.create_task(take(listener, 1))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await notify(database_url, "later")
    assert [n.payload for n in await take(listener, 1)] == ["later"]


class _Quiet(ListenedView):
    """A view that holds nothing: only its connection's coming and going is looked at."""

    channel = "kb_listen_loss"
    application_name = f"kb-listen-loss-{uuid.uuid4().hex[:8]}"

    async def load(self, conn: AsyncConnection[Any]) -> None:
        return None

    def heard(self, payload: str) -> Awaitable[None] | None:
        return None


async def test_a_lost_connection_is_logged_once_and_its_return_once(
    cluster: TestCluster, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Retried every second, a lost connection used to log every retry: five listeners, five lines a second
    # for as long as the database was away.
    caplog.set_level(logging.WARNING, logger="kilnbase")
    assert cluster.server.port is not None
    proxy = TcpProxy("127.0.0.1", cluster.server.port)
    view = _Quiet(make_conninfo(database_url, host="127.0.0.1", port=proxy.port))
    try:
        await view.start()
        proxy.cut()
        await asyncio.sleep(3.5)  # three retries at the most (after 0.5-1 s, 1-2 s more, 2-4 s more)
        proxy.restore()
        await _until_logged(caplog, "connected again", 1, seconds=20)
        assert len(_lines(caplog, "lost its connection")) == 1
        assert "retrying in" in _lines(caplog, "lost its connection")[0]
        # Connected, the listener starts over from the shortest pause: lost again, it is back within a
        # second or so of the database, not after the 8-16 s its fourth retry would have waited.
        proxy.cut()
        await _until_logged(caplog, "lost its connection", 2, seconds=5)
        proxy.restore()
        await _until_logged(caplog, "connected again", 2, seconds=3)
    finally:
        await view.stop()
        proxy.cut()


async def _until_logged(caplog: pytest.LogCaptureFixture, words: str, count: int, *, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while len(_lines(caplog, words)) < count:
            await asyncio.sleep(0.05)
    assert len(_lines(caplog, words)) == count


def _lines(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    start = f"{_Quiet.application_name} {words}"
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]
