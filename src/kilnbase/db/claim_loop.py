"""The loop behind each table of work that server processes share: claim what is due, do it, sleep until
the next is due or a NOTIFY says something new is.

Schedules' runs and database webhooks' deliveries are both rows that come due at a time the database
knows. Every server process runs one loop per kind; the subclass's `claim` takes due rows with `FOR UPDATE
SKIP LOCKED` and leases them in the same transaction, so each is claimed by exactly one process, and this
class does the rest, the same way for both:

- **Doing.** Each claimed item is handled in a task of its own, at most `max_in_flight` at once; a task's
  end wakes the loop (a place is free, and its row may be due again).
- **Sleeping.** Until `seconds_to_next` (the subclass asks the database), or until woken: by a NOTIFY on
  `channel`, by a (re)connect of that listener (what changed while it was away is then looked at), or by
  a task's end. With every place taken, it sleeps until one frees. A row due but not claimed here is
  another process's for a moment: looked at again after `_BUSY_SECONDS`. Nothing polls: an idle process
  wakes only for `prune`, every `prune_seconds`.
- **Failing.** A lost database backs off as `pg_listen.ConnectionLoss` does (logged once); any other
  error of the loop's own is logged and tried again after `_AFTER_ERROR_SECONDS`, since a bug must not
  stop the work of this process for good. An item's own failure is the subclass's to record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import AsyncConnection

from kilnbase.pg_listen import ConnectionLoss, ListenedView

T = TypeVar("T")

_AFTER_ERROR_SECONDS = 5.0
#: Added to a sleep until an item is due, so that it is due by the time the loop claims.
_WAKE_MARGIN_SECONDS = 0.005
#: The pause when an item is due but was not claimed here: another process is claiming it.
_BUSY_SECONDS = 0.05


class _Wakeups(ListenedView):
    """Sets the loop's event on every notification on its channel, and on every (re)connect."""

    def __init__(self, conninfo: str, channel: str, application_name: str, wake: asyncio.Event) -> None:
        self.channel = channel
        self.application_name = application_name
        super().__init__(conninfo)
        self._wake = wake

    async def load(self, conn: AsyncConnection[Any]) -> None:
        self._wake.set()

    def heard(self, payload: str) -> None:
        self._wake.set()


class ClaimLoop(ABC, Generic[T]):
    """One process's loop over one kind of due work (see the module's docstring). `name` (`schedules`)
    names its listening connection and its task (`kilnbase-schedules`), and it in logs (`schedules
    runner`)."""

    def __init__(
        self,
        *,
        name: str,
        channel: str,
        conninfo: str,
        max_in_flight: int,
        prune_seconds: float,
        log: logging.Logger,
    ) -> None:
        self._name = f"{name} runner"
        self._slug = f"kilnbase-{name}"
        self._max_in_flight = max_in_flight
        self._prune_seconds = prune_seconds
        self._log = log
        self._wake = asyncio.Event()
        self._wakeups = _Wakeups(conninfo, channel, self._slug, self._wake)
        self._loss = ConnectionLoss(self._name, log)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._next_prune = 0.0

    @abstractmethod
    async def claim(self, most: int) -> list[T]:
        """Claim up to `most` due items (none when `most` is 0 or less), leased to this process."""

    @abstractmethod
    async def handle(self, item: T) -> None:
        """Do one claimed item and record how it went; never raises but for a bug."""

    @abstractmethod
    async def seconds_to_next(self) -> float:
        """How long until the soonest item that may be claimed (the next prune at the latest:
        `wake_in` makes the one from the other)."""

    @abstractmethod
    async def prune(self) -> int:
        """The periodic clean-up (old logs); how many rows it deleted."""

    @abstractmethod
    def task_name(self, item: T) -> str:
        """The name of the task that handles `item` (seen in task dumps)."""

    def wake_in(self, seconds: float | None) -> float:
        """The sleep for `seconds_to_next`: until the soonest item (`seconds` from now by the database's
        clock, a moment later so that it is due when the loop claims; None when there is none) or the next
        prune, whichever comes first."""
        until_prune = max(0.0, self._next_prune - time.monotonic())
        if seconds is None:
            return until_prune
        return min(until_prune, max(0.0, seconds) + _WAKE_MARGIN_SECONDS)

    @contextlib.asynccontextmanager
    async def claiming(self) -> AsyncIterator[None]:
        """The loop and its listener, while the block runs; on the way out the loop stops and the items
        under way are cancelled (their leases lapse, and another process, or this one's next start, takes
        them again)."""
        await self._wakeups.start()
        loop = asyncio.create_task(self._loop(), name=self._slug)
        try:
            yield
        finally:
            for task in (loop, *self._in_flight):
                task.cancel()
            await asyncio.gather(loop, *self._in_flight, return_exceptions=True)
            await self._wakeups.stop()

    async def _loop(self) -> None:
        delay: float | None
        while True:
            self._wake.clear()
            try:
                await self._prune_when_due()
                claimed = await self.claim(self._max_in_flight - len(self._in_flight))
                for item in claimed:
                    task = asyncio.create_task(self.handle(item), name=self.task_name(item))
                    self._in_flight.add(task)
                    task.add_done_callback(self._done)
                delay = await self.seconds_to_next()
                if len(self._in_flight) >= self._max_in_flight:
                    delay = None  # (woken when an item is done and frees a place)
                elif not claimed and delay < _BUSY_SECONDS:
                    delay = _BUSY_SECONDS  # (due, but another process holds it for a moment)
                self._loss.connected()
            except (psycopg.Error, OSError) as exc:
                delay = self._loss.lost(exc)
            except Exception:  # a bug must not stop this process's work for good
                self._log.exception(
                    "%s: unexpected error; trying again in %g s", self._name, _AFTER_ERROR_SECONDS
                )
                delay = _AFTER_ERROR_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()  # (a place is free, and the item may be due again already)
        if not task.cancelled() and task.exception() is not None:  # (`handle` records its item's failures)
            self._log.error(
                "%s: %s failed unexpectedly", self._name, task.get_name(), exc_info=task.exception()
            )

    async def _prune_when_due(self) -> None:
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + self._prune_seconds
        await self.prune()
