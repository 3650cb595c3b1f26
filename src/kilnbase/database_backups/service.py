"""Backups of the project's database as InsForge's `/api/database/backups` offers them: made in the background
(`running`, then `completed` with its size or `failed` with why), renamed, deleted with their file, restored
in place, and made on a cron schedule whose old backups retention deletes.

One backup or restore at a time across every server process (granian runs several): the work holds a
session-level advisory lock on a connection of its own for as long as it runs, so the lock goes with a
process that dies, and a row left `running` without it was interrupted (shown `failed`, as InsForge shows
it). A restore and a delete are an agent's only with a person's approval (`tools.py`: the MCP tools and the
REST approval gate hold them); the service refuses an agent's call that no one approved, whatever the path.
Every change is audited; a restore's outcome too, failed or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import psycopg
from psycopg import AsyncConnection

from kilnbase import audit
from kilnbase.database_backups import definitions
from kilnbase.database_backups.files import BackupFileFailed, BackupFileRefused, BackupFiles
from kilnbase.db.schema_cache import SchemaCache
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError, require_admin_actor
from kilnbase.identity.actor import Actor

log = logging.getLogger("kilnbase.database_backups")

MODULE = "DATABASE"
#: Wakes the schedulers of every process when the schedule changes.
CHANNEL = "kilnbase_database_backups"
#: The advisory lock a backup or a restore holds while it runs (session-level, on its own connection).
_WORK_LOCK = "hashtext('kilnbase.database_backups')"
#: Whether some process holds the work lock, read from `pg_locks` (a one-key advisory lock is its two halves,
#: `classid` and `objid`, with `objsubid` 1) rather than by taking it: taking it, even for the moment of a
#: statement, made a backup or restore that started in that moment find it held and answer 409, and made a
#: scheduled fire wait a minute, whenever someone listed or deleted backups.
_WORK_LOCK_HELD = (
    "exists (select from pg_catalog.pg_locks l "
    "where l.locktype = 'advisory' and l.granted and l.objsubid = 1 "
    "and l.database = (select oid from pg_catalog.pg_database where datname = current_database()) "
    f"and ((l.classid::int8 << 32) | l.objid::int8) = ({_WORK_LOCK})::int8)"
)
#: The advisory lock (two keys: this, and the backup id's hash) a restore holds on the backup it restores
#: from, on its work connection: a delete or the retention's prune of that backup takes it for its
#: transaction first, so it is refused while the restore runs, and a restore that starts during a delete
#: waits for it and then finds the backup gone.
_HOLD_KEY = "hashtext('kilnbase.database_backups.restore')"
_INTERRUPTED = "Interrupted by a server restart."
#: The most of an error kept on a failed backup's row.
_ERROR_LIMIT = 4000
_COLUMNS = """
    id::text, name, trigger_source as "triggerSource", status, size_bytes::float8 as "sizeBytes",
    error_message as "errorMessage", created_at as "createdAt", completed_at as "completedAt",
    created_by as "createdBy"
"""
_EXPIRES = """
    case when trigger_source = 'scheduled' and status <> 'running' then
        created_at + make_interval(days => (select backup_retention_days from system.database_config))
    end as "expiresAt"
"""
_CONFIG = """
    select backup_enabled as enabled, backup_cron_schedule as "cronSchedule",
           backup_retention_days as "retentionDays" from system.database_config
"""
_RETRY = "Try again once it finishes."


def _conflict(message: str, next_actions: str = _RETRY) -> ApiError:
    return ApiError(409, "DATABASE_CONSTRAINT_VIOLATION", message, next_actions)


def _not_found() -> ApiError:
    return ApiError(404, "DATABASE_NOT_FOUND", "Backup not found.", "List them: GET /api/database/backups.")


def _duplicate() -> ApiError:
    return ApiError(409, "DATABASE_DUPLICATE", "A backup with this name already exists.", "Rename it.")


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value is not None else None


def _backup(row: dict[str, Any]) -> dict[str, Any]:
    shaped = dict(row)
    for field in ("createdAt", "completedAt", "expiresAt"):
        if field in shaped:
            shaped[field] = _iso(shaped[field])
    return shaped


def _agent_needs_approval(actor: Actor, what: str) -> None:
    """Restoring and deleting lose data: an agent key does them only as a call a person approved."""
    if actor.is_unapproved_agent:
        raise ApiError(
            403,
            "FORBIDDEN",
            f"An agent key may {what} a backup only with a person's approval.",
            f"Call the {what}-database-backup tool (or this route): the call waits for an admin's approval.",
        )


def _agent_may_not_shorten(actor: Actor, current: int | None, wanted: int | None) -> None:
    """A shorter retention deletes the scheduled backups it lets expire, so an agent key may not set one on
    its own: deleting a backup waits for a person's approval, and retention must not be the way around it."""
    shorter = wanted is not None and (current is None or wanted < current)
    if shorter and actor.is_unapproved_agent:
        raise ApiError(
            403,
            "FORBIDDEN",
            "An agent key may not shorten the retention of scheduled backups: it would delete backups, "
            "which needs a person's approval.",
            "Leave retentionDays out (or lengthen it), or ask an admin to change it.",
        )


