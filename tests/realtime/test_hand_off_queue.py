"""The Engine.IO sockets' packet queue: awaited as Engine.IO's writer awaits it (`wait_for(queue.get())`), it
keeps `asyncio.Queue`'s order, timeouts and `task_done`/`join` accounting."""

from __future__ import annotations

import asyncio

import pytest

from kilnbase.realtime.direct_emit import HandOffQueue


def test_items_come_out_in_order_whether_a_getter_waits_or_not() -> None:
    async def scenario() -> list[object]:
        queue = HandOffQueue()
        waiting = asyncio.ensure_future(asyncio.wait_for(queue.get(), 5))
        await asyncio.sleep(0)
        await queue.put("a")
        await queue.put("b")
        got = [await waiting, await asyncio.wait_for(queue.get(), 5), queue.empty()]
        queue.put_nowait("c")
        got.append(await queue.get())
        return got

    assert asyncio.run(scenario()) == ["a", "b", True, "c"]


def test_a_getter_that_timed_out_is_passed_over() -> None:
    async def scenario() -> tuple[object, object]:
        queue = HandOffQueue()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(queue.get(), 0.01)
        await queue.put("kept")
        kept = await queue.get()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(queue.get(), 0.01)
        waiting = asyncio.ensure_future(asyncio.wait_for(queue.get(), 5))
        await asyncio.sleep(0)
        await queue.put("next")
        return kept, await waiting

    assert asyncio.run(scenario()) == ("kept", "next")


def test_join_waits_for_every_item_handed_over() -> None:
    async def scenario() -> bool:
        queue = HandOffQueue()
        waiting = queue.get()
        await queue.put("x")
        assert await waiting == "x"
        joined = asyncio.ensure_future(queue.join())
        await asyncio.sleep(0)
        pending = not joined.done()
        queue.task_done()
        await asyncio.wait_for(joined, 1)
        return pending

    assert asyncio.run(scenario())
