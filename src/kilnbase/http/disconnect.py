"""Stop work the client no longer waits for: a query whose client hung up is cancelled, not left running."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.types import Receive

T = TypeVar("T")

#: How long work runs before anyone watches for the client leaving. Most requests finish well within it and
#: never pay for the watcher (a task per request costs about 6% of a cached records read); a slow one is
#: cancelled at most this much later than it could have been.
WATCH_AFTER_SECONDS = 0.05


class ClientWatch:
    """One piece of work the client may leave (`watch_client`): when it started, and its watcher once it has
    one."""

    __slots__ = ("left", "receive", "started", "task", "unwatched", "watcher")

    def __init__(self, task: asyncio.Task[Any], receive: Receive, unwatched: _Unwatched) -> None:
        self.task = task
        self.receive = receive
        self.unwatched = unwatched
        self.started = unwatched.loop.time()
        self.watcher: asyncio.Task[None] | None = None
        self.left = False

    async def watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.left = True
        self.task.cancel()

    def excuses(self) -> bool:
        """Asked on `CancelledError`: whether it came from the client leaving, in which case the task is no
        longer being cancelled and the work's answer is to be dropped."""
        if self.left:
            self.task.uncancel()
        return self.left

    def end(self) -> None:
        """The work is over (done, failed or cancelled): stop watching."""
        if self.watcher is None:
            self.unwatched.work.pop(self, None)
        else:
            self.watcher.cancel()


class _Unwatched:
    """The work of one event loop that has no watcher yet, oldest first, and the one timer that gives a
    watcher to each when it has run for `WATCH_AFTER_SECONDS`.

    One timer for all of a loop's work rather than one per piece: a timer per request (its handle, a push on
    the loop's heap, its cancel) cost about 2% of a cached records read; adding to and removing from a dict
    costs next to nothing. The timer is due when the oldest piece is, so each watcher starts when it would
    have with its own timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.work: dict[ClientWatch, None] = {}  # in the order it started (`loop.time()` only grows)
        self.timer: asyncio.TimerHandle | None = None

    def add(self, watch: ClientWatch) -> None:
        self.work[watch] = None
        if self.timer is None:
            self.timer = self.loop.call_at(watch.started + WATCH_AFTER_SECONDS, self.start_watchers)

    def start_watchers(self) -> None:
        self.timer = None
        due = self.loop.time() - WATCH_AFTER_SECONDS
        work = self.work
        while work:
            oldest = next(iter(work))
            if oldest.started > due:
                self.timer = self.loop.call_at(oldest.started + WATCH_AFTER_SECONDS, self.start_watchers)
                return
            del work[oldest]
            oldest.watcher = self.loop.create_task(oldest.watch())


_unwatched: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Unwatched] = weakref.WeakKeyDictionary()


def _unwatched_of(loop: asyncio.AbstractEventLoop) -> _Unwatched:
    unwatched = _unwatched.get(loop)
    if unwatched is None:
        unwatched = _unwatched[loop] = _Unwatched(loop)
    return unwatched


def watch_client(receive: Receive) -> ClientWatch:
    """Watch for the client leaving while the current task works: if it does, the task is cancelled (psycopg
    then cancels the query on the server; an upstream call is closed). Catch `CancelledError` around the work
    and ask `excuses()`; call `end()` when the work is over (`unless_client_leaves` does all three).

    The watcher (a task reading `receive` until `http.disconnect`) starts only once the work has run for
    `WATCH_AFTER_SECONDS` (`_Unwatched`): most work never needs one. Call it only after the request body has
    been read: the watcher consumes `receive`."""
    task = asyncio.current_task()
    assert task is not None
    watch = ClientWatch(task, receive, _unwatched_of(task.get_loop()))
    watch.unwatched.add(watch)
    return watch


async def unless_client_leaves(receive: Receive, work: Awaitable[T]) -> T | None:
    """Run `work` in this task, and return its result, or None if the client left first (`watch_client`).
    (The records routes watch in their own frame: one less for every resumption of a request's task.)"""
    watch = watch_client(receive)
    try:
        return await work
    except asyncio.CancelledError:
        if watch.excuses():
            return None
        raise
    finally:
        watch.end()