#: Scheduled backups an agent key may set up on its own in a week: a daily schedule's.
_AGENT_WEEKLY_FIRES = 7


def _agent_may_not_make_more_frequent(
    actor: Actor, current: dict[str, Any], enabled: bool, cron: str
) -> None:
    """An agent key keeps at most `KILNBASE_BACKUPS_AGENT_MAX` manual backups, since each is a full copy of
    the database, and the schedule must not be the way around it: on its own it may not make scheduled
    backups fire more often than they do, nor than once a day (an hourly schedule kept forever would fill
    the disk). Keeping the admin's schedule, switching it off or making it rarer needs no one."""
    if not actor.is_unapproved_agent:
        return
    now = datetime.now(UTC)
    wanted = definitions.fires_in_a_week(enabled, cron, now)
    allowed = max(
        definitions.fires_in_a_week(current["enabled"], current["cronSchedule"], now), _AGENT_WEEKLY_FIRES
    )
    if wanted > allowed:
        raise ApiError(
            403,
            "FORBIDDEN",
            f"An agent key may not make scheduled backups run more often on its own: this schedule makes "
            f"{wanted} a week, and each is a full copy of the database.",
            "Keep the current schedule or a daily one (or rarer), or ask an admin to change it.",
        )


class DatabaseBackups:
    def __init__(
        self, database: Database, files: BackupFiles, schema_cache: SchemaCache, agent_max: int = 10
    ) -> None:
        self.database = database
        #: The most backups (running or completed) one agent key keeps: `KILNBASE_BACKUPS_AGENT_MAX`.
        self.agent_max = agent_max
        self.files = files
        self.schema_cache = schema_cache
        self._conninfo = str(database.owner_pool.conninfo)
        #: The backups this process is making (kept referenced until done).
        self._running: set[asyncio.Future[None]] = set()

    async def list(self, actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        async with self.database.as_owner() as cur:
            await self._fail_interrupted(cur)
            await cur.execute(
                f"select {_COLUMNS}, {_EXPIRES} from system.database_backups order by created_at desc, id"
            )
            return {"backups": [_backup(row) for row in await cur.fetchall()]}

    async def create(self, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
        require_admin_actor(actor)
        backup, _done = await self.start(actor, definitions.name_of(body, nullable=False), "manual")
        return backup

    async def start(
        self, actor: Actor, name: str | None, trigger: str
    ) -> tuple[dict[str, Any], asyncio.Task[None]]:
        """Insert the `running` row and start the backup in this process; the row, and the task that ends
        when the row says how it went."""
        conn = await self._work_lock(for_restore=False)
        try:
            async with self.database.as_owner() as cur:
                if trigger == "manual" and actor.principal.agent is not None:
                    await self._refuse_past_agent_max(cur, actor)
                try:
                    await cur.execute(
                        "insert into system.database_backups (name, trigger_source, created_by) "
                        f"values (%s, %s, %s) returning {_COLUMNS}",
                        (name, trigger, None if trigger == "scheduled" else actor.name),
                    )
                except psycopg.errors.UniqueViolation:
                    raise _duplicate() from None
                row = await cur.fetchone()
                assert row is not None
                details = {"id": row["id"], "name": name, "triggerSource": trigger}
                await audit.record(cur, actor, "CREATE_DATABASE_BACKUP", MODULE, details)
        except BaseException:
            await conn.close()
            raise
        task = asyncio.create_task(self._make(row["id"], conn), name=f"kilnbase-backup-{row['id']}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return _backup(row), task

    async def _refuse_past_agent_max(self, cur: psycopg.AsyncCursor[Any], actor: Actor) -> None:
        """An agent key makes backups without a person (a full copy of the database each) and deletes them
        only with one: it keeps at most `agent_max`. Counted under the work lock, so two calls cannot both
        pass."""
        await cur.execute(
            "select count(*) as n from system.database_backups "
            "where trigger_source = 'manual' and status <> 'failed' and created_by = %s",
            (actor.name,),
        )
        kept = await cur.fetchone()
        if kept is None or kept["n"] < self.agent_max:
            return
        async with audit.refusals(
            self.database, actor, "CREATE_DATABASE_BACKUP", MODULE, {"kept": kept["n"]}
        ):
            raise ApiError(
                403,
                "FORBIDDEN",
                f"This agent key already keeps {kept['n']} backups, the most it may "
                f"(KILNBASE_BACKUPS_AGENT_MAX={self.agent_max}).",
                "Ask for old backups to be deleted (delete-database-backup waits for a person's approval), "
                "or go on without a new one.",
            )

    async def _make(self, backup_id: str, conn: AsyncConnection[Any]) -> None:
        key = f"kilnbase-backup-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{backup_id[:8]}.tar"
        path = self.files.folder / key
        try:
            size = await anyio.to_thread.run_sync(self.files.write, path)
        except Exception as exc:  # (any failure is the row's to tell: pg_dump's, the disk's)
            log.warning("database backup %s failed: %s", backup_id, type(exc).__name__)
            await self._finish(backup_id, "status = 'failed', error_message = %s", str(exc)[:_ERROR_LIMIT])
        else:
            await self._finish(
                backup_id,
                "status = 'completed', storage_key = %s, size_bytes = %s, completed_at = now()",
                key,
                size,
            )
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def _finish(self, backup_id: str, assignments: str, *params: Any) -> None:
        async with self.database.as_owner() as cur:
            await cur.execute(
                f"update system.database_backups set {assignments}, updated_at = now() where id = %s",
                (*params, backup_id),
            )

    async def rename(self, actor: Actor, backup_id: str, body: dict[str, Any]) -> dict[str, Any]:
        require_admin_actor(actor)
        name = definitions.name_of(body, nullable=True)
        async with self.database.as_owner() as cur:
            try:
                await cur.execute(
                    "update system.database_backups set name = %s, updated_at = now() where id = %s "
                    f"returning {_COLUMNS}",
                    (name, definitions.backup_id(backup_id)),
                )
            except psycopg.errors.UniqueViolation:
                raise _duplicate() from None
            row = await cur.fetchone()
            if row is None:
                raise _not_found()
            await audit.record(cur, actor, "RENAME_DATABASE_BACKUP", MODULE, {"id": row["id"], "name": name})
        return _backup(row)

    async def delete(self, actor: Actor, backup_id: str) -> None:
        require_admin_actor(actor)
        backup_id = definitions.backup_id(backup_id)
        _agent_needs_approval(actor, "delete")
        async with self.database.as_owner() as cur:
            await cur.execute(
                f"select status, storage_key, {_WORK_LOCK_HELD} as busy, "
                f"not pg_try_advisory_xact_lock({_HOLD_KEY}, hashtext(id::text)) as restoring "
                "from system.database_backups where id = %s for update",
                (backup_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise _not_found()
            if row["status"] == "running" and row["busy"]:
                raise _conflict("This backup is still running and cannot be deleted yet.")
            if row["restoring"]:
                raise _conflict("This backup is being restored and cannot be deleted yet.")
            await cur.execute("delete from system.database_backups where id = %s", (backup_id,))
            await audit.record(cur, actor, "DELETE_DATABASE_BACKUP", MODULE, {"id": backup_id})
        if row["storage_key"]:
            (self.files.folder / row["storage_key"]).unlink(missing_ok=True)

    async def restore(self, actor: Actor, backup_id: str) -> None:
        require_admin_actor(actor)
        backup_id = definitions.backup_id(backup_id)
        _agent_needs_approval(actor, "restore")
        async with self.database.as_owner() as cur:
            await cur.execute(
                "select status, storage_key from system.database_backups where id = %s", (backup_id,)
            )
            row = await cur.fetchone()
        if row is None:
            raise _not_found()
        path = self.files.folder / (row["storage_key"] or "")
        if row["status"] != "completed" or not row["storage_key"] or not path.is_file():
            raise _conflict(
                "This backup is not restorable. Only completed backups can be restored.",
                "Restore a backup whose status is completed (GET /api/database/backups).",
            )
        conn = await self._work_lock(for_restore=True)
        try:
            await self._hold(conn, actor, backup_id)
        except BaseException:
            await conn.close()
            raise
        # Shielded: a client that leaves (or a proxy's timeout) cancels the request, but the restore's
        # thread runs on to its commit or rollback whatever happens here, and its outcome must still be
        # audited and the lock held until then.
        work = asyncio.ensure_future(self._restore_holding(conn, actor, backup_id, path))
        self._running.add(work)
        work.add_done_callback(self._settled)
        await asyncio.shield(work)

    async def _hold(self, conn: AsyncConnection[Any], actor: Actor, backup_id: str) -> None:
        """Hold the backup for the restore (`_HOLD_KEY`), on `conn`, and check again that it is there: a
        delete under way when the check above ran has been waited for. Its absence is an audited refusal."""
        await conn.execute(f"select pg_advisory_lock({_HOLD_KEY}, hashtext(%s))", (backup_id,))
        cur = await conn.execute(
            "select status, storage_key from system.database_backups where id = %s", (backup_id,)
        )
        row = await cur.fetchone()
        async with audit.refusals(self.database, actor, "RESTORE_DATABASE_BACKUP", MODULE, {"id": backup_id}):
            if row is None:
                raise _not_found()
            if row[0] != "completed" or not row[1] or not (self.files.folder / row[1]).is_file():
                raise _conflict(
                    "This backup is not restorable. Only completed backups can be restored.",
                    "Restore a backup whose status is completed (GET /api/database/backups).",
                )

    def _settled(self, work: asyncio.Future[None]) -> None:
        """A restore's task ended. When its caller left, no one awaits it: its refusal or failure is already
        audited, and taking it here keeps asyncio from logging it as an exception never retrieved."""
        self._running.discard(work)
        if not work.cancelled():
            work.exception()

    async def _restore_holding(
        self, conn: AsyncConnection[Any], actor: Actor, backup_id: str, path: Path
    ) -> None:
        """The restore itself, while `conn` holds the work lock (released at the end, however it ends)."""
        try:
            await anyio.to_thread.run_sync(self.files.restore, path)
        except (BackupFileRefused, BackupFileFailed) as exc:
            outcome: audit.Outcome = "refused" if isinstance(exc, BackupFileRefused) else "failed"
            details = {"id": backup_id, "error": str(exc)[:_ERROR_LIMIT]}
            await audit.record(
                self.database, actor, "RESTORE_DATABASE_BACKUP", MODULE, details, outcome=outcome
            )
            status = 409 if isinstance(exc, BackupFileRefused) else 500
            code = "DATABASE_CONSTRAINT_VIOLATION" if status == 409 else "DATABASE_INTERNAL_ERROR"
            raise ApiError(status, code, str(exc), "Nothing changed: the database is as it was.") from None
        except Exception as exc:  # (the disk, the database gone away: audited too, never a bare 500)
            log.warning("database restore from backup %s failed: %s", backup_id, type(exc).__name__)
            details = {"id": backup_id, "error": type(exc).__name__}
            await audit.record(
                self.database, actor, "RESTORE_DATABASE_BACKUP", MODULE, details, outcome="failed"
            )
            raise ApiError(
                500,
                "DATABASE_INTERNAL_ERROR",
                "The restore could not be carried out.",
                "See the server's log, then try again.",
            ) from None
        finally:
            # (Unlocked before closing: a closed session's locks go only once its backend has exited.)
            with contextlib.suppress(psycopg.Error):
                await conn.execute("select pg_advisory_unlock_all()")
            with contextlib.suppress(psycopg.Error):
                await conn.close()
        await audit.record(self.database, actor, "RESTORE_DATABASE_BACKUP", MODULE, {"id": backup_id})
        await self.schema_cache.reload()  # (the other processes reload on the restore's notification)

    async def config(self, actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        async with self.database.as_owner() as cur:
            await cur.execute(_CONFIG)
            row = await cur.fetchone()
        assert row is not None  # (the migration inserts the one row)
        return _config(row)

    async def update_config(
        self, actor: Actor, body: dict[str, Any], action: str = "UPDATE_DATABASE_BACKUP_CONFIG"
    ) -> dict[str, Any]:
        """Change the schedule; `action` names the audit entry (`/api/database/config` records its own)."""
        require_admin_actor(actor)
        patch = definitions.config_patch(body)
        async with self.database.as_owner() as cur:
            await cur.execute(_CONFIG + " for update")
            current = await cur.fetchone()
            assert current is not None
            enabled = current["enabled"] if patch.enabled is None else patch.enabled
            cron = patch.cron_schedule or current["cronSchedule"]
            retention = patch.retention_days if patch.retention_given else current["retentionDays"]
            wanted = {"enabled": enabled, "cronSchedule": cron, "retentionDays": retention}
            async with audit.refusals(self.database, actor, action, MODULE, wanted):
                _agent_may_not_shorten(actor, current["retentionDays"], retention)
                _agent_may_not_make_more_frequent(actor, current, enabled, cron)
            moved = enabled != current["enabled"] or cron != current["cronSchedule"]
            await cur.execute(
                "update system.database_config set backup_enabled = %s, backup_cron_schedule = %s, "
                "backup_retention_days = %s, updated_at = now(), "
                "backup_next_at = case when %s then %s else backup_next_at end",
                (enabled, cron, retention, moved, _next_at(enabled, cron)),
            )
            await cur.execute("select pg_notify(%s, '')", (CHANNEL,))
            result = {"enabled": enabled, "cronSchedule": cron, "retentionDays": retention}
            await audit.record(cur, actor, action, MODULE, result)
        return _config(result)

    async def prune_expired(self) -> int:
        """Delete the scheduled backups older than the retention (never a manual one), then their files."""
        async with self.database.as_owner() as cur:
            await cur.execute(
                "delete from system.database_backups b using system.database_config c "
                "where b.trigger_source = 'scheduled' and b.status <> 'running' "
                "and c.backup_retention_days is not null "
                "and b.created_at < now() - make_interval(days => c.backup_retention_days) "
                f"and pg_try_advisory_xact_lock({_HOLD_KEY}, hashtext(b.id::text)) "  # (none being restored)
                "returning b.id::text, b.storage_key"
            )
            pruned = await cur.fetchall()
        for row in pruned:
            if row["storage_key"]:
                (self.files.folder / row["storage_key"]).unlink(missing_ok=True)
        return len(pruned)

    async def _fail_interrupted(self, cur: psycopg.AsyncCursor[Any]) -> None:
        """Rows `running` while no process holds the work lock: their process stopped midway."""
        await cur.execute(
            "update system.database_backups set status = 'failed', error_message = %s, updated_at = now() "
            f"where status = 'running' and not {_WORK_LOCK_HELD}",
            (_INTERRUPTED,),
        )

    async def _work_lock(self, *, for_restore: bool) -> AsyncConnection[Any]:
        """A connection holding the work lock, or 409 saying what holds it."""
        conn = await AsyncConnection.connect(self._conninfo, autocommit=True)
        try:
            cur = await conn.execute(
                f"select pg_try_advisory_lock({_WORK_LOCK}), "
                "exists (select from system.database_backups where status = 'running')"
            )
            row = await cur.fetchone()
            assert row is not None
            if row[0]:
                return conn
        except BaseException:
            await conn.close()
            raise
        await conn.close()
        backup_running = row[1]
        if for_restore:
            raise _conflict(
                "A backup is currently running. Try again once it finishes."
                if backup_running
                else "Another restore is already in progress."
            )
        raise _conflict(
            "Another backup is already running. Try again once it finishes."
            if backup_running
            else "A restore is currently in progress. Try again once it finishes."
        )


def _next_at(enabled: bool, cron: str) -> datetime | None:
    return definitions.next_fire(cron, datetime.now(UTC)) if enabled else None


def _config(row: dict[str, Any]) -> dict[str, Any]:
    next_at = _next_at(row["enabled"], row["cronSchedule"])
    return {**row, "nextBackupAt": _iso(next_at)}
