"""Scheduled backups: the cron fires of `system.database_config`, each taken by exactly one server process.

A fire is claimed as schedules' runs are (`db/claim_loop.py`): the one config row is locked with `FOR UPDATE
SKIP LOCKED` while it is due, and its `backup_next_at` moved to the next fire in the same transaction, so a
second process finds nothing due. The claiming process makes the backup (the work lock still keeps it to one
at a time) and then prunes what retention let expire. A fire that finds a backup or a restore under way is
tried again a minute later rather than lost. Pruning also runs every hour, so a shortened retention takes
effect without waiting for the next fire.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime

from kilnbase.database_backups.definitions import next_fire
from kilnbase.database_backups.service import CHANNEL, DatabaseBackups
from kilnbase.db.claim_loop import ClaimLoop
from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import SYSTEM

log = logging.getLogger("kilnbase.database_backups")

_PRUNE_SECONDS = 3600.0
#: How soon a fire that found the work lock taken is tried again.
_BUSY_RETRY = "interval '1 minute'"


class ScheduledBackups(ClaimLoop[datetime]):
    def __init__(self, backups: DatabaseBackups) -> None:
        super().__init__(
            name="database-backups",
            channel=CHANNEL,
            conninfo=str(backups.database.owner_pool.conninfo),
            max_in_flight=1,
            prune_seconds=_PRUNE_SECONDS,
            log=log,
        )
        self.backups = backups

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.claiming():
            yield

    async def claim(self, most: int) -> list[datetime]:
        if most <= 0:
            return []
        async with self.backups.database.as_owner() as cur:
            await cur.execute(
                "select backup_cron_schedule as cron, backup_next_at as due, now() as now "
                "from system.database_config where backup_enabled and backup_next_at <= now() "
                "for update skip locked"
            )
            row = await cur.fetchone()
            if row is None:
                return []
            await cur.execute(
                "update system.database_config set backup_next_at = %s", (next_fire(row["cron"], row["now"]),)
            )
        return [row["due"]]

    async def handle(self, item: datetime) -> None:
        try:
            _backup, done = await self.backups.start(SYSTEM, None, "scheduled")
        except ApiError:  # (a backup or a restore under way: this fire waits a minute)
            async with self.backups.database.as_owner() as cur:
                await cur.execute(
                    "update system.database_config "
                    f"set backup_next_at = least(backup_next_at, now() + {_BUSY_RETRY}) where backup_enabled"
                )
            return
        await done
        await self.backups.prune_expired()

    async def seconds_to_next(self) -> float:
        async with self.backups.database.as_owner() as cur:
            await cur.execute(
                "select extract(epoch from backup_next_at - now())::float8 as seconds "
                "from system.database_config where backup_enabled and backup_next_at is not null"
            )
            row = await cur.fetchone()
        return self.wake_in(row["seconds"] if row is not None else None)

    async def prune(self) -> int:
        return await self.backups.prune_expired()

    def task_name(self, item: datetime) -> str:
        return f"kilnbase-scheduled-backup-{item:%Y%m%dT%H%M}"
