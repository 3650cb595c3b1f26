"""Stop work the client no longer waits for: a query whose client hung up is cancelled, not left running."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

T = TypeVar("T")

#: How long work runs before anyone watches for the client leaving. Most requests finish well within it and
#: never pay for the watcher (a task per request costs about 6% of a cached records read); a slow one is
#: cancelled at most this much later than it could have been.
WATCH_AFTER_SECONDS = 0.05


async def unless_client_leaves(receive: Receive, work: Awaitable[T]) -> T | None:
    """Run `work` in this task; if the client disconnects first, cancel it (psycopg then cancels the query on
    the server; an upstream call is closed) and return None.

    The watcher (a task reading `receive` until `http.disconnect`) starts only once the work has run for
    `WATCH_AFTER_SECONDS`: a timer is far cheaper than a task. Call it only after the request body has been
    read: the watcher consumes `receive`."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    left = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal left
        while (await receive())["type"] != "http.disconnect":
            pass
        left = True
        task.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    timer = loop.call_later(WATCH_AFTER_SECONDS, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        if left:
            task.uncancel()
            return None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
