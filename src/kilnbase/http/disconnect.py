"""Stop work the client no longer waits for: a query whose client hung up is cancelled, not left running."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

T = TypeVar("T")


async def unless_client_leaves(receive: Receive, work: Awaitable[T]) -> T | None:
    """Run `work` in this task; if the client disconnects first, cancel it (psycopg then cancels the query on
    the server; an upstream call is closed) and return None. One watcher task per call, instead of a task
    group around two (this is on every request of the hot paths).

    Call it only after the request body has been read: the watcher consumes `receive`."""
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def watch() -> None:
        nonlocal left
        while (await receive())["type"] != "http.disconnect":
            pass
        left = True
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if left:
            task.uncancel()
            return None
        raise
    finally:
        watcher.cancel()
