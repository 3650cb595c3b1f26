"""Clean-up that each server process repeats on its own clock (expired sessions, expired key-value
entries): the first round a while after start, off the busy start of a process, then one every so often,
until the server stops. Each process runs it, since deleting what another process deleted is harmless.

A round under way finishes before the server stops (not cancelled: a query cancelled midway can leave its
pooled connection waiting on the server); the wait between rounds ends at once. A round that fails on the
database is logged and tried again at the next one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg


@contextlib.asynccontextmanager
async def repeating(
    prune: Callable[[], Awaitable[int]], *, first: float, every: float, what: str, log: logging.Logger
) -> AsyncIterator[None]:
    """Run `prune` (which answers how many rows it deleted: `what`, for the log) while the block runs."""
    stopping = asyncio.Event()
    task = asyncio.create_task(_until(stopping, prune, first, every, what, log))
    try:
        yield
    finally:
        stopping.set()
        await task


async def _until(
    stopping: asyncio.Event,
    prune: Callable[[], Awaitable[int]],
    first: float,
    every: float,
    what: str,
    log: logging.Logger,
) -> None:
    wait = first
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), wait)
        if stopping.is_set():
            return
        wait = every
        try:
            pruned = await prune()
        except psycopg.Error as exc:
            log.warning("could not prune %s: %s", what, type(exc).__name__)
            continue
        if pruned:
            log.info("pruned %d %s", pruned, what)
