"""`db.claim_loop.ClaimLoop`, the loop the schedules and webhooks runners share, with a subclass that keeps
its work in memory: every item claimed is handled, a NOTIFY on its channel wakes it at once, and an item
whose handling fails unexpectedly is logged and does not stop the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
import pytest

from kilnbase.db.claim_loop import ClaimLoop

pytestmark = pytest.mark.anyio

CHANNEL = "kb_claim_loop_test"


class Listed(ClaimLoop[str]):
    """Claims what `queue` holds; an item named `boom` fails as a bug would."""

    def __init__(self, conninfo: str) -> None:
        super().__init__(
            name="claim-loop-test",
            channel=CHANNEL,
            conninfo=conninfo,
            max_in_flight=4,
            prune_seconds=3600,
            log=logging.getLogger("kilnbase.tests.claim_loop"),
        )
        self.queue: list[str] = []
        self.handled: list[str] = []

    async def claim(self, most: int) -> list[str]:
        taken, self.queue = self.queue[:most], self.queue[most:]
        return taken

    async def handle(self, item: str) -> None:
        if item == "boom":
            raise RuntimeError("a bug")
        self.handled.append(item)

    async def seconds_to_next(self) -> float:
        return 3600.0 if not self.queue else 0.0

    async def prune(self) -> int:
        return 0

    def task_name(self, item: str) -> str:
        return f"claim-loop-test-{item}"


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def test_a_notify_wakes_it_and_a_failing_item_is_logged(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    loop = Listed(database_url)
    async with loop.claiming():
        loop.queue += ["boom", "one"]
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"NOTIFY {CHANNEL}")
        await until(lambda: loop.handled == ["one"])
        loop.queue.append("two")  # (the loop sleeps for an hour: only a NOTIFY wakes it)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"NOTIFY {CHANNEL}")
        await until(lambda: loop.handled == ["one", "two"])
    failed = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert len(failed) == 1 and "claim-loop-test-boom" in failed[0].getMessage()
