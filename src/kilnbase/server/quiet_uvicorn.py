"""uvicorn's server, woken by what it has to do rather than ten times a second.

`uvicorn.Server.main_loop` (0.54) sleeps 0.1 s between calls of `on_tick`, which has three duties: refresh the
`Date` header every response carries (every tenth tick, so once a second), notice `should_exit` (set by its
SIGINT and SIGTERM handler), and stop after `limit_max_requests`. Those ten wakeups a second were more than
half of what an idle Kilnbase woke up for. Here the same `on_tick` runs (every call a once-a-second one):

- while a connection is open, just after each turn of the wall-clock second, so the `Date` header is that
  second's (uvicorn's own lags up to a second) and the request limit is looked at once a second;
- with no connection open, nobody is sent a `Date`: the loop sleeps until the first connection opens, which
  refreshes the header before its request is read, and wakes the loop;
- setting `should_exit` (the signal handler, or a caller) wakes the loop at once, so stopping starts as
  soon as it did before.

Not for uvicorn's supervisors (`callback_notify`, which needs the ticks): Kilnbase sets none.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import uvicorn

#: How long after the turn of a second the `Date` header is made (a timer may fire a little early).
_AFTER_THE_SECOND = 0.005


class _Connections(set[Any]):
    """uvicorn's set of open connections (each protocol adds itself when made), telling when the first one
    opens."""

    def __init__(self, first_opened: Callable[[], None]) -> None:
        super().__init__()
        self._first_opened = first_opened

    def add(self, connection: Any) -> None:
        if not self:
            self._first_opened()
        super().add(connection)


class QuietServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        self._should_exit = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        super().__init__(config)
        self.server_state.connections = _Connections(self._first_connection)

    @property  # (uvicorn's plain attribute, with a setter that wakes the loop)
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        if value:
            self._wake_up()

    def _wake_up(self) -> None:
        """Wake `main_loop` (from a signal handler or another thread too)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # (the loop has closed)
                loop.call_soon_threadsafe(wake.set)

    def _first_connection(self) -> None:
        """After a while with no connection the `Date` header is old: made again before the new connection's
        request is read, then kept fresh by the loop, woken here."""
        date = [(b"date", formatdate(time.time(), usegmt=True).encode())] if self.config.date_header else []
        self.server_state.default_headers = date + self.config.encoded_headers
        if self._wake is not None:
            self._wake.set()

    async def main_loop(self) -> None:
        if self.config.callback_notify is not None:
            await super().main_loop()
            return
        self._loop = asyncio.get_running_loop()
        self._wake = wake = asyncio.Event()
        while True:
            wake.clear()  # (before `should_exit` is looked at: setting it from now on wakes the wait below)
            if await self.on_tick(0):  # (0: a tick that makes the `Date` header)
                return
            timeout = None
            if self.server_state.connections:
                timeout = 1.0 - time.time() % 1.0 + _AFTER_THE_SECOND
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
